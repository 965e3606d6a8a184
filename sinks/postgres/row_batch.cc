#include "sinks/postgres/row_batch.h"

#include <utility>

namespace pgflow {

size_t RowBatch::size() const {
  switch (kind_) {
    case Kind::kRead:
      return tuple_rows_;
    case Kind::kUpdate:
      return updates_.size();
    case Kind::kUpsert:
    case Kind::kDelete:
      break;
  }
  return rows_.size();
}

void RowBatch::AddTuple(const Row& row) {
  auto append16 = [&](uint16_t v) {
    tuples_.push_back(static_cast<char>(v >> 8));
    tuples_.push_back(static_cast<char>(v));
  };
  auto append32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) tuples_.push_back(static_cast<char>(v >> shift));
  };
  append16(static_cast<uint16_t>(row.size()));
  for (const Value& v : row) {
    if (v.is_null()) {
      append32(0xFFFFFFFFu);
      continue;
    }
    append32(static_cast<uint32_t>(v.data.size()));
    tuples_.append(v.data);
  }
  ++tuple_rows_;
}

RowBatch RowBatch::Take() {
  RowBatch taken = std::move(*this);
  Clear();
  return taken;
}

void RowBatch::Clear() {
  table_ = nullptr;
  schema_ = nullptr;
  rows_.clear();
  updates_.clear();
  columns_.clear();
  tuples_.clear();
  tuple_rows_ = 0;
  keys_.clear();
}

}  // namespace pgflow
