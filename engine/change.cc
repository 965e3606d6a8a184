#include "engine/change.h"

namespace pgflow {

const char* OpName(Op op) {
  switch (op) {
    case Op::kRead:
      return "read";
    case Op::kInsert:
      return "insert";
    case Op::kUpdate:
      return "update";
    case Op::kDelete:
      return "delete";
    case Op::kTruncate:
      return "truncate";
    case Op::kDdl:
      return "ddl";
    case Op::kMessage:
      return "message";
  }
  return "unknown";
}

size_t Event::ApproximateBytes() const {
  size_t n = sizeof(Event);
  if (kind == EventKind::kRawRows) return n + change.content.size();
  if (kind != EventKind::kChange) return n;
  for (const Value& v : change.after) n += sizeof(Value) + v.data.size();
  for (const Value& v : change.before) n += sizeof(Value) + v.data.size();
  return n + change.prefix.size() + change.content.size();
}

}  // namespace pgflow
