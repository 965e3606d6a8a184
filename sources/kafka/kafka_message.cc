#include "sources/kafka/kafka_message.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "schemas/base64.h"
#include "schemas/ddl.h"
#include "schemas/json_decoding.h"
#include "schemas/json_text.h"
#include "schemas/pg_datetime.h"
#include "schemas/table_schema_json.h"

namespace pgflow {
namespace {

// Tables described by more headers than this are forgotten all at once (a long-running
// consumer of many schema versions must not grow without bound).
constexpr size_t kMaxCachedTables = 4096;

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

// Prefixes a status's message with where it happened.
absl::Status Within(std::string_view where, const absl::Status& status) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(where), ": ", status.message()));
}

absl::StatusOr<std::string> ReadString(std::string_view value, std::string_view field) {
  if (JsonTypeOf(value) != JsonType::kString) {
    return Invalid(absl::StrCat(std::string(field), " is not a string"));
  }
  std::string out;
  if (absl::Status s = ReadJsonString(value, &out); !s.ok()) return Within(field, s);
  return out;
}

absl::StatusOr<int64_t> ReadInteger(std::string_view value, std::string_view field) {
  absl::StatusOr<int64_t> n = ReadJsonInt64(value);
  if (!n.ok()) return Within(field, n.status());
  return *n;
}

// The Op of a debezium one-letter op or a compact op name; false when neither.
bool ParseOp(std::string_view name, bool* debezium, Op* op) {
  struct Name {
    std::string_view letter;
    std::string_view word;
    Op op;
  };
  static constexpr Name kNames[] = {
      {"r", "read", Op::kRead},         {"c", "insert", Op::kInsert},
      {"u", "update", Op::kUpdate},     {"d", "delete", Op::kDelete},
      {"t", "truncate", Op::kTruncate}, {"m", "message", Op::kMessage},
  };
  for (const Name& n : kNames) {
    if (name == n.letter || name == n.word) {
      *debezium = name == n.letter;
      *op = n.op;
      return true;
    }
  }
  return false;
}

// What a column absent from a row object is.
enum class Missing {
  kListed,          // unchanged TOAST if listed in unchanged_toast, else an error (`after`)
  kNull,            // null: the non-key columns of an old key
  kUnchangedToast,  // unknown: an old row under REPLICA IDENTITY FULL without a TOASTed value
};

// Reads the object `json` into a row of `table`: present columns decoded, the others as
// `missing` says.
absl::Status ReadRow(std::string_view json, const TableSchema& table, std::string_view what,
                     const std::vector<std::string>& unchanged_toast, Missing missing, Row* row) {
  if (JsonTypeOf(json) != JsonType::kObject) {
    return Invalid(absl::StrCat(std::string(what), " is not an object"));
  }
  std::vector<JsonMember> members;
  if (absl::Status s = ReadJsonObject(json, &members); !s.ok()) return Within(what, s);
  row->assign(table.columns.size(), Value());
  std::vector<bool> seen(table.columns.size(), false);
  size_t next = 0;  // the producer writes columns in table order: look there first
  for (const JsonMember& m : members) {
    size_t index = next < table.columns.size() && table.columns[next].name == m.key
                       ? next
                       : table.columns.size();
    for (size_t i = 0; index == table.columns.size() && i < table.columns.size(); ++i) {
      if (table.columns[i].name == m.key) index = i;
    }
    if (index == table.columns.size()) {
      return Invalid(absl::StrCat(std::string(what), " has a column \"", m.key, "\" that ",
                                  table.QualifiedName(),
                                  " does not have (by the message's pgflow.schema header)"));
    }
    if (seen[index]) {
      return Invalid(absl::StrCat(std::string(what), " has column \"", m.key, "\" twice"));
    }
    seen[index] = true;
    next = index + 1;
    const Column& column = table.columns[index];
    absl::StatusOr<Value> value = ValueFromJson(m.value, column.type_oid, column.type_name);
    if (!value.ok()) {
      return Within(absl::StrCat(std::string(what), ".", column.name), value.status());
    }
    (*row)[index] = *std::move(value);
  }
  for (size_t i = 0; i < table.columns.size(); ++i) {
    if (seen[i]) continue;
    const Column& column = table.columns[i];
    bool toast = missing == Missing::kUnchangedToast;
    for (const std::string& name : unchanged_toast) toast = toast || name == column.name;
    if (toast) {
      (*row)[i] = Value::UnchangedToast(column.type_oid);
    } else if (missing == Missing::kNull) {
      (*row)[i] = Value::Null(column.type_oid);
    } else {
      return Invalid(absl::StrCat(std::string(what), " lacks column \"", column.name,
                                  "\", which is not listed in unchanged_toast either"));
    }
  }
  return absl::OkStatus();
}

// The json and jsonb columns `names` (the event's json_null list) hold JSON's null, which
// `after` has as SQL NULL: their values become the json text "null".
absl::Status SetJsonNulls(const TableSchema& table, const std::vector<std::string>& names,
                          Row* row) {
  for (const std::string& name : names) {
    size_t i = 0;
    while (i < table.columns.size() && table.columns[i].name != name) ++i;
    if (i == table.columns.size() || i >= row->size()) {
      return Invalid(absl::StrCat("json_null names a column \"", name, "\" that ",
                                  table.QualifiedName(), " does not have"));
    }
    const uint32_t type = table.columns[i].type_oid;
    if ((type != oid::kJson && type != oid::kJsonb) || !(*row)[i].is_null()) {
      return Invalid(absl::StrCat("json_null names column \"", name,
                                  "\", which is not a json or jsonb column holding null"));
    }
    (*row)[i] = Value::Text(type, "null");
  }
  return absl::OkStatus();
}

const JsonMember* FindNonNull(const std::vector<JsonMember>& members, std::string_view key) {
  const JsonMember* m = FindJsonMember(members, key);
  return m == nullptr || JsonTypeOf(m->value) == JsonType::kNull ? nullptr : m;
}

}  // namespace

absl::StatusOr<const KafkaMessageDecoder::CachedTable*> KafkaMessageDecoder::Table(
    std::string_view header) {
  auto it = tables_.find(absl::string_view(header.data(), header.size()));
  if (it != tables_.end()) return &it->second;
  absl::StatusOr<TableSchema> table = ParseTableSchemaJson(header);
  if (!table.ok()) return Within("header pgflow.schema", table.status());
  CachedTable cached;
  cached.full = table->replica_identity == 'f';
  if (cached.full && !table->primary_key.empty()) {
    // Keyed by its primary key, as under DEFAULT (see the header).
    for (Column& c : table->columns) {
      c.is_key = std::find(table->primary_key.begin(), table->primary_key.end(), c.name) !=
                 table->primary_key.end();
    }
    table->replica_identity = 'd';
    table->primary_key.clear();
  }
  if (tables_.size() >= kMaxCachedTables) tables_.clear();
  cached.table = std::make_shared<const TableSchema>(*std::move(table));
  return &tables_.emplace(std::string(header), std::move(cached)).first->second;
}

namespace {

// The names of the event's schema and table, when it carries them (checked against the header).
struct EventTable {
  std::string schema;
  std::string table;
};

// The transaction's keys (commit position, xid, commit time, sequence, schema and table) from
// debezium's `source` object or a DDL event's, or from the compact event's own keys.
absl::Status ReadTransaction(const std::vector<JsonMember>& txn_members, bool from_source,
                             Change* change, EventTable* names) {
  for (const JsonMember& m : txn_members) {
    absl::StatusOr<int64_t> n;
    if (m.key == "lsn") {
      if (from_source) {
        n = ReadInteger(m.value, "source.lsn");
        if (!n.ok()) return n.status();
        change->txn.commit_lsn = Lsn(static_cast<uint64_t>(*n));
      } else {
        absl::StatusOr<std::string> text = ReadString(m.value, "lsn");
        if (!text.ok()) return text.status();
        std::optional<Lsn> lsn = Lsn::Parse(*text);
        if (!lsn.has_value()) return Invalid(absl::StrCat("lsn \"", *text, "\" is not X/X"));
        change->txn.commit_lsn = *lsn;
      }
    } else if (m.key == "txId" || m.key == "xid") {
      n = ReadInteger(m.value, m.key);
      if (!n.ok()) return n.status();
      change->txn.xid = static_cast<uint32_t>(*n);
    } else if (m.key == "ts_ms" && from_source) {
      n = ReadInteger(m.value, "source.ts_ms");
      if (!n.ok()) return n.status();
      change->txn.commit_time_us = *n * 1000;
    } else if (m.key == "commit_ts") {
      absl::StatusOr<std::string> text = ReadString(m.value, "commit_ts");
      if (!text.ok()) return text.status();
      if (!ParseIsoTimestamp(*text, &change->txn.commit_time_us)) {
        return Invalid(absl::StrCat("commit_ts '", text->substr(0, 40),
                                    "' is not of the form 2026-11-22T11:06:17.887758Z"));
      }
    } else if (m.key == "seq") {
      n = ReadInteger(m.value, "seq");
      if (!n.ok()) return n.status();
      if (*n < 0) return Invalid("seq is negative");
      change->sequence = static_cast<uint64_t>(*n);
    } else if (m.key == "schema" || m.key == "table") {
      absl::StatusOr<std::string> text = ReadString(m.value, m.key);
      if (!text.ok()) return text.status();
      (m.key == "schema" ? names->schema : names->table) = *std::move(text);
    }
  }
  change->txn.end_lsn = change->txn.commit_lsn;
  change->lsn = change->txn.commit_lsn;
  return absl::OkStatus();
}

// A schema change: its `ddl` description, a string or the object itself.
absl::Status DecodeDdl(const std::vector<JsonMember>& members, Change* change) {
  const JsonMember* ddl = FindNonNull(members, "ddl");
  if (ddl == nullptr) return Invalid("a schema change without its \"ddl\" description");
  if (JsonTypeOf(ddl->value) == JsonType::kString) {
    absl::StatusOr<std::string> text = ReadString(ddl->value, "ddl");
    if (!text.ok()) return text.status();
    change->content = *std::move(text);
  } else {
    change->content = std::string(ddl->value);
  }
  absl::StatusOr<DdlCommand> command = ParseDdlCommand(change->content);
  if (!command.ok()) return command.status();
  change->prefix = std::string(kDdlMessagePrefix);
  change->transactional = true;
  change->ddl = std::make_shared<const DdlCommand>(*std::move(command));
  return absl::OkStatus();
}

// A logical decoding message: prefix, content (base64 in debezium's `message` object) and
// whether it was transactional.
absl::Status DecodeMessageEvent(const std::vector<JsonMember>& members, bool debezium,
                                Change* change) {
  const std::vector<JsonMember>* fields = &members;
  std::vector<JsonMember> message_members;
  if (debezium) {
    const JsonMember* message = FindNonNull(members, "message");
    if (message == nullptr || JsonTypeOf(message->value) != JsonType::kObject) {
      return Invalid("a message event without its \"message\" object");
    }
    if (absl::Status s = ReadJsonObject(message->value, &message_members); !s.ok()) {
      return Within("message", s);
    }
    fields = &message_members;
  }
  for (const JsonMember& m : *fields) {
    if (m.key == "prefix") {
      absl::StatusOr<std::string> text = ReadString(m.value, "prefix");
      if (!text.ok()) return text.status();
      change->prefix = *std::move(text);
    } else if (m.key == "content") {
      absl::StatusOr<std::string> text = ReadString(m.value, "content");
      if (!text.ok()) return text.status();
      if (debezium) {
        if (!AppendBase64Decoded(*text, &change->content)) {
          return Invalid("message content is not base64");
        }
      } else {
        change->content = *std::move(text);
      }
    } else if (m.key == "transactional") {
      change->transactional = m.value == "true";
    }
  }
  return absl::OkStatus();
}

// A truncate's options, in debezium's `truncate` object or the compact event's own keys.
absl::Status DecodeTruncate(const std::vector<JsonMember>& members, bool debezium, Change* change) {
  const std::vector<JsonMember>* fields = &members;
  std::vector<JsonMember> truncate_members;
  if (debezium) {
    if (const JsonMember* t = FindNonNull(members, "truncate"); t != nullptr) {
      if (absl::Status s = ReadJsonObject(t->value, &truncate_members); !s.ok()) {
        return Within("truncate", s);
      }
    }
    fields = &truncate_members;
  }
  for (const JsonMember& m : *fields) {
    if (m.key == "cascade") change->truncate_cascade = m.value == "true";
    if (m.key == "restart_identity") change->truncate_restart_identity = m.value == "true";
  }
  return absl::OkStatus();
}

// The names a list key of the event holds (`unchanged_toast`, `json_null`); none when absent.
absl::Status ReadNameList(const std::vector<JsonMember>& members, std::string_view key,
                          std::vector<std::string>* names) {
  const JsonMember* list = FindNonNull(members, key);
  if (list == nullptr) return absl::OkStatus();
  std::vector<std::string_view> items;
  if (JsonTypeOf(list->value) != JsonType::kArray) {
    return Invalid(absl::StrCat(std::string(key), " is not an array"));
  }
  if (absl::Status s = ReadJsonArray(list->value, &items); !s.ok()) return Within(key, s);
  for (std::string_view item : items) {
    absl::StatusOr<std::string> name = ReadString(item, absl::StrCat(std::string(key), "[]"));
    if (!name.ok()) return name.status();
    names->push_back(*std::move(name));
  }
  return absl::OkStatus();
}

// An insert, update, delete or read: its rows typed by the table description (`full`: the
// table's replica identity is FULL, so `before` is the whole old row).
absl::Status DecodeRowChange(const std::vector<JsonMember>& members, bool full,
                             DecodedMessage* out) {
  Change& change = out->change;
  std::vector<std::string> unchanged_toast;
  std::vector<std::string> json_null;
  if (absl::Status s = ReadNameList(members, "unchanged_toast", &unchanged_toast); !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadNameList(members, "json_null", &json_null); !s.ok()) return s;
  const TableSchema& schema = *change.table;
  if (change.op != Op::kDelete) {
    const JsonMember* after = FindNonNull(members, "after");
    if (after == nullptr) {
      return Invalid(absl::StrCat("a ", OpName(change.op), " without its \"after\" row"));
    }
    if (absl::Status s = ReadRow(after->value, schema, "after", unchanged_toast, Missing::kListed,
                                 &change.after);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = SetJsonNulls(schema, json_null, &change.after); !s.ok()) return s;
  }
  if (const JsonMember* before = FindNonNull(members, "before"); before != nullptr) {
    change.before_kind = full ? BeforeKind::kFull : BeforeKind::kKey;
    if (absl::Status s = ReadRow(before->value, schema, "before", {},
                                 full ? Missing::kUnchangedToast : Missing::kNull, &change.before);
        !s.ok()) {
      return s;
    }
  } else if (change.op == Op::kDelete) {
    return Invalid("a delete without its \"before\" key");
  }
  if ((change.op == Op::kInsert || change.op == Op::kRead) && !unchanged_toast.empty()) {
    // An update that moved the row to a new key, published as a create (see the header).
    change.op = Op::kUpdate;
    out->warning = absl::StrCat(
        "a row of ", schema.QualifiedName(), " moved to a new key without the values of ",
        absl::StrJoin(unchanged_toast, ", "),
        " (TOASTed and unchanged, so never published): applied as an update of the new key; "
        "a target that lacks that row lacks it still");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<DecodedMessage>> KafkaMessageDecoder::Decode(
    std::optional<std::string_view> value, std::optional<std::string_view> schema_header) {
  if (!value.has_value()) return std::optional<DecodedMessage>();
  std::vector<JsonMember> members;
  if (absl::Status s = ReadJsonObject(*value, &members); !s.ok()) {
    return Within("the value is not a pgflow event", s);
  }
  DecodedMessage out;
  Change& change = out.change;

  // Transaction and event id: debezium's `source` object, or the compact object's own keys.
  const JsonMember* source = FindNonNull(members, "source");
  const JsonMember* op_member = FindNonNull(members, "op");
  const bool is_ddl = op_member == nullptr && FindJsonMember(members, "ddl") != nullptr;
  bool debezium = source != nullptr;
  if (!is_ddl) {
    if (op_member == nullptr) {
      return Invalid("the value is not a pgflow event: it has neither \"op\" nor \"ddl\"");
    }
    absl::StatusOr<std::string> op = ReadString(op_member->value, "op");
    if (!op.ok()) return op.status();
    if (!ParseOp(*op, &debezium, &change.op)) {
      return Invalid(absl::StrCat("unknown op \"", op->substr(0, 20), "\""));
    }
  } else {
    change.op = Op::kDdl;
  }
  if (debezium && source == nullptr) {
    return Invalid("a debezium event without its \"source\" object");
  }
  std::vector<JsonMember> source_members;
  if (debezium || is_ddl) {
    if (source == nullptr || JsonTypeOf(source->value) != JsonType::kObject) {
      return Invalid("\"source\" is not an object");
    }
    if (absl::Status s = ReadJsonObject(source->value, &source_members); !s.ok()) {
      return Within("source", s);
    }
  }
  EventTable names;
  if (absl::Status s = ReadTransaction(debezium || is_ddl ? source_members : members,
                                       debezium || is_ddl, &change, &names);
      !s.ok()) {
    return s;
  }
  if (change.op == Op::kDdl || change.op == Op::kMessage) {
    absl::Status s = change.op == Op::kDdl ? DecodeDdl(members, &change)
                                           : DecodeMessageEvent(members, debezium, &change);
    if (!s.ok()) return s;
    return std::optional<DecodedMessage>(std::move(out));
  }

  // Row changes and truncates: typed by the table description.
  if (!schema_header.has_value()) {
    return Invalid(
        "a row event without a pgflow.schema header (written by another producer, or by a "
        "pgflow older than the kafka source): its values cannot be typed");
  }
  absl::StatusOr<const CachedTable*> table = Table(*schema_header);
  if (!table.ok()) return table.status();
  change.table = (*table)->table;
  if ((!names.schema.empty() && names.schema != change.table->schema) ||
      (!names.table.empty() && names.table != change.table->name)) {
    return Invalid(absl::StrCat("the event is about ", names.schema, ".", names.table,
                                " but its pgflow.schema header describes ",
                                change.table->QualifiedName()));
  }
  absl::Status s = change.op == Op::kTruncate ? DecodeTruncate(members, debezium, &change)
                                              : DecodeRowChange(members, (*table)->full, &out);
  if (!s.ok()) return s;
  return std::optional<DecodedMessage>(std::move(out));
}

}  // namespace pgflow
