#pragma once

// One Kafka message written by pgflow's kafka sink (sinks/kafka/kafka_record.h), read back as
// the typed change it was made from. Pure: no librdkafka.
//
// Values in either format the sink writes are read: `debezium` ({"before","after","op",
// "source":{...}}) and `compact` (the jsonl object), and the schema-changes topic's
// {"source":{...},"ddl":{...}}. Row changes and truncates need the message's `pgflow.schema`
// header (schemas/table_schema_json.h), which types the values; each JSON value goes back to
// PostgreSQL's text form through schemas/json_decoding.h.
//
// What comes back:
//   - a change whose event id (txn.commit_lsn, sequence), xid and commit time are those the
//     producer wrote (the commit time to the millisecond in the debezium format), so that a
//     sink downstream writes the same event ids again;
//   - `after` with a value for every column: present ones decoded, those listed in
//     `unchanged_toast` as unchanged TOAST (never a made-up value); a column neither present
//     nor listed is an error; a json or jsonb column listed in `json_null` holds JSON's null
//     (the text "null"), not SQL NULL;
//   - `before` (updates, deletes) as the old key, or the whole old row under REPLICA IDENTITY
//     FULL (what the table description says);
//   - for a table under REPLICA IDENTITY FULL whose description names its primary key, a
//     table version keyed by that key as under DEFAULT (replica identity 'd', is_key on the
//     key's columns, `before` still the whole old row, BeforeKind::kFull): sinks then upsert
//     and delete it by key, which makes replays harmless. One without a primary key keeps
//     identity 'f' and no key (the kafka source refuses such rows, see kafka_source.h);
//   - nothing for a tombstone (a null value): it only tells compacted topics to drop a key.
// A create whose row lacks unchanged TOAST values (the second half of an update that changed
// the row's key, which the sink publishes as a delete of the old key and a create of the new
// one) comes back as an update of the new key with those columns unchanged, and a warning: their
// values never reached the topic.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/change.h"

namespace pgflow {

struct DecodedMessage {
  Change change;
  // Set when the change is less than the event it came from (see above); for the log.
  std::string warning;
};

// Not thread-safe: one per consumer thread. Keeps the table versions it has read, so that
// consecutive changes of one table share one TableSchema (sinks batch by it).
class KafkaMessageDecoder {
 public:
  // `value`: the message's value, nullopt for a tombstone (then nullopt is returned).
  // `schema_header`: its `pgflow.schema` header, if any.
  // InvalidArgument, saying what is wrong with the message, when it is not pgflow's.
  absl::StatusOr<std::optional<DecodedMessage>> Decode(
      std::optional<std::string_view> value, std::optional<std::string_view> schema_header);

 private:
  struct CachedTable {
    TableSchemaPtr table;
    bool full = false;  // the header's replica identity is FULL: `before` is the whole old row
  };
  absl::StatusOr<const CachedTable*> Table(std::string_view header);

  absl::flat_hash_map<std::string, CachedTable> tables_;  // by header text
};

}  // namespace pgflow
