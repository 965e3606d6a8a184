#include "schemas/catalog.h"

#include <utility>

namespace pgflow {

TableSchemaPtr Catalog::UpdateRelation(TableSchema relation) {
  for (Column& column : relation.columns) {
    auto type = type_names_.find(column.type_oid);
    if (type != type_names_.end()) column.type_name = type->second;
  }
  auto it = relations_.find(relation.relation_id);
  if (it != relations_.end()) {
    if (it->second->SameShape(relation)) return it->second;
    relation.version = it->second->version + 1;
  } else {
    relation.version = 1;
  }
  auto schema = std::make_shared<const TableSchema>(std::move(relation));
  relations_[schema->relation_id] = schema;
  return schema;
}

void Catalog::UpdateType(uint32_t type_oid, std::string qualified_name) {
  type_names_[type_oid] = std::move(qualified_name);
}

TableSchemaPtr Catalog::Find(uint32_t relation_id) const {
  auto it = relations_.find(relation_id);
  return it == relations_.end() ? nullptr : it->second;
}

}  // namespace pgflow
