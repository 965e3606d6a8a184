#pragma once

// The net effect of a run of changes on the rows of one keyed table: for each key, the one
// thing a target must do to reach the state after all of them, whatever they were.
//
//   insert 7, update 7, update 7   ->  upsert 7 (with the values of the last update)
//   insert 8, delete 8             ->  delete 8
//   update 9 (a TOASTed value unchanged), update 9  ->  update 9 (the columns either one set)
//
// Applying the net changes of different keys in any order gives the same final state as
// applying the changes in stream order, as long as the key is the table's only uniqueness
// rule. (How the postgres sink uses it: sinks/postgres/README.md, "Folding".)
//
// A change whose key it cannot follow is refused (Fold returns false, nothing changes): an
// update that moves a row to another key while some of its values are unknown (unchanged
// TOAST, which only the row in the target still holds). The caller then sends what is held
// and applies that change on its own.

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/change.h"

namespace pgflow {

class NetChanges {
 public:
  enum class Kind : uint8_t {
    kUpsert,  // `row` is the whole new row: insert it, or replace the row with its key
    kUpdate,  // `row` is the new row, some values unknown (unchanged TOAST): set the others
    kDelete,  // `row` holds the key: delete the row with that key, if any
  };
  struct Entry {
    Kind kind;
    std::string key;  // KeyOf(row)
    Row row;
    // kUpsert: the row was deleted first (or updated after its delete), so it replaces
    // whatever the target holds rather than updating it: a DELETE goes before the upsert, so
    // that columns an upsert does not set (GENERATED ALWAYS identities, the target's own
    // columns) come out as a fresh insert makes them.
    bool replaces = false;
  };

  // `key` lists the columns of the table's key, in key order. REQUIRES: not empty.
  explicit NetChanges(std::vector<size_t> key) : key_(std::move(key)) {}

  // The key values of `row` as one string that tells keys apart; none when a key value is
  // missing (null, an unchanged TOAST value, or a row too short).
  static std::optional<std::string> KeyOf(const std::vector<size_t>& key, const Row& row);

  // Folds one insert, read, update or delete in, after every change folded so far. `before`
  // is the change's old key or old row (`before_kind`), `after` the new row; both have one
  // value per column. Returns false, holding what it held, when the change cannot be folded
  // (see above) or its key values are missing.
  bool Fold(const Change& change);

  // Folds in `later`, the net changes of what came after everything folded so far (the next
  // source transaction), and empties it. Never fails: `later` holds no key-moving update
  // that Fold would refuse here.
  void Absorb(NetChanges& later);

  // Entries in the order their keys were first seen. Moving rows out of them is allowed
  // just before Clear().
  std::vector<Entry>& entries() { return entries_; }
  const std::vector<Entry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  void Clear();

 private:
  // Folds an update of the row with key `key` to the values `after` (some perhaps unknown).
  void FoldUpdate(const std::string& key, Row after);
  // Makes `kind` and `row` the entry of `key`, whatever it was; `replaces` is or-ed with what
  // the entry's history implies.
  void Set(const std::string& key, Kind kind, Row row, bool replaces = false);
  Entry* Find(const std::string& key);

  std::vector<size_t> key_;
  std::vector<Entry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;  // key string -> position in entries_
};

}  // namespace pgflow
