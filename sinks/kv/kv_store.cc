#include "sinks/kv/kv_store.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/log.h"
#include "schemas/json_text.h"
#include "sinks/kv/resp.h"

namespace pgflow {
namespace {

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsIntegerType(uint32_t oid) {
  return oid == oid::kInt2 || oid == oid::kInt4 || oid == oid::kInt8 || oid == oid::kOid;
}

// The text a JSON value stands for: a string's contents, or the JSON itself.
std::string JsonText(const std::string& json) {
  if (json.empty() || json[0] != '"') return json;
  std::string text;
  // AppendJsonValue always writes valid JSON; checked all the same.
  if (!CheckJson(json).ok() || !ReadJsonString(json, &text).ok()) return json;
  return text;
}

// Appends an order-preserving encoding of one key part: integers compare as numbers, the
// rest as bytes. Every part is self-delimiting, so composite keys compare part by part.
// `lookup`: the part of a key asked for, where "07" finds 7's place; a row's own key encodes
// an integer as a number only when written as PostgreSQL writes it, so that no two rows (as
// "7" and "007" could come from a Kafka source) share a sort key.
void AppendSortPart(uint32_t type_oid, std::string_view text, bool lookup, std::string* out) {
  int64_t n = 0;
  if (IsIntegerType(type_oid) && absl::SimpleAtoi(Absl(text), &n) &&
      (lookup || absl::StrCat(n) == Absl(text))) {
    out->push_back('\x01');
    uint64_t u = static_cast<uint64_t>(n) ^ (1ull << 63);
    for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(u >> shift));
    return;
  }
  out->push_back('\x02');
  for (char c : text) {
    out->push_back(c);
    if (c == '\0') out->push_back('\xff');
  }
  out->push_back('\0');
  out->push_back('\0');
}

// What a row weighs once stored: its allocation, and its share of the two indexes: a hash
// slot of 8 bytes and a control byte at absl's load factor (7/16 to 7/8: 10 to 21 bytes a
// row), and a B-tree slot of 8 bytes in 256-byte nodes kept mostly full (about 9).
constexpr uint64_t kIndexBytesPerRow = 28;
uint64_t HeldBytes(const KvRow& row) { return row.bytes() + kIndexBytesPerRow; }

std::string PendingId(const KvTable& table, std::string_view key) {
  return absl::StrCat(Absl(table.key_name()), absl::string_view("\0", 1), Absl(key));
}

}  // namespace

std::string KeyNameOf(std::string_view schema, std::string_view table) {
  if (schema == "public") return std::string(table);
  return absl::StrCat(Absl(schema), ".", Absl(table));
}

namespace {

// Lengths inside a row: 7 bits a byte, low bits first, the high bit set on all but the last.
size_t VarintSize(size_t n) {
  size_t size = 1;
  for (; n >= 0x80; n >>= 7) ++size;
  return size;
}

char* PutVarint(size_t n, char* w) {
  for (; n >= 0x80; n >>= 7) *w++ = static_cast<char>((n & 0x7f) | 0x80);
  *w++ = static_cast<char>(n);
  return w;
}

size_t GetVarint(const char** p) {
  size_t n = 0;
  for (int shift = 0;; shift += 7) {
    const auto byte = static_cast<unsigned char>(*(*p)++);
    n |= static_cast<size_t>(byte & 0x7f) << shift;
    if (byte < 0x80) return n;
  }
}

char* Put(std::string_view bytes, char* w) {
  std::memcpy(w, bytes.data(), bytes.size());
  return w + bytes.size();
}

constexpr std::string_view kJsonNull = "null";

}  // namespace

KvColumnNames::KvColumnNames(std::vector<std::string> names) : names_(std::move(names)) {
  for (const std::string& name : names_) {
    resp::AppendBulk(name, &resp_.emplace_back());
    std::string& key = json_key_.emplace_back();
    AppendJsonString(name, &key);
    key.push_back(':');
  }
}

size_t KvColumnNames::IndexOf(std::string_view name) const {
  for (size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return i;
  }
  return names_.size();
}

KvRow::Kind KvRow::KindOf(const Value& v) {
  if (v.json.empty()) return kAbsent;
  if (v.null) return kNull;
  if (v.json[0] != '"') return kRaw;
  return v.json.find('\\') == std::string::npos ? kString : kEscaped;
}

KvRowPtr KvRow::Make(std::string_view key, std::string_view sort_key, const KvColumnNames* names,
                     const std::vector<Value>& values, Lsn lsn) {
  const size_t n = names->size();
  std::string text;  // a string's text, for the rare one with escapes
  size_t data_size = key.size() + sort_key.size() + n;  // a kind byte per column
  size_t json_size = 2;                                 // {}
  uint32_t fields = 0;
  bool first = true;
  for (size_t i = 0; i < n; ++i) {
    const Value& v = values[i];
    const Kind kind = KindOf(v);
    if (kind == kAbsent) continue;
    json_size += (first ? 0 : 1) + names->json_key(i).size();
    first = false;
    if (kind == kNull) {
      json_size += kJsonNull.size();
      continue;
    }
    ++fields;
    json_size += v.json.size();
    data_size += VarintSize(v.json.size()) + v.json.size();
    if (kind == kEscaped) {
      text = JsonText(v.json);
      data_size += VarintSize(text.size()) + text.size();
    }
  }
  // Sizes are kept in 32 bits: a larger row (several values near PostgreSQL's 1 GB each) is
  // refused by the caller.
  if (data_size > UINT32_MAX || json_size > UINT32_MAX) return nullptr;
  void* memory = ::operator new(sizeof(KvRow) + data_size);
  auto* row = new (memory) KvRow();
  row->key_size_ = static_cast<uint32_t>(key.size());
  row->sort_key_size_ = static_cast<uint32_t>(sort_key.size());
  row->data_size_ = static_cast<uint32_t>(data_size);
  row->json_size_ = static_cast<uint32_t>(json_size);
  row->field_count_ = fields;
  row->lsn_ = lsn;
  row->names_ = names;
  char* w = static_cast<char*>(memory) + sizeof(KvRow);
  w = Put(key, w);
  w = Put(sort_key, w);
  for (size_t i = 0; i < n; ++i) {
    const Value& v = values[i];
    const Kind kind = KindOf(v);
    *w++ = static_cast<char>(kind);
    if (kind == kAbsent || kind == kNull) continue;
    w = PutVarint(v.json.size(), w);
    w = Put(v.json, w);
    if (kind == kEscaped) {
      text = JsonText(v.json);
      w = PutVarint(text.size(), w);
      w = Put(text, w);
    }
  }
  return KvRowPtr(row);
}

void KvRow::Unref() const {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  KvRow* self = const_cast<KvRow*>(this);
  self->~KvRow();
  ::operator delete(static_cast<void*>(self));
}

size_t KvRow::bytes() const {
  // glibc's malloc: the request plus an 8-byte size word, rounded up to 16, at least 32.
  return std::max<size_t>(32, (sizeof(KvRow) + data_size_ + 8 + 15) & ~size_t{15});
}

KvRow::Cell KvRow::ReadCell(const char** p) {
  Cell cell;
  cell.kind = static_cast<Kind>(*(*p)++);
  switch (cell.kind) {
    case kAbsent:
      return cell;
    case kNull:
      cell.json = kJsonNull;
      return cell;
    case kRaw:
    case kString:
    case kEscaped:
      break;
  }
  const size_t json_size = GetVarint(p);
  cell.json = std::string_view(*p, json_size);
  *p += json_size;
  if (cell.kind == kRaw) {
    cell.text = cell.json;
  } else if (cell.kind == kString) {
    cell.text = cell.json.substr(1, json_size - 2);
  } else {
    const size_t text_size = GetVarint(p);
    cell.text = std::string_view(*p, text_size);
    *p += text_size;
  }
  return cell;
}

KvRow::Cell KvRow::CellAt(size_t index) const {
  const char* p = cells();
  Cell cell;
  for (size_t i = 0; i <= index; ++i) cell = ReadCell(&p);
  return cell;
}

void KvRow::AppendJson(std::string* out) const {
  const size_t start = out->size();
  out->resize(start + json_size_);
  char* w = out->data() + start;
  *w++ = '{';
  const char* p = cells();
  bool first = true;
  for (size_t i = 0; i < names_->size(); ++i) {
    const Cell cell = ReadCell(&p);
    if (cell.kind == kAbsent) continue;
    if (!first) *w++ = ',';
    first = false;
    w = Put(names_->json_key(i), w);
    w = Put(cell.json, w);
  }
  *w = '}';
}

void KvRow::AppendRespJson(std::string* out) const {
  resp::AppendBulkHeader(json_size_, out);
  AppendJson(out);
  out->append("\r\n");
}

void KvRow::AppendRespFields(std::string* out) const {
  const char* p = cells();
  for (size_t i = 0; i < names_->size(); ++i) {
    const Cell cell = ReadCell(&p);
    if (cell.kind == kAbsent || cell.kind == kNull) continue;
    out->append(names_->resp(i));
    resp::AppendBulk(cell.text, out);
  }
}

bool KvRow::AppendFieldBulk(std::string_view name, std::string* out) const {
  const size_t i = names_->IndexOf(name);
  if (i == names_->size()) return false;
  const Cell cell = CellAt(i);
  if (cell.kind == kAbsent || cell.kind == kNull) return false;
  resp::AppendBulk(cell.text, out);
  return true;
}

std::optional<KvColumn> KvRow::column(size_t i) const {
  if (i >= column_count()) return std::nullopt;
  const Cell cell = CellAt(i);
  if (cell.kind == kAbsent) return std::nullopt;
  return KvColumn{(*names_)[i], cell.json, cell.text, cell.kind == kNull};
}

std::optional<KvColumn> KvRow::Column(std::string_view name) const {
  return column(names_->IndexOf(name));
}

std::optional<KvColumn> KvRow::Find(std::string_view name) const {
  std::optional<KvColumn> c = Column(name);
  if (c.has_value() && c->null) return std::nullopt;
  return c;
}

std::optional<std::string_view> KvRow::Field(std::string_view name) const {
  std::optional<KvColumn> c = Find(name);
  if (!c.has_value()) return std::nullopt;
  return c->text;
}

KvTable::KvTable(std::string schema, std::string name)
    : schema_(std::move(schema)), name_(std::move(name)), key_name_(KeyNameOf(schema_, name_)) {}

RwLock::RwLock() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&lock_, &attr);
  pthread_rwlockattr_destroy(&attr);
}

RwLock::~RwLock() { pthread_rwlock_destroy(&lock_); }

size_t KvTable::HashOf(std::string_view key) {
  // The hash flat_hash_map<std::string, ...> computes for a string key.
  return absl::Hash<absl::string_view>()(Absl(key));
}

KvRowPtr KvTable::Get(std::string_view key) const {
  const size_t hash = HashOf(key);
  const Shard& shard = shards_[ShardOfHash(hash)];
  ReadLock lock(&shard.mu);
  auto it = shard.rows.find(key, hash);
  return it == shard.rows.end() ? nullptr : *it;
}

TableSchemaPtr KvTable::shape() const {
  absl::ReaderMutexLock lock(&shape_mu_);
  return shape_;
}

std::string KvTable::SortKeyOf(std::string_view key) const {
  TableSchemaPtr shape = this->shape();
  std::string out;
  if (shape == nullptr) return out;
  std::vector<uint32_t> types;
  for (const Column& c : shape->columns) {
    if (c.is_key) types.push_back(c.type_oid);
  }
  // Split into as many parts as there are key columns; the last part keeps any further ':'.
  size_t start = 0;
  for (size_t i = 0; i < types.size(); ++i) {
    size_t end = i + 1 == types.size() ? key.size() : key.find(':', start);
    if (end == std::string_view::npos) end = key.size();
    AppendSortPart(types[i], key.substr(start, end - start), /*lookup=*/true, &out);
    start = std::min(key.size(), end + 1);
  }
  return out;
}

std::vector<KvRowPtr> KvTable::Page(std::string_view after, size_t limit, bool* more) const {
  // After a row that exists (the `next` of the page before), from that row's own sort key: a
  // key not written as its integer is usually written ("+5") sorts by its bytes, not as 5.
  std::string from;
  if (!after.empty()) {
    KvRowPtr row = Get(after);
    from = row != nullptr ? std::string(row->sort_key()) : SortKeyOf(after);
  }
  std::vector<KvRowPtr> out;
  absl::ReaderMutexLock lock(&order_mu_);
  auto it = after.empty() ? order_.begin() : order_.upper_bound(std::string_view(from));
  for (; it != order_.end() && out.size() < limit; ++it) out.push_back(*it);
  *more = it != order_.end();
  return out;
}

std::vector<KvRowPtr> KvTable::ScanFrom(const std::string& from_sort_key, size_t limit,
                                        std::string* next_sort_key) const {
  std::vector<KvRowPtr> out;
  absl::ReaderMutexLock lock(&order_mu_);
  auto it = order_.lower_bound(std::string_view(from_sort_key));
  for (; it != order_.end() && out.size() < limit; ++it) out.push_back(*it);
  if (it == order_.end()) {
    next_sort_key->clear();
  } else {
    next_sort_key->assign((*it)->sort_key());
  }
  return out;
}

KvStore::KvStore(KvStoreOptions options) : options_(std::move(options)) {}

std::shared_ptr<const KvTable> KvStore::FindTable(std::string_view key_name) const {
  absl::ReaderMutexLock lock(&tables_mu_);
  auto it = tables_.find(Absl(key_name));
  return it == tables_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const KvTable>> KvStore::Tables() const {
  std::vector<std::shared_ptr<const KvTable>> out;
  {
    absl::ReaderMutexLock lock(&tables_mu_);
    for (const auto& [name, table] : tables_) out.push_back(table);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->key_name() < b->key_name(); });
  return out;
}

const KvTable* KvStore::FindTable(std::string_view key_name, TableCache* cache) const {
  if (cache != nullptr && cache->table != nullptr && cache->name == key_name) return cache->table;
  std::shared_ptr<const KvTable> table = FindTable(key_name);
  // The store keeps its own reference for as long as it lives: the address stays valid.
  if (cache != nullptr && table != nullptr) {
    cache->name.assign(key_name);
    cache->table = table.get();
  }
  return table.get();
}

KvRowPtr KvStore::Lookup(std::string_view redis_key, std::string_view publication,
                         TableCache* cache) const {
  size_t colon = redis_key.find(':');
  if (colon != std::string_view::npos) {
    if (const KvTable* table = FindTable(redis_key.substr(0, colon), cache)) {
      return table->Get(redis_key.substr(colon + 1));
    }
  }
  // PGEC's form: <publication>.<table>.<key>, where <table> may itself hold a dot.
  if (!publication.empty() && redis_key.size() > publication.size() + 1 &&
      redis_key.substr(0, publication.size()) == publication &&
      redis_key[publication.size()] == '.') {
    std::string_view rest = redis_key.substr(publication.size() + 1);
    for (size_t dot = rest.find('.'); dot != std::string_view::npos;
         dot = rest.find('.', dot + 1)) {
      if (const KvTable* table = FindTable(rest.substr(0, dot), cache)) {
        return table->Get(rest.substr(dot + 1));
      }
    }
  }
  return nullptr;
}

void KvStore::LookupMany(std::span<const std::string_view> redis_keys, std::string_view publication,
                         TableCache* cache, std::vector<KvRowPtr>* rows) const {
  rows->clear();
  if (redis_keys.size() == 1) {  // one lookup is one moment already
    rows->push_back(Lookup(redis_keys[0], publication, cache));
    return;
  }
  rows->reserve(redis_keys.size());
  ReadLock lock(&commit_mu_);
  for (std::string_view key : redis_keys) rows->push_back(Lookup(key, publication, cache));
}

uint64_t KvStore::TotalRows() const {
  uint64_t n = 0;
  absl::ReaderMutexLock lock(&tables_mu_);
  for (const auto& [name, table] : tables_) n += table->rows();
  return n;
}

void KvStore::SetCommitListener(std::function<void(const std::vector<KeyEvent>&)> listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

std::shared_ptr<KvTable> KvStore::TableFor(const TableSchema& schema) {
  std::string key_name = KeyNameOf(schema.schema, schema.name);
  std::shared_ptr<KvTable> table;
  {
    absl::ReaderMutexLock lock(&tables_mu_);
    auto it = tables_.find(key_name);
    if (it != tables_.end()) table = it->second;
  }
  if (table == nullptr) {
    absl::MutexLock lock(&tables_mu_);
    auto& slot = tables_[key_name];
    if (slot == nullptr) slot = std::make_shared<KvTable>(schema.schema, schema.name);
    table = slot;
  }
  return table;
}

KvRowPtr KvStore::Current(const KvTable& table, const std::string& key) const {
  auto it = pending_index_.find(PendingId(table, key));
  if (it != pending_index_.end()) return pending_[it->second].row;
  if (pending_truncates_.contains(&table)) return nullptr;
  return table.Get(key);
}

std::string MissingSelectedColumns(const TableSchema& schema,
                                   const std::vector<std::string>& selected) {
  std::vector<std::string> missing;
  std::vector<std::string> present;
  for (const Column& c : schema.columns) present.push_back(c.name);
  for (const std::string& name : selected) {
    if (std::find(present.begin(), present.end(), name) == present.end()) {
      missing.push_back(name);
    }
  }
  if (missing.empty()) return "";
  return absl::StrCat("columns (of ", schema.QualifiedName(), ") names ",
                      absl::StrJoin(missing, ", "), ", which the table does not have (its columns: ",
                      absl::StrJoin(present, ", "), ")");
}

absl::Status KvStore::CheckSelectedColumns(const TableSchema& schema,
                                           const std::vector<std::string>& selected) {
  if (!columns_checked_.insert({schema.relation_id, schema.version}).second) {
    return absl::OkStatus();
  }
  const bool first_version = columns_checked_tables_.insert(schema.relation_id).second;
  const std::string what = MissingSelectedColumns(schema, selected);
  if (what.empty()) return absl::OkStatus();
  if (first_version) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": correct the sink's kv.columns"));
  }
  // Dropped by a schema change while running: the cache goes on with the columns left.
  LogWarning("kv cache: %s since a schema change; the cache keeps the others", what);
  return absl::OkStatus();
}

const KvColumnNames* KvStore::NamesFor(const KvTable& table, const TableSchema& schema,
                                       const std::vector<std::string>* selected) {
  auto cached_column = [&](const Column& c) {
    return selected == nullptr || c.is_key ||
           std::find(selected->begin(), selected->end(), c.name) != selected->end();
  };
  const KvColumnNames*& names = names_[&table];
  if (names != nullptr) {  // the same as the last row's?
    size_t at = 0;
    bool same = true;
    for (const Column& c : schema.columns) {
      if (!cached_column(c)) continue;
      if (at == names->size() || (*names)[at] != c.name) {
        same = false;
        break;
      }
      ++at;
    }
    if (same && at == names->size()) return names;
  }
  std::vector<std::string> fresh;
  for (const Column& c : schema.columns) {
    if (cached_column(c)) fresh.push_back(c.name);
  }
  // A set made before (rows of two shapes can alternate, as a snapshot's with the stream's
  // after a column was added) is shared again rather than made anew each time.
  for (const std::unique_ptr<const KvColumnNames>& made : all_names_) {
    if (made->names() == fresh) return names = made.get();
  }
  names = all_names_.emplace_back(std::make_unique<KvColumnNames>(std::move(fresh))).get();
  return names;
}

absl::StatusOr<KvStore::Pending> KvStore::Encode(const std::shared_ptr<KvTable>& table,
                                                 const TableSchema& schema, const Row& row,
                                                 const Row* key_source, bool delete_op, Lsn lsn) {
  Pending p;
  p.table = table;
  const Row& keys = key_source != nullptr ? *key_source : row;
  bool first = true;
  bool any_key = false;
  std::string json;
  for (size_t i = 0; i < schema.columns.size() && i < keys.size(); ++i) {
    const Column& column = schema.columns[i];
    if (!column.is_key) continue;
    const Value& v = keys[i];
    if (v.is_unchanged_toast()) {
      return absl::DataLossError(absl::StrCat("key column ", column.name, " of ",
                                              schema.QualifiedName(), " arrived without a value"));
    }
    json.clear();
    if (!v.is_null()) AppendJsonValue(v, column.type_name, options_.json, &json);
    std::string text = v.is_null() ? std::string() : JsonText(json);
    if (!first) p.key.push_back(':');
    first = false;
    any_key = true;
    p.key += text;
    AppendSortPart(column.type_oid, text, /*lookup=*/false, &p.sort_key);
  }
  p.hash = KvTable::HashOf(p.key);
  if (!any_key) {
    return absl::FailedPreconditionError(absl::StrCat(
        "table ", schema.QualifiedName(),
        " has no primary key and REPLICA IDENTITY is not FULL: the kv cache keys rows by "
        "primary key; add one (or set REPLICA IDENTITY FULL)"));
  }
  if (delete_op) return p;

  const std::vector<std::string>* selected = nullptr;
  if (auto it = options_.columns.find(schema.QualifiedName()); it != options_.columns.end()) {
    selected = &it->second;
    if (absl::Status s = CheckSelectedColumns(schema, *selected); !s.ok()) return s;
  }
  KvRowPtr old;
  const KvColumnNames* names = NamesFor(*table, schema, selected);
  std::vector<KvRow::Value> values(names->size());
  size_t at = 0;
  for (size_t i = 0; i < schema.columns.size() && at < names->size(); ++i) {
    const Column& column = schema.columns[i];
    if ((*names)[at] != column.name) continue;  // not cached (NamesFor chose the columns)
    KvRow::Value& out = values[at++];
    if (i >= row.size()) continue;  // not in the row: absent
    const Value& v = row[i];
    if (v.is_unchanged_toast()) {
      // Not sent because it did not change: the cached value is still current.
      if (old == nullptr) old = Current(*table, p.key);
      std::optional<KvColumn> previous =
          old != nullptr ? old->Column(column.name) : std::optional<KvColumn>();
      if (!previous.has_value()) continue;  // unknown: left out rather than made up
      out.json = std::string(previous->json);
      out.null = previous->null;
    } else if (v.is_null()) {
      out.json = "null";
      out.null = true;
    } else {
      AppendJsonValue(v, column.type_name, options_.json, &out.json);
    }
  }
  p.row = KvRow::Make(p.key, p.sort_key, names, values, lsn);
  if (p.row == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a row of ", schema.QualifiedName(), " (key ", p.key,
                     ") is larger than the kv cache keeps (4 GiB as JSON): leave its largest "
                     "columns out with the sink's kv.columns"));
  }
  return p;
}

absl::Status KvStore::Stage(const Change& change) {
  if (change.table == nullptr) return absl::OkStatus();
  const TableSchema& schema = *change.table;
  std::shared_ptr<KvTable> table = TableFor(schema);
  {
    absl::MutexLock lock(&table->shape_mu_);
    if (table->shape_ != change.table) table->shape_ = change.table;
  }
  std::vector<Pending> staged;
  switch (change.op) {
    case Op::kRead:
    case Op::kInsert:
    case Op::kUpdate: {
      absl::StatusOr<Pending> p =
          Encode(table, schema, change.after, nullptr, false, change.txn.commit_lsn);
      if (!p.ok()) return p.status();
      if (change.op == Op::kUpdate && change.before_kind != BeforeKind::kNone) {
        absl::StatusOr<Pending> old =
            Encode(table, schema, change.before, &change.before, true, change.txn.commit_lsn);
        if (!old.ok()) return old.status();
        if (old->key != p->key) staged.push_back(*std::move(old));  // the key changed
      }
      staged.push_back(*std::move(p));
      break;
    }
    case Op::kDelete: {
      if (change.before_kind == BeforeKind::kNone) return absl::OkStatus();
      absl::StatusOr<Pending> p =
          Encode(table, schema, change.before, &change.before, true, change.txn.commit_lsn);
      if (!p.ok()) return p.status();
      staged.push_back(*std::move(p));
      break;
    }
    case Op::kTruncate: {
      Pending p;
      p.table = table;
      p.truncate = true;
      staged.push_back(std::move(p));
      break;
    }
    case Op::kDdl:
    case Op::kMessage:
      return absl::OkStatus();
  }

  // Memory: what the rows will weigh once applied. A truncate takes away what the table
  // holds and what this transaction staged for it so far.
  auto staged_for_table = pending_table_bytes_.find(table.get());
  const int64_t table_delta =
      staged_for_table == pending_table_bytes_.end() ? 0 : staged_for_table->second;
  int64_t delta = 0;
  for (const Pending& p : staged) {
    if (p.truncate) {
      delta = -(static_cast<int64_t>(table->bytes_.load()) + table_delta);  // (staged alone)
      continue;
    }
    KvRowPtr old = Current(*table, p.key);
    if (old != nullptr) delta -= static_cast<int64_t>(HeldBytes(*old));
    if (p.row != nullptr) delta += static_cast<int64_t>(HeldBytes(*p.row));
  }
  int64_t after = static_cast<int64_t>(bytes_.load()) + pending_bytes_ + delta;
  if (delta > 0 && after > static_cast<int64_t>(options_.max_memory)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the cache would exceed its memory limit (max_memory ", options_.max_memory,
        " bytes) at table ", schema.QualifiedName(), " with ", TotalRows(),
        " rows held: raise max_memory, or cache fewer tables or columns; the cache stops "
        "rather than serve a partial table"));
  }
  pending_bytes_ += delta;
  pending_table_bytes_[table.get()] += delta;

  for (Pending& p : staged) {
    if (p.truncate) {
      pending_truncates_.insert(table.get());
      for (auto it = pending_index_.begin(); it != pending_index_.end();) {
        auto next = std::next(it);
        if (pending_[it->second].table == table) pending_index_.erase(it);
        it = next;
      }
      pending_.push_back(std::move(p));
      continue;
    }
    std::string id = PendingId(*table, p.key);
    auto it = pending_index_.find(id);
    if (it != pending_index_.end()) {
      pending_[it->second] = std::move(p);
    } else {
      pending_index_.emplace(std::move(id), pending_.size());
      pending_.push_back(std::move(p));
    }
  }
  return absl::OkStatus();
}

void KvStore::Discard() {
  // A large transaction's staging memory is given back; a snapshot batch's is kept for the next.
  constexpr size_t kKeptStaging = 8192;
  if (pending_.capacity() > kKeptStaging) {
    std::vector<Pending>().swap(pending_);
    absl::flat_hash_map<std::string, size_t>().swap(pending_index_);
  } else {
    pending_.clear();
    pending_index_.clear();
  }
  pending_truncates_.clear();
  pending_table_bytes_.clear();
  pending_bytes_ = 0;
}

void KvStore::SetReady() {
  ready_.store(true, std::memory_order_release);
  RequestTrim();
}

void KvStore::RequestTrim() {
  // The latest request counts: the delay is for the frees that follow it.
  trim_requested_.store(std::chrono::steady_clock::now().time_since_epoch().count());
}

bool KvStore::TrimDue() {
  const int64_t requested = trim_requested_.load();
  if (requested == 0) return false;
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  if (now - requested < std::chrono::nanoseconds(kTrimDelay).count()) return false;
  int64_t expected = requested;
  return trim_requested_.compare_exchange_strong(expected, 0);
}

void KvStore::NotePosition(Lsn position) {
  uint64_t current = applied_.load(std::memory_order_relaxed);
  if (position.value > current) applied_.store(position.value, std::memory_order_release);
}

absl::Status KvStore::Commit(Lsn end) {
  if (pending_.empty()) {
    NotePosition(end);
    return absl::OkStatus();
  }
  // Every lock the changes touch, in one global order: tables by address, shards by index.
  std::vector<KvTable*> tables;
  std::vector<std::pair<KvTable*, size_t>> shards;
  for (const Pending& p : pending_) {
    tables.push_back(p.table.get());
    if (p.truncate) {
      for (size_t i = 0; i < KvTable::kShards; ++i) shards.emplace_back(p.table.get(), i);
    } else {
      shards.emplace_back(p.table.get(), KvTable::ShardOfHash(p.hash));
    }
  }
  std::sort(tables.begin(), tables.end());
  tables.erase(std::unique(tables.begin(), tables.end()), tables.end());
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());

  const bool notify = keyspace_listeners_.load(std::memory_order_relaxed) > 0;
  std::vector<KeyEvent> events;
  std::vector<KvRowPtr> released;  // freed after the locks are dropped
  released.reserve(pending_.size());
  {
    WriteLock commit_lock(&commit_mu_);
    for (KvTable* t : tables) t->order_mu_.Lock();
    for (auto& [t, i] : shards) t->shards_[i].mu.Lock();
    for (Pending& p : pending_) {
      KvTable& t = *p.table;
      if (p.truncate) {
        for (KvTable::Shard& s : t.shards_) {
          for (const KvRowPtr& row : s.rows) released.push_back(row);
          s.rows.clear();
        }
        t.order_.clear();
        t.bytes_.store(0);
        continue;
      }
      auto& rows = t.shards_[KvTable::ShardOfHash(p.hash)].rows;
      if (auto it = rows.find(std::string_view(p.key), p.hash); it != rows.end()) {
        const KvRowPtr& old = *it;
        t.bytes_.fetch_sub(HeldBytes(*old));
        // Its sort key, not p's: a change of the key columns' types may have changed it.
        if (auto at = t.order_.find(old->sort_key()); at != t.order_.end()) t.order_.erase(at);
        released.push_back(old);
        rows.erase(it);
      }
      if (p.row != nullptr) {
        t.bytes_.fetch_add(HeldBytes(*p.row));
        t.order_.insert(p.row);
        rows.insert(p.row);
      }
      if (notify) events.push_back(KeyEvent{absl::StrCat(t.key_name_, ":", p.key), !p.row});
    }
    for (KvTable* t : tables) t->rows_.store(t->order_.size(), std::memory_order_relaxed);
    for (auto it = shards.rbegin(); it != shards.rend(); ++it)
      it->first->shards_[it->second].mu.Unlock();
    for (auto it = tables.rbegin(); it != tables.rend(); ++it) (*it)->order_mu_.Unlock();
    bytes_.fetch_add(static_cast<uint64_t>(pending_bytes_));
    NotePosition(end);
  }
  // A commit that let go of many rows (a truncate, a large delete) leaves pages to give back.
  constexpr int64_t kTrimAfterRelease = int64_t{64} << 20;
  const bool shrank = pending_bytes_ < -kTrimAfterRelease;
  Discard();
  released.clear();
  if (shrank) RequestTrim();
  if (!events.empty()) {
    absl::MutexLock lock(&listener_mu_);
    if (listener_) listener_(events);
  }
  return absl::OkStatus();
}

}  // namespace pgflow
