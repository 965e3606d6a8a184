#include "sinks/kv/memcached_session.h"

#include <unistd.h>

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "sinks/kv/session_util.h"

namespace pgflow {
namespace {

using kv_session::Absl;
using kv_session::Compact;
using kv_session::ParseInt;

bool ValidMemcachedKey(std::string_view key) {
  if (key.empty() || key.size() > 250) return false;
  for (char c : key) {
    if (static_cast<unsigned char>(c) <= 32 || c == 127) return false;
  }
  return true;
}

// Splits `line` at spaces into *out (cleared first).
void SplitTokens(std::string_view line, std::vector<std::string_view>* out) {
  out->clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ') ++i;
    if (i > start) out->push_back(line.substr(start, i - start));
  }
}

}  // namespace

SessionStep MemcachedSession::Feed(std::string_view data, std::string* out) {
  in_.append(data);
  more_ = false;
  SessionStep step;
  const size_t max_line = std::min<size_t>(service_->config().max_request_bytes, 64 * 1024);
  while (in_pos_ < in_.size()) {
    if (skip_ > 0) {
      size_t n = std::min(skip_, in_.size() - in_pos_);
      skip_ -= n;
      in_pos_ += n;
      continue;
    }
    size_t nl = in_.find('\n', in_pos_);
    if (nl == std::string::npos) {
      if (in_.size() - in_pos_ > max_line) {
        out->append("CLIENT_ERROR line too long\r\n");
        step.kind = SessionStep::kClose;
        return step;
      }
      break;
    }
    std::string_view line(in_.data() + in_pos_, nl - in_pos_);
    in_pos_ = nl + 1;
    if (line.size() > max_line) {
      out->append("CLIENT_ERROR line too long\r\n");
      step.kind = SessionStep::kClose;
      return step;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    service_->commands.Add(1);
    SplitTokens(line, &tokens_);
    const Tokens& tok = tokens_;
    if (tok.empty()) {
      out->append("ERROR\r\n");
      continue;
    }
    std::string_view cmd = tok[0];
    if (cmd == "get" || cmd == "gets") {
      Get(tok, cmd == "gets", out);
    } else if (cmd == "mg") {
      MetaGet(tok, out);
    } else if (cmd == "mn") {
      out->append("MN\r\n");
    } else if (cmd == "version") {
      absl::StrAppend(out, "VERSION 1.6.18-pgflow-", service_->config().version, "\r\n");
    } else if (cmd == "verbosity") {
      out->append("OK\r\n");
    } else if (cmd == "stats") {
      Stats(tok, out);
    } else if (cmd == "quit") {
      step.kind = SessionStep::kClose;
      return step;
    } else if (cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" ||
               cmd == "prepend" || cmd == "cas" || cmd == "ms") {
      // The data block follows the line: skip it, then refuse.
      size_t bytes_index = cmd == "ms" ? 2 : 4;
      int64_t bytes = -1;
      if (tok.size() <= bytes_index || !ParseInt(tok[bytes_index], &bytes) || bytes < 0 ||
          static_cast<uint64_t>(bytes) > service_->config().max_request_bytes) {
        out->append("CLIENT_ERROR bad data chunk\r\n");
        step.kind = SessionStep::kClose;
        return step;
      }
      skip_ = static_cast<size_t>(bytes) + 2;
      out->append("SERVER_ERROR pgflow's kv cache is read-only: write to PostgreSQL\r\n");
    } else if (cmd == "delete" || cmd == "incr" || cmd == "decr" || cmd == "touch" ||
               cmd == "flush_all" || cmd == "gat" || cmd == "gats" || cmd == "md" || cmd == "ma") {
      out->append("SERVER_ERROR pgflow's kv cache is read-only: write to PostgreSQL\r\n");
    } else {
      out->append("ERROR\r\n");
    }
    if (out->size() > service_->config().max_output_bytes) {
      more_ = in_pos_ < in_.size();  // let the writer drain, then go on
      break;
    }
  }
  Compact(&in_, &in_pos_);
  return step;
}

void MemcachedSession::Get(const Tokens& tok, bool with_cas, std::string* out) {
  KvStore& store = service_->store();
  if (tok.size() < 2) {
    out->append("ERROR\r\n");
    return;
  }
  bool bad = false;
  for (size_t i = 1; i < tok.size(); ++i) bad = bad || !ValidMemcachedKey(tok[i]);
  if (bad) {
    out->append("CLIENT_ERROR bad command line format\r\n");
    return;
  }
  if (!store.ready()) {
    out->append("SERVER_ERROR loading the tables into the cache\r\n");
    return;
  }
  std::span<const std::string_view> keys = std::span(tok).subspan(1);
  store.LookupMany(keys, service_->config().publication, &tables_, &rows_);
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (!rows_[i]) continue;
    absl::StrAppend(out, "VALUE ", Absl(keys[i]), " 0 ", rows_[i]->json_size());
    if (with_cas) absl::StrAppend(out, " ", rows_[i]->lsn().value);
    out->append("\r\n");
    rows_[i]->AppendJson(out);
    out->append("\r\n");
  }
  rows_.clear();
  out->append("END\r\n");
}

void MemcachedSession::MetaGet(const Tokens& tok, std::string* out) {
  KvStore& store = service_->store();
  if (tok.size() < 2 || !ValidMemcachedKey(tok[1])) {
    out->append("CLIENT_ERROR bad command line format\r\n");
    return;
  }
  if (!store.ready()) {
    out->append("SERVER_ERROR loading the tables into the cache\r\n");
    return;
  }
  bool value = false, quiet = false;
  std::string flags;
  KvRowPtr row = store.Lookup(tok[1], service_->config().publication, &tables_);
  bool bad = false;
  for (size_t i = 2; i < tok.size(); ++i) {
    std::string_view f = tok[i];
    switch (f[0]) {
      case 'v':
        value = true;
        break;
      case 'q':
        quiet = true;
        break;
      case 'k':
        absl::StrAppend(&flags, " k", Absl(tok[1]));
        break;
      case 's':
        if (row) absl::StrAppend(&flags, " s", row->json_size());
        break;
      case 'c':
        if (row) absl::StrAppend(&flags, " c", row->lsn().value);
        break;
      case 't':
        absl::StrAppend(&flags, " t-1");
        break;
      case 'f':
        absl::StrAppend(&flags, " f0");
        break;
      case 'O':
        absl::StrAppend(&flags, " ", Absl(f));
        break;
      default:
        bad = true;
    }
  }
  if (bad) {
    out->append("CLIENT_ERROR invalid flag\r\n");
    return;
  }
  if (!row) {
    if (!quiet) out->append("EN\r\n");
    return;
  }
  if (value) {
    absl::StrAppend(out, "VA ", row->json_size(), flags, "\r\n");
    row->AppendJson(out);
    out->append("\r\n");
  } else {
    absl::StrAppend(out, "HD", flags, "\r\n");
  }
}

void MemcachedSession::Stats(const Tokens& tok, std::string* out) {
  KvStore& store = service_->store();
  if (tok.size() == 1) {
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - service_->started);
    absl::StrAppend(
        out, "STAT pid ", getpid(), "\r\nSTAT uptime ", uptime.count(),
        "\r\nSTAT version 1.6.18-pgflow-", service_->config().version, "\r\nSTAT curr_connections ",
        service_->connections.load(), "\r\nSTAT total_connections ",
        service_->total_connections.load(), "\r\nSTAT cmd_get ", service_->commands.Load(),
        "\r\nSTAT curr_items ", store.TotalRows(), "\r\nSTAT bytes ", store.MemoryBytes(),
        "\r\nSTAT limit_maxbytes ", store.max_memory(), "\r\nSTAT pgflow_applied_lsn ",
        store.applied().ToString(), "\r\nSTAT pgflow_ready ", store.ready() ? 1 : 0, "\r\n");
  }
  out->append("END\r\n");
}

}  // namespace pgflow
