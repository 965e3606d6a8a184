#include "sinks/kv/kv_documents.h"

#include <algorithm>

#include "engine/str_cat.h"
#include "schemas/json_text.h"

namespace pgflow {

namespace {

// The OID a root key column's row value carries: an integer's, so that the cache orders its
// keys as numbers (pages, SCAN); anything else's JSON as PostgreSQL rendered it (jsonb).
uint32_t KeyOid(const std::string& type) {
  if (type == "smallint") return oid::kInt2;
  if (type == "integer") return oid::kInt4;
  if (type == "bigint") return oid::kInt8;
  return oid::kJsonb;
}

// `json` without its white space (PostgreSQL's jsonb output puts a space after every ':' and
// ',', which the cache would hold and serve for nothing).
std::string Compact(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  AppendJsonWithoutSpaces(json, &out);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvDocuments>> KvDocuments::Open(const Setup& setup) {
  absl::StatusOr<std::unique_ptr<documents::DocumentFeed>> feed =
      documents::DocumentFeed::Open(setup.described, setup.names, setup.source_url, setup.who,
                                    setup.transforms, setup.pipeline);
  if (!feed.ok()) return feed.status();
  std::unique_ptr<KvDocuments> out(new KvDocuments(*std::move(feed)));
  for (const documents::DocumentFeed::Document& document : out->feed_->documents()) {
    auto shape = std::make_shared<TableSchema>();
    shape->schema = "public";  // (the cache's keys and URLs: the document's name alone)
    shape->name = document.spec.name;
    const std::vector<std::string>& key = document.sql->root_key();
    for (size_t i = 0; i < key.size(); ++i) {
      shape->columns.push_back(
          Column{key[i], KeyOid(document.sql->root_key_types()[i]), -1, /*is_key=*/true, ""});
    }
    auto add = [&](const std::string& name) {
      if (std::none_of(shape->columns.begin(), shape->columns.end(),
                       [&](const Column& c) { return c.name == name; })) {
        shape->columns.push_back(Column{name, oid::kJsonb, -1, /*is_key=*/false, ""});
      }
    };
    for (const std::string& field : document.spec.root.fields) add(field);
    for (const documents::DocumentNode& child : document.spec.root.children) add(child.name);
    out->shapes_[document.spec.name] = std::move(shape);
  }
  return out;
}

absl::Status KvDocuments::OnChange(const Change& change, bool in_txn, KvStore* store) {
  if (feed_->Truncates(change)) {
    // What was noted before goes first; then the documents rooted in the table go, and every
    // document reading it elsewhere is rendered again once the TRUNCATE is visible.
    if (absl::Status s = Render(store); !s.ok()) return s;
    for (const documents::DocumentFeed::Document* document :
         feed_->RootedIn(change.table->QualifiedName())) {
      Change empty;
      empty.op = Op::kTruncate;
      empty.table = shapes_.at(document->spec.name);
      empty.txn = change.txn;
      if (absl::Status s = store->Stage(empty); !s.ok()) return s;
    }
    feed_->Take(change, in_txn);
    return store->Commit(Lsn());
  }
  feed_->Take(change, in_txn);
  return feed_->noted() >= 4096 ? Render(store) : absl::OkStatus();
}

absl::Status KvDocuments::Render(KvStore* store) {
  absl::Status s = feed_->Render(1000, [&](const documents::DocumentFeed::Document& document,
                                           documents::RenderedDocument rendered) {
    absl::StatusOr<Change> change = ChangeFor(document.spec.name, rendered);
    if (!change.ok()) return change.status();
    return store->Stage(*change);
  });
  if (!s.ok()) {
    store->Discard();
    return s;
  }
  // Applied at once, within a transaction too: the documents are the source's as of now,
  // later than every change noted, so none of them is wrong to show whatever becomes of the
  // transaction they are rendered in, and none may wait for its commit (a transaction cut off
  // would take them away, with the documents of the transactions before it).
  return store->Commit(Lsn());
}

absl::StatusOr<Change> KvDocuments::ChangeFor(const std::string& document,
                                              const documents::RenderedDocument& rendered) {
  TableSchemaPtr& shape = shapes_.at(document);
  Change change;
  change.table = shape;
  change.txn.commit_lsn = version_;
  std::vector<JsonMember> key;
  if (absl::Status s = ReadJsonObject(rendered.key, &key); !s.ok()) return s;
  Row row;
  row.reserve(shape->columns.size());
  for (const Column& column : shape->columns) {
    if (!column.is_key) break;  // (the key's columns come first)
    const JsonMember* value = FindJsonMember(key, column.name);
    if (value == nullptr) {
      return absl::InternalError(Cat("document ", document, ": its render has no key column ",
                                     column.name, " (", rendered.key, ")"));
    }
    row.push_back(Value::Text(column.type_oid, Compact(value->value)));
  }
  if (!rendered.document.has_value()) {
    change.op = Op::kDelete;
    change.before_kind = BeforeKind::kKey;
    row.resize(shape->columns.size(), Value::Null(oid::kJsonb));
    change.before = std::move(row);
    return change;
  }
  std::vector<JsonMember> fields;
  if (absl::Status s = ReadJsonObject(*rendered.document, &fields); !s.ok()) return s;
  // A field the description does not name (a column a `set` transform adds) joins the shape.
  for (const JsonMember& field : fields) {
    if (std::any_of(shape->columns.begin(), shape->columns.end(),
                    [&](const Column& c) { return c.name == field.key; })) {
      continue;
    }
    auto wider = std::make_shared<TableSchema>(*shape);
    wider->columns.push_back(Column{field.key, oid::kJsonb, -1, /*is_key=*/false, ""});
    shape = std::move(wider);
  }
  change.table = shape;
  for (size_t i = row.size(); i < shape->columns.size(); ++i) {
    const JsonMember* value = FindJsonMember(fields, shape->columns[i].name);
    row.push_back(value == nullptr || JsonTypeOf(value->value) == JsonType::kNull
                      ? Value::Null(oid::kJsonb)
                      : Value::Text(oid::kJsonb, Compact(value->value)));
  }
  change.op = Op::kInsert;
  change.after = std::move(row);
  return change;
}

}  // namespace pgflow
