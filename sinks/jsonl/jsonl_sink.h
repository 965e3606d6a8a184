#pragma once

// The `jsonl` sink: one JSON object per change event, one per line, to a file or stdout.
//
//   {"op":"update","schema":"public","table":"items","lsn":"0/1A2B3C8","xid":745,
//    "commit_ts":"2026-11-22T10:43:00.123456Z","seq":3,"after":{"id":1,"name":"pen"},
//    "before":{"id":1},"unchanged_toast":["notes"]}
//
// `lsn` is the commit LSN of the change's transaction and (`lsn`, `seq`) its event id: after a
// crash, changes after the last acknowledgement may be written again, and this pair tells
// them apart. A column whose TOASTed value was not sent is absent from `after` and listed in
// `unchanged_toast`. Durable means written and fsynced (a file) or written (stdout, a pipe).
// The lines of a transaction cut off by a lost connection are removed from a file (it will
// be sent again in full); on a pipe they stay, and appear twice.

#include <memory>
#include <optional>
#include <string>

#include "engine/registry.h"
#include "engine/transactional_sink.h"
#include "schemas/json_encoding.h"

namespace pgflow {

struct JsonlSinkOptions : SinkOptions {
  std::string path;  // "-" is stdout
  bool fsync = true;
  JsonOptions json;
};

// Formats one change as a jsonl line, newline included, appended to *out. `pipeline` is not
// written; the line holds only the change itself. Exposed for tests and benchmarks.
void AppendJsonlLine(const Change& change, const JsonOptions& options, std::string* out);

class JsonlSink : public TransactionalSink {
 public:
  explicit JsonlSink(std::shared_ptr<const JsonlSinkOptions> options);
  ~JsonlSink() override;

  absl::Status Open() override;
  absl::Status Flush() override;
  absl::Status Close() override;
  bool WritesToStdout() const override { return options_->path == "-"; }

 protected:
  absl::Status OnBegin(const TxnInfo& txn) override;
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  // Takes back the lines of a transaction cut off by a lost connection.
  absl::Status OnRollback() override;

 private:
  absl::Status WriteBuffer();

  std::shared_ptr<const JsonlSinkOptions> options_;
  int fd_ = -1;
  bool is_regular_file_ = false;
  uint64_t written_bytes_ = 0;         // size of the file (bytes written to fd_), buffer_ excluded
  std::optional<uint64_t> txn_start_;  // offset of the open transaction's first line
  std::string buffer_;
};

// Registers the "jsonl" sink type with the engine's factory registry.
void RegisterJsonlSink();

}  // namespace pgflow
