#pragma once

#include <string>
#include <vector>

#include "engine/change.h"

namespace pgflow {

// The parameters of one statement, in libpq's form (values, lengths, formats). They point into
// the strings and Values they were added from, which must outlive every use of the
// parameters; nothing is copied.
class StatementParams {
 public:
  // A text parameter: `text`.
  void AddText(const std::string& text) {
    values_.push_back(text.c_str());
    lengths_.push_back(static_cast<int>(text.size()));
    formats_.push_back(0);
  }
  // `v` as it is: NULL, its text, or its binary form.
  void Add(const Value& v) {
    if (v.is_null()) {
      values_.push_back(nullptr);
      lengths_.push_back(0);
      formats_.push_back(0);
    } else {
      values_.push_back(v.data.c_str());
      lengths_.push_back(static_cast<int>(v.data.size()));
      formats_.push_back(v.kind == ValueKind::kBinary ? 1 : 0);
    }
  }
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

}  // namespace pgflow
