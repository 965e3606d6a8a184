#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pgflow {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Process-wide logging to stderr: "2026-11-22T10:43:00.123Z WARN  <message>", or with
// LogFormat::kJson one JSON object per line:
//   {"ts":"2026-11-22T10:43:00.123Z","level":"warn","pipeline":"orders","component":"sink pg",
//    "message":"..."}
// Thread-safe; each line is written with one write(2) so lines never interleave.
// Messages never carry secrets: connection strings are scrubbed where errors are made
// (common/postgres/conninfo.h), and no option value that is a secret is ever logged.
enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();
bool ParseLogFormat(std::string_view name, LogFormat* format);
// The pipeline every line is about (a process runs one); empty: none.
void SetLogPipeline(std::string pipeline);
// What the calling thread does ("source", "sink pg", "admin"); the JSON lines' `component`.
void SetLogComponent(std::string component);
void SetLogLevel(LogLevel level);
bool ParseLogLevel(std::string_view name, LogLevel* level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view message);

// A live display on a terminal: redraws `lines` in place of the ones drawn before. Log lines
// written meanwhile erase the display first, and it is drawn anew below them next time.
// `lines` empty ends the display (its last drawing stays on screen).
void DrawLive(const std::vector<std::string>& lines);
// Erases the live display, if one is drawn: before a line goes to a stdout on the same terminal.
void ClearLive();

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kInfo)) LogLine(LogLevel::kInfo, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kWarning)) LogLine(LogLevel::kWarning, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kError)) LogLine(LogLevel::kError, absl::StrFormat(format, args...));
}
template <typename... Args>
void LogDebug(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kDebug)) LogLine(LogLevel::kDebug, absl::StrFormat(format, args...));
}

}  // namespace pgflow
