#include "engine/log.h"

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pgflow {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> g_json{false};
std::mutex g_pipeline_mu;
std::string g_pipeline;  // guarded by g_pipeline_mu
thread_local std::string t_component;

const char* LevelTag(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO ";
    case LogLevel::kWarning:
      return "WARN ";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?    ";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

void SetLogFormat(LogFormat format) { g_json.store(format == LogFormat::kJson); }

LogFormat GetLogFormat() { return g_json.load() ? LogFormat::kJson : LogFormat::kText; }

bool ParseLogFormat(std::string_view name, LogFormat* format) {
  if (name == "text") {
    *format = LogFormat::kText;
  } else if (name == "json") {
    *format = LogFormat::kJson;
  } else {
    return false;
  }
  return true;
}

void SetLogPipeline(std::string pipeline) {
  std::lock_guard<std::mutex> lock(g_pipeline_mu);
  g_pipeline = std::move(pipeline);
}

void SetLogComponent(std::string component) { t_component = std::move(component); }

bool ParseLogLevel(std::string_view name, LogLevel* level) {
  if (name == "debug")
    *level = LogLevel::kDebug;
  else if (name == "info")
    *level = LogLevel::kInfo;
  else if (name == "warn" || name == "warning")
    *level = LogLevel::kWarning;
  else if (name == "error")
    *level = LogLevel::kError;
  else
    return false;
  return true;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

namespace {

std::mutex g_terminal_mu;
size_t g_live_lines = 0;  // guarded by g_terminal_mu: lines of the live display on screen

void WriteAll(const std::string& text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Moves to the first line of the live display and clears it and everything below.
std::string EraseLive() {
  if (g_live_lines == 0) return "";
  std::string out = "\r";
  if (g_live_lines > 1) out += "\033[" + std::to_string(g_live_lines - 1) + "A";
  return out + "\033[J";
}

}  // namespace

void DrawLive(const std::vector<std::string>& lines) {
  std::lock_guard<std::mutex> lock(g_terminal_mu);
  if (lines.empty()) {
    if (g_live_lines > 0) WriteAll("\n");
    g_live_lines = 0;
    return;
  }
  std::string out = EraseLive();
  for (size_t i = 0; i < lines.size(); ++i) {
    out += lines[i];
    if (i + 1 < lines.size()) out += '\n';
  }
  WriteAll(out);
  g_live_lines = lines.size();
}

void ClearLive() {
  std::lock_guard<std::mutex> lock(g_terminal_mu);
  WriteAll(EraseLive());
  g_live_lines = 0;
}

namespace {

std::string JsonLine(LogLevel level, std::string_view message) {
  static constexpr const char* kLevels[] = {"debug", "info", "warn", "error"};
  nlohmann::ordered_json j;
  j["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  j["level"] = kLevels[static_cast<int>(level)];
  {
    std::lock_guard<std::mutex> lock(g_pipeline_mu);
    if (!g_pipeline.empty()) j["pipeline"] = g_pipeline;
  }
  if (!t_component.empty()) j["component"] = t_component;
  j["message"] = message;
  // Bytes that are not UTF-8 (a value quoted from a row) are replaced rather than refused.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

void LogLine(LogLevel level, std::string_view message) {
  if (g_json.load(std::memory_order_relaxed)) {
    std::string line = JsonLine(level, message);
    std::lock_guard<std::mutex> lock(g_terminal_mu);
    WriteAll(EraseLive() + line);
    g_live_lines = 0;
    return;
  }
  std::string line = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ ", absl::Now(), absl::UTCTimeZone());
  line.reserve(line.size() + message.size() + 8);
  line += LevelTag(level);
  line += ' ';
  line += message;
  line += '\n';
  std::lock_guard<std::mutex> lock(g_terminal_mu);
  WriteAll(EraseLive() + line);
  g_live_lines = 0;
}

}  // namespace pgflow
