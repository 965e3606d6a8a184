#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "schemas/table_schema.h"

namespace pgflow {

// The relations and types a replication stream has described so far, by OID. pgoutput sends
// a Relation message before the first change of a relation in a session and again whenever
// its definition changes; each different shape becomes a new immutable TableSchema version,
// so events decoded earlier keep pointing at the shape they were decoded with.
//
// Not thread-safe: owned by the source's thread.
class Catalog {
 public:
  // Records a relation's current shape and returns the version to decode its changes with:
  // the existing one if the shape is unchanged, else a new version (previous version + 1).
  // Column type names are filled from earlier Type messages.
  TableSchemaPtr UpdateRelation(TableSchema relation);

  // Records a non-built-in type's name ("schema.name") from a Type message.
  void UpdateType(uint32_t type_oid, std::string qualified_name);

  // The current version of a relation, or null if no Relation message described it yet.
  TableSchemaPtr Find(uint32_t relation_id) const;

  // Forgets a dropped relation (a captured DROP TABLE): its OID may name another one later.
  void Forget(uint32_t relation_id) { relations_.erase(relation_id); }

 private:
  absl::flat_hash_map<uint32_t, TableSchemaPtr> relations_;
  absl::flat_hash_map<uint32_t, std::string> type_names_;
};

}  // namespace pgflow
