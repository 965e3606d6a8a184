#include "sinks/postgres/net_changes.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace pgflow {
namespace {

bool AllKnown(const Row& row) {
  return std::none_of(row.begin(), row.end(),
                      [](const Value& v) { return v.is_unchanged_toast(); });
}

// `base` with every value `newer` knows replaced by it.
void Overlay(Row& base, Row&& newer) {
  for (size_t i = 0; i < base.size() && i < newer.size(); ++i) {
    if (!newer[i].is_unchanged_toast()) base[i] = std::move(newer[i]);
  }
}

}  // namespace

std::optional<std::string> NetChanges::KeyOf(const std::vector<size_t>& key, const Row& row) {
  std::string out;
  for (size_t i : key) {
    if (i >= row.size() || row[i].is_null() || row[i].is_unchanged_toast()) return std::nullopt;
    absl::StrAppend(&out, row[i].data.size(), ":", row[i].data, ";");
  }
  return out;
}

NetChanges::Entry* NetChanges::Find(const std::string& key) {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void NetChanges::Set(const std::string& key, Kind kind, Row row, bool replaces) {
  if (Entry* entry = Find(key)) {
    replaces =
        kind == Kind::kUpsert && (replaces || entry->kind == Kind::kDelete || entry->replaces);
    entry->kind = kind;
    entry->row = std::move(row);
    entry->replaces = replaces;
    return;
  }
  index_.emplace(key, entries_.size());
  entries_.push_back(Entry{kind, key, std::move(row), kind == Kind::kUpsert && replaces});
}

void NetChanges::FoldUpdate(const std::string& key, Row after) {
  Entry* entry = Find(key);
  if (entry == nullptr || entry->kind == Kind::kDelete) {
    // A row with every value known is upserted: if the target lacks it (a snapshot copied
    // after the change, a row deleted before), that is what applying the update one row at a
    // time converges to as well. An update of a row deleted earlier, with values unknown,
    // leaves it deleted: there is nothing to update.
    if (AllKnown(after)) {
      Set(key, Kind::kUpsert, std::move(after));
    } else if (entry == nullptr) {
      Set(key, Kind::kUpdate, std::move(after));
    }
    return;
  }
  Overlay(entry->row, std::move(after));
  if (entry->kind == Kind::kUpdate && AllKnown(entry->row)) entry->kind = Kind::kUpsert;
}

bool NetChanges::Fold(const Change& change) {
  switch (change.op) {
    case Op::kRead:
    case Op::kInsert: {
      std::optional<std::string> key = KeyOf(key_, change.after);
      if (!key.has_value() || !AllKnown(change.after)) return false;
      Set(*key, Kind::kUpsert, change.after);
      return true;
    }
    case Op::kDelete: {
      if (change.before_kind == BeforeKind::kNone) return false;
      std::optional<std::string> key = KeyOf(key_, change.before);
      if (!key.has_value()) return false;
      Set(*key, Kind::kDelete, change.before);
      return true;
    }
    case Op::kUpdate: {
      std::optional<std::string> key = KeyOf(key_, change.after);
      if (!key.has_value()) return false;
      std::optional<std::string> old_key = key;
      if (change.before_kind != BeforeKind::kNone) old_key = KeyOf(key_, change.before);
      if (!old_key.has_value()) return false;
      if (*old_key == *key) {
        FoldUpdate(*key, change.after);
        return true;
      }
      // The row moves to another key: delete the old one and upsert the new, which needs
      // every value, from the change or from what is held for the old key.
      Row row = change.after;
      if (!AllKnown(row)) {
        const Entry* old_entry = Find(*old_key);
        if (old_entry == nullptr || old_entry->kind == Kind::kDelete) return false;
        Row filled = old_entry->row;
        Overlay(filled, std::move(row));
        if (!AllKnown(filled)) return false;
        row = std::move(filled);
      }
      Set(*old_key, Kind::kDelete, change.before);
      Set(*key, Kind::kUpsert, std::move(row));
      return true;
    }
    case Op::kTruncate:
    case Op::kDdl:
    case Op::kMessage:
      break;
  }
  return false;
}

void NetChanges::Absorb(NetChanges& later) {
  for (Entry& e : later.entries_) {
    if (e.kind == Kind::kUpdate) {
      FoldUpdate(e.key, std::move(e.row));
    } else {
      Set(e.key, e.kind, std::move(e.row), e.replaces);
    }
  }
  later.Clear();
}

void NetChanges::Clear() {
  entries_.clear();
  index_.clear();
}

}  // namespace pgflow
