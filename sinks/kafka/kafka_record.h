#pragma once

// What one change becomes on Kafka: its key, its value and its event id. Pure functions,
// no librdkafka: the sink produces what these return.
//
// Key: the change's primary key as a JSON object of the key columns, {"id":42}, so every
// change of a row lands in one partition, in order. The key of a delete is its old key; of an
// update that changed the key, the new one. Under REPLICA IDENTITY FULL the key is the table's
// primary key (TableSchema::primary_key), not the whole row, so that an update stays one
// message in its row's partition. No key (a table without a primary key or replica identity
// index, a truncate, a message) means a null key: such rows keep no order across partitions.
//
// Value, format `debezium` (Debezium's JSON envelope without schemas):
//   {"before":{"id":42},"after":null,"op":"d","ts_ms":1700000000123,
//    "source":{"connector":"pgflow","name":"shop","schema":"public","table":"orders",
//              "lsn":23400000,"txId":745,"ts_ms":1700000000100,"snapshot":"false","seq":3}}
// op: r (snapshot read), c, u, d, t (truncate), m (message). `source.lsn` is the commit LSN of
// the transaction as a number, `seq` the change's ordinal in it. A column whose TOASTed value
// was not sent is absent from `after` and listed in "unchanged_toast", never made up; a json
// or jsonb column whose value is JSON null (written `null`, like SQL NULL) is listed in
// "json_null".
//
// Value, format `compact`: pgflow's own jsonl object (docs/development/architecture.md,
// "Configuration"), one line.
//
// Event id: "<commit lsn X/X>:<seq>", the same for a change however often it is produced:
// consumers deduplicate on it after a restart (at-least-once). The delete that an update of a
// row's key publishes for the old key has the id "<commit lsn>:<seq>:old-key".

#include <cstdint>
#include <string>

#include "engine/change.h"
#include "engine/event_id.h"  // AppendEventId, the id the sink writes
#include "schemas/json_encoding.h"

namespace pgflow {

enum class KafkaFormat { kDebezium, kCompact };

struct KafkaRecordOptions {
  KafkaFormat format = KafkaFormat::kDebezium;
  JsonOptions json;
  std::string pipeline;  // source.name
};

// Appends the key JSON to *out and returns true, or returns false (nothing appended) when the
// change has no key.
bool AppendKafkaKey(const Change& change, const JsonOptions& options, std::string* out);

// The key an update's old row had (from `before`, the old key or the whole old row); false
// when the change is not an update or carries no old key. When it differs from AppendKafkaKey's,
// the row moved to another key: the sink then publishes, as Debezium does, a delete of the old key
// (and its tombstone) and a create under the new key, so that compacted topics drop the old key.
bool AppendKafkaOldKey(const Change& change, const JsonOptions& options, std::string* out);

// Appends the value JSON. `now_ms` is the envelope's ts_ms (when pgflow produced it).
void AppendKafkaValue(const Change& change, const KafkaRecordOptions& options, int64_t now_ms,
                      std::string* out);


// Debezium's one-letter op: r c u d t m; "ddl" changes are not Debezium row events and get
// their own value (see AppendSchemaChangeValue).
const char* DebeziumOp(Op op);

// The value published to the schema-changes topic for a kDdl change:
//   {"source":{...as above...},"ts_ms":...,"ddl":<the DDL event's JSON, embedded when it is
//    valid JSON, else as a string>}
void AppendSchemaChangeValue(const Change& change, const KafkaRecordOptions& options,
                             int64_t now_ms, std::string* out);

// Replaces in `pattern` {pipeline}, {schema} and {table}; every character Kafka does not
// allow in a topic name ([A-Za-z0-9._-]) becomes '_'.
std::string ExpandTopic(const std::string& pattern, const std::string& pipeline,
                        const std::string& schema, const std::string& table);

}  // namespace pgflow
