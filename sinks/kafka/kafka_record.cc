#include "sinks/kafka/kafka_record.h"

#include "schemas/base64.h"
#include "schemas/json_text.h"

namespace pgflow {
namespace {

void AppendSource(const Change& change, const KafkaRecordOptions& options, std::string* out) {
  out->append("{\"connector\":\"pgflow\",\"name\":");
  AppendJsonString(options.pipeline, out);
  if (change.table != nullptr) {
    out->append(",\"schema\":");
    AppendJsonString(change.table->schema, out);
    out->append(",\"table\":");
    AppendJsonString(change.table->name, out);
  }
  out->append(",\"lsn\":");
  out->append(std::to_string(change.txn.commit_lsn.value));
  out->append(",\"txId\":");
  out->append(std::to_string(change.txn.xid));
  out->append(",\"ts_ms\":");
  out->append(std::to_string(change.txn.commit_time_us / 1000));
  out->append(",\"snapshot\":");
  out->append(change.op == Op::kRead ? "\"true\"" : "\"false\"");
  out->append(",\"seq\":");
  out->append(std::to_string(change.sequence));
  out->push_back('}');
}

}  // namespace

const char* DebeziumOp(Op op) {
  switch (op) {
    case Op::kRead:
      return "r";
    case Op::kInsert:
      return "c";
    case Op::kUpdate:
      return "u";
    case Op::kDelete:
      return "d";
    case Op::kTruncate:
      return "t";
    case Op::kMessage:
      return "m";
    case Op::kDdl:
      return "ddl";
  }
  return "?";
}


bool AppendKafkaKey(const Change& change, const JsonOptions& options, std::string* out) {
  if (!IsRowChange(change.op) || change.table == nullptr) return false;
  // A delete knows only its old key; everything else keys on the row as it now is.
  const Row& row = change.op == Op::kDelete ? change.before : change.after;
  return AppendKeyObject(*change.table, row, options, out);
}

bool AppendKafkaOldKey(const Change& change, const JsonOptions& options, std::string* out) {
  if (change.op != Op::kUpdate || change.before_kind == BeforeKind::kNone ||
      change.table == nullptr) {
    return false;
  }
  return AppendKeyObject(*change.table, change.before, options, out);
}

void AppendKafkaValue(const Change& change, const KafkaRecordOptions& options, int64_t now_ms,
                      std::string* out) {
  if (options.format == KafkaFormat::kCompact) {
    AppendChangeObject(change, options.json, out);
    return;
  }
  const bool row_change = IsRowChange(change.op) && change.table != nullptr;
  out->append("{\"before\":");
  if (row_change && change.before_kind != BeforeKind::kNone) {
    AppendRowObject(*change.table, change.before, change.before_kind == BeforeKind::kKey,
                    options.json, out);
  } else {
    out->append("null");
  }
  out->append(",\"after\":");
  if (row_change && change.op != Op::kDelete) {
    AppendRowObject(*change.table, change.after, false, options.json, out);
  } else {
    out->append("null");
  }
  out->append(",\"op\":\"");
  out->append(DebeziumOp(change.op));
  out->append("\",\"ts_ms\":");
  out->append(std::to_string(now_ms));
  out->append(",\"source\":");
  AppendSource(change, options, out);
  if (row_change) AppendUnchangedToast(change, out);
  if (row_change && change.op != Op::kDelete) AppendJsonNulls(change, out);
  if (change.op == Op::kTruncate) {
    out->append(",\"truncate\":{\"cascade\":");
    out->append(change.truncate_cascade ? "true" : "false");
    out->append(",\"restart_identity\":");
    out->append(change.truncate_restart_identity ? "true" : "false");
    out->push_back('}');
  }
  if (change.op == Op::kMessage) {
    // Debezium's logical decoding message shape.
    out->append(",\"message\":{\"prefix\":");
    AppendJsonString(change.prefix, out);
    out->append(",\"content\":\"");
    AppendBase64(change.content, out);
    out->push_back('"');
    out->append(",\"transactional\":");
    out->append(change.transactional ? "true" : "false");
    out->push_back('}');
  }
  out->push_back('}');
}

void AppendSchemaChangeValue(const Change& change, const KafkaRecordOptions& options,
                             int64_t now_ms, std::string* out) {
  out->append("{\"source\":");
  AppendSource(change, options, out);
  out->append(",\"ts_ms\":");
  out->append(std::to_string(now_ms));
  out->append(",\"ddl\":");
  if (CheckJson(change.content).ok()) {
    out->append(change.content);
  } else {
    AppendJsonString(change.content, out);
  }
  out->push_back('}');
}

std::string ExpandTopic(const std::string& pattern, const std::string& pipeline,
                        const std::string& schema, const std::string& table) {
  std::string out;
  for (size_t i = 0; i < pattern.size();) {
    auto take = [&](std::string_view name, const std::string& value) {
      if (pattern.compare(i, name.size(), name) != 0) return false;
      out.append(value);
      i += name.size();
      return true;
    };
    if (pattern[i] == '{' &&
        (take("{pipeline}", pipeline) || take("{schema}", schema) || take("{table}", table))) {
      continue;
    }
    out.push_back(pattern[i++]);
  }
  for (char& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

}  // namespace pgflow
