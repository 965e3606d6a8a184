#pragma once

// The shop the documents' unit tests describe: orders with their customer and their lines, each
// line with its product, and the catalog of its four tables.

#include "documents/document_sql.h"
#include "schemas/table_schema.h"

namespace pgflow::documents::testdata {

inline constexpr char kOrders[] = R"yaml(
orders:
  table: public.orders
  fields: [id, placed_at, status]
  children:
    customer: {table: public.customers, on: {id: customer_id}, one: true, fields: [name, email]}
    lines:
      table: public.order_lines
      on: {order_id: id}
      fields: [sku, qty]
      children:
        product: {table: public.products, on: {id: sku}, one: true, fields: [title]}
)yaml";

inline Catalog ShopCatalog() {
  auto col = [](std::string name, uint32_t type, bool key = false) {
    return Column{std::move(name), type, -1, key, ""};
  };
  Catalog catalog;
  catalog["public.orders"] = {{"id"},
                              {{"id", "integer"},
                               {"customer_id", "integer"},
                               {"placed_at", "timestamp with time zone"},
                               {"status", "text"}},
                              {col("id", oid::kInt4, true), col("customer_id", oid::kInt4),
                               col("placed_at", oid::kTimestamptz), col("status", oid::kText)}};
  catalog["public.customers"] = {
      {"id"},
      {{"id", "integer"}, {"name", "text"}, {"email", "text"}},
      {col("id", oid::kInt4, true), col("name", oid::kText), col("email", oid::kText)}};
  catalog["public.order_lines"] = {
      {"order_id", "line"},
      {{"order_id", "integer"}, {"line", "integer"}, {"sku", "text"}, {"qty", "integer"}},
      {col("order_id", oid::kInt4, true), col("line", oid::kInt4, true), col("sku", oid::kText),
       col("qty", oid::kInt4)}};
  catalog["public.products"] = {{"id"},
                                {{"id", "text"}, {"title", "text"}},
                                {col("id", oid::kText, true), col("title", oid::kText)}};
  return catalog;
}

}  // namespace pgflow::documents::testdata
