#pragma once

// The dead-letter path: where a sink sets aside an event it cannot deliver for good (a
// document OpenSearch refuses with a 400, a row the PostgreSQL target's constraints refuse)
// instead of stopping the pipeline, when `dead_letter:` is configured beside the sink's type:
//
//   sinks:
//     search:
//       opensearch: {url: "http://127.0.0.1:9200"}
//       dead_letter: {path: /var/lib/pgflow/search.rejected.jsonl}
//     replica:
//       postgres: {url: "postgres://..."}
//       dead_letter: {table: pgflow.dead_letters}     # in the target, in its transaction
//
// Each record holds the event (pgflow's jsonl object of the change, with its table version's
// description, so that `pgflow dlq replay` can type its values again), the sink, the reason and
// its code (an HTTP status, a SQLSTATE), and the position. Record() returns only once the
// record is durable (the file fdatasynced, the row committed): a sink records before it counts
// the event as delivered, so the position is acknowledged only after its record is safe.
//
// Records are idempotent: a second record of the same (pipeline, sink, event id, table, key,
// destination), which a restart that replays the event makes, is not added again (the
// destination tells apart the endpoints of one webhook sink that refused the same event). Ids are never given twice.
//
// Without `dead_letter:` a permanent failure stops the pipeline, naming the event and reason.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/change.h"
#include "engine/options.h"

namespace pgflow {

// `dead_letter:` beside a sink's type: exactly one of `path` and `table`.
struct DeadLetterConfig {
  std::string path;   // a JSON-lines file, one record per line
  std::string table;  // a PostgreSQL table, "schema.name" (created when missing)
  // The database holding `table`. Empty: a postgres sink's own target (the record is then
  // written in the target transaction of the data), else the source's database.
  std::string url;

  bool enabled() const { return !path.empty() || !table.empty(); }
};

const OptionTable<DeadLetterConfig>& DeadLetterTable();

// One event a sink set aside.
struct DeadLetter {
  uint64_t id = 0;  // given by the store: 1, 2, ... in the order recorded
  std::string pipeline;
  std::string sink;
  std::string event_id;  // "0/16B3748:3" (engine/change.h: commit LSN, sequence, part)
  std::string lsn;       // the commit LSN of the event's transaction, X/X
  std::string table;     // the source table, schema.name
  std::string operation;  // read, insert, update, delete, truncate
  std::string key;        // the row's key as the sink names it ("(id)=(3)", a document id)
  std::string reason;     // what the sink was told
  std::string code;       // the HTTP status or SQLSTATE of the refusal
  std::string change;     // the change, as the jsonl sink writes it
  std::string destination;  // the route transform's choice (Change::destination), if any
  std::string schema;     // its table version (schemas/table_schema_json.h)
  std::string recorded_at;  // ISO 8601, UTC
};

// A record of `change` as `sink` of `pipeline` refused it (everything but id and recorded_at).
DeadLetter MakeDeadLetter(std::string_view pipeline, std::string_view sink, const Change& change,
                          std::string key, std::string reason, std::string code);

// The record as one JSON object (the file's line, `pgflow dlq show`), and back.
std::string DeadLetterJson(const DeadLetter& letter);
absl::StatusOr<DeadLetter> ParseDeadLetterJson(std::string_view line);

class DeadLetterStore {
 public:
  virtual ~DeadLetterStore() = default;
  // "file /var/lib/pgflow/rejected.jsonl", "table pgflow.dead_letters in <database>".
  virtual std::string Describe() const = 0;
  // Records `letter` durably, giving it its id; a record already there (same pipeline, sink,
  // event id, table and key) is left as it is and `letter` takes its id.
  virtual absl::Status Record(DeadLetter& letter) = 0;
  // The records of `pipeline` (and of `sink`, when not empty), oldest first.
  virtual absl::StatusOr<std::vector<DeadLetter>> List(std::string_view pipeline,
                                                       std::string_view sink) = 0;
  // Removes the records of `pipeline` with these ids; how many there were.
  virtual absl::StatusOr<size_t> Remove(std::string_view pipeline,
                                        const std::vector<uint64_t>& ids) = 0;
};

// The file store. Appends under an exclusive flock, so that `pgflow dlq purge` and a running
// pipeline may share the file.
std::unique_ptr<DeadLetterStore> NewFileDeadLetterStore(std::string path);

// The table store needs libpq, which the engine does not link: common/postgres registers it.
using TableDeadLetterStoreMaker = std::function<absl::StatusOr<std::unique_ptr<DeadLetterStore>>(
    const std::string& url, const std::string& table)>;
void RegisterTableDeadLetterStore(TableDeadLetterStoreMaker maker);

// Opens the store `config` names; `fallback_url` is the database of a table without `url`
// (the source's, empty when the source is not PostgreSQL). `where` ("sinks.search.dead_letter")
// prefixes errors.
absl::StatusOr<std::unique_ptr<DeadLetterStore>> OpenDeadLetterStore(
    const DeadLetterConfig& config, const std::string& fallback_url, std::string_view where);

}  // namespace pgflow
