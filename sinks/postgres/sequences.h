#pragma once

// The sequences of a pipeline's tables, and their values copied from the source to the target:
// at the end of the initial load, and by `pgflow sequences` before writes switch over (the
// stream carries rows, not sequence advances).

#include <libpq-fe.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/postgres/table_ref.h"

namespace pgflow {

// A sequence of the source and its name in the target, both quoted and qualified.
struct SequencePair {
  std::string source;
  std::string target;
};

// Every sequence that a table of `tables` ("schema.*" allowed) owns (serial and identity
// columns) or calls nextval() of in a column default, each once, in name order; in the target
// under `mapped_schema` (the sink's `schema` option) unless it is empty. `source` is a
// connection from ConnectToSourceCatalog (sinks/postgres/table_definition.h).
absl::StatusOr<std::vector<SequencePair>> ReadTableSequences(PGconn* source,
                                                             const std::vector<TableRef>& tables,
                                                             const std::string& mapped_schema);

struct SequenceCopyResult {
  int copied = 0;
  std::vector<std::string> missing;  // target sequences that do not exist (left alone)
};

// Sets each target sequence to the source's current state (last_value and is_called, with
// setval). A sequence missing from the target is listed in `missing`; any other failure (no
// SELECT privilege on a source sequence, a value out of the target sequence's range) is an
// error naming the sequence.
absl::StatusOr<SequenceCopyResult> CopySequenceValues(PGconn* source, PGconn* target,
                                                      const std::vector<SequencePair>& sequences);

// ReadTableSequences, then CopySequenceValues of what it found.
absl::StatusOr<SequenceCopyResult> CopyTableSequences(PGconn* source, PGconn* target,
                                                      const std::vector<TableRef>& tables,
                                                      const std::string& mapped_schema);

}  // namespace pgflow
