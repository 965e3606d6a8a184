#include "transformers/lua.h"

#include <lua.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "transformers/lua_vm.h"
#include "transformers/table_patterns.h"
#include "transformers/value_text.h"

// Lua reports errors with longjmp (Debian's liblua5.4 is C). Every call into Lua that may raise
// one (anything that allocates, or runs Lua code) is made inside lua_pcall, from C functions
// whose frames hold only trivially destructible locals, so that a jump never skips a C++
// destructor; the calls made outside (reading the function's result) are raw reads that
// neither allocate nor run metamethods.

namespace pgflow {
namespace {

// Table versions remembered before starting over (a few per table: one per schema change).
constexpr size_t kMaxPlans = 4096;
// int8 values within this magnitude are Lua numbers (exact as doubles too, should the script
// mix them with floats); larger ones are strings.
constexpr int64_t kMaxExactInteger = int64_t{1} << 53;

// How a column's values look in Lua.
enum class LuaKind : uint8_t { kText, kBool, kInt2, kInt4, kInt8, kFloat4, kFloat8 };

LuaKind KindOf(uint32_t type_oid) {
  switch (type_oid) {
    case oid::kBool:
      return LuaKind::kBool;
    case oid::kInt2:
      return LuaKind::kInt2;
    case oid::kInt4:
      return LuaKind::kInt4;
    case oid::kInt8:
      return LuaKind::kInt8;
    case oid::kFloat4:
      return LuaKind::kFloat4;
    case oid::kFloat8:
      return LuaKind::kFloat8;
    default:
      return LuaKind::kText;
  }
}

bool IsIntegerKind(LuaKind kind) {
  return kind == LuaKind::kInt2 || kind == LuaKind::kInt4 || kind == LuaKind::kInt8;
}

// Types whose text takes true/false: strings, and json (where they are literals).
bool TakesBooleanWords(uint32_t type_oid) {
  return type_oid == oid::kText || type_oid == oid::kVarchar || type_oid == oid::kBpchar ||
         type_oid == oid::kName || type_oid == oid::kJson || type_oid == oid::kJsonb;
}

std::string TypeLabel(const Column& column) {
  switch (column.type_oid) {
    case oid::kBool:
      return "bool";
    case oid::kInt2:
      return "int2";
    case oid::kInt4:
      return "int4";
    case oid::kInt8:
      return "int8";
    case oid::kFloat4:
      return "float4";
    case oid::kFloat8:
      return "float8";
    case oid::kNumeric:
      return "numeric";
    default:
      return column.type_name.empty() ? Cat("type ", column.type_oid) : column.type_name;
  }
}

// What the transform knows of one version of a table.
struct Plan {
  TableSchemaPtr hold;  // keeps the key's address from being reused
  bool touched = false;
  // In the registry: {column names..., schema, table name}, interned once.
  int names_ref = LUA_NOREF;
  std::vector<LuaKind> kinds;  // per column
  std::vector<size_t> key;     // the key columns, for messages
};

// Pushes `value` as the function sees it (see lua.h). `binary_text` is its text when it is a
// binary value. Runs protected: allocates.
void PushValue(lua_State* L, const Value& value, LuaKind kind, const std::string& binary_text) {
  if (value.is_null()) {
    lua_pushnil(L);
    return;
  }
  if (value.is_unchanged_toast()) {
    lua_pushlightuserdata(L, UnchangedMarker());
    return;
  }
  const absl::string_view text = value.kind == ValueKind::kText
                                     ? absl::string_view(value.data.data(), value.data.size())
                                     : absl::string_view(binary_text.data(), binary_text.size());
  switch (kind) {
    case LuaKind::kBool:
      lua_pushboolean(L, text == "t" || text == "true");
      return;
    case LuaKind::kInt2:
    case LuaKind::kInt4:
    case LuaKind::kInt8: {
      int64_t n = 0;
      if (absl::SimpleAtoi(text, &n) && n >= -kMaxExactInteger && n <= kMaxExactInteger) {
        lua_pushinteger(L, n);
        return;
      }
      break;
    }
    case LuaKind::kFloat4:
    case LuaKind::kFloat8: {
      double d = 0;
      if (absl::SimpleAtod(text, &d)) {
        lua_pushnumber(L, d);
        return;
      }
      break;
    }
    case LuaKind::kText:
      break;
  }
  lua_pushlstring(L, text.data(), text.size());
}

// Stack slots of a call, from the bottom (CallFunction returns them in this order).
constexpr int kKeysSlot = 1;         // the event keys
constexpr int kNamesSlot = 2;        // the plan's names
constexpr int kBeforeTableSlot = 3;  // the event's `before` as it was made (or nil)
constexpr int kFirstOriginalSlot = 4;

// One call of the function with one change; CallFunction's argument.
struct CallJob {
  LuaVm* vm;
  const Plan* plan;
  const Change* change;
  bool has_after;
  bool has_before;
  const std::string* binary_texts;  // per value (after's, then before's) that is binary
  const std::string* lsn;
};

// Pushes a row table of the values pushed from slot `originals` on.
void PushRow(lua_State* L, const CallJob& job, int originals) {
  const int n = static_cast<int>(job.plan->kinds.size());
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; ++i) {
    if (lua_isnil(L, originals + i)) continue;
    lua_rawgeti(L, kNamesSlot, i + 1);
    lua_pushvalue(L, originals + i);
    lua_rawset(L, -3);
  }
}

// Pushes the keys, the names, the values as they came (to tell later which ones the script
// changed), then calls the function with the event; returns all of it and the result.
int CallFunction(lua_State* L) {
  const CallJob& job = *static_cast<const CallJob*>(lua_touserdata(L, 1));
  const Change& change = *job.change;
  const int n = static_cast<int>(job.plan->kinds.size());
  luaL_checkstack(L, 2 * n + 16, "too many columns");
  lua_rawgeti(L, LUA_REGISTRYINDEX, job.vm->keys_ref());
  lua_replace(L, 1);  // the job is no longer needed
  lua_rawgeti(L, LUA_REGISTRYINDEX, job.plan->names_ref);
  lua_pushnil(L);  // kBeforeTableSlot
  int after = 0;
  int before = 0;
  if (job.has_after) {
    after = lua_gettop(L) + 1;
    for (int i = 0; i < n; ++i) {
      PushValue(L, change.after[i], job.plan->kinds[i], job.binary_texts[i]);
    }
  }
  if (job.has_before) {
    before = lua_gettop(L) + 1;
    for (int i = 0; i < n; ++i) {
      PushValue(L, change.before[i], job.plan->kinds[i], job.binary_texts[n + i]);
    }
  }
  if (before != 0) {
    PushRow(L, job, before);
    lua_replace(L, kBeforeTableSlot);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, job.vm->function_ref());
  lua_createtable(L, 0, 8);
  auto set = [L](EventKey key) {  // event[key] = the value on top
    lua_rawgeti(L, kKeysSlot, key);
    lua_insert(L, -2);
    lua_rawset(L, -3);
  };
  lua_pushstring(L, OpName(change.op));
  set(kOpKey);
  lua_rawgeti(L, kNamesSlot, n + 1);
  set(kSchemaKey);
  lua_rawgeti(L, kNamesSlot, n + 2);
  set(kTableKey);
  lua_pushlstring(L, job.lsn->data(), job.lsn->size());
  set(kLsnKey);
  lua_pushinteger(L, change.txn.commit_time_us);
  set(kCommitTsKey);
  lua_pushinteger(L, change.txn.xid);
  set(kXidKey);
  if (after != 0) {
    PushRow(L, job, after);
    set(kAfterKey);
  }
  if (before != 0) {
    lua_pushvalue(L, kBeforeTableSlot);
    set(kBeforeKey);
  }
  lua_call(L, 1, 1);
  return lua_gettop(L);
}

// Makes a plan's names table. The argument: the plan, whose names_ref it sets.
int MakeNames(lua_State* L) {
  Plan& plan = *static_cast<Plan*>(lua_touserdata(L, 1));
  const TableSchema& table = *plan.hold;
  const int n = static_cast<int>(table.columns.size());
  lua_createtable(L, n + 2, 0);
  for (int i = 0; i < n; ++i) {
    lua_pushlstring(L, table.columns[i].name.data(), table.columns[i].name.size());
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushlstring(L, table.schema.data(), table.schema.size());
  lua_rawseti(L, -2, n + 1);
  lua_pushlstring(L, table.name.data(), table.name.size());
  lua_rawseti(L, -2, n + 2);
  plan.names_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

// The value at `index` written into `*out` as text of `column`'s type (see lua.h). Reads only:
// raises nothing.
absl::Status FromLua(lua_State* L, int index, const Column& column, LuaKind kind,
                     bool allow_unchanged, Value* out) {
  out->type_oid = column.type_oid;
  switch (lua_type(L, index)) {
    case LUA_TNIL:
      out->kind = ValueKind::kNull;
      out->data.clear();
      return absl::OkStatus();
    case LUA_TSTRING: {
      size_t length = 0;
      const char* text = lua_tolstring(L, index, &length);
      out->kind = ValueKind::kText;
      out->data.assign(text, length);
      return absl::OkStatus();
    }
    case LUA_TBOOLEAN: {
      const bool b = lua_toboolean(L, index);
      if (kind == LuaKind::kBool) {
        out->data = b ? "t" : "f";
      } else if (TakesBooleanWords(column.type_oid)) {
        out->data = b ? "true" : "false";
      } else {
        return absl::InvalidArgumentError(
            Cat("a boolean cannot be written to a column of type ", TypeLabel(column)));
      }
      out->kind = ValueKind::kText;
      return absl::OkStatus();
    }
    case LUA_TNUMBER: {
      if (kind == LuaKind::kBool) {
        return absl::InvalidArgumentError(
            Cat(NumberText(L, index), " cannot be written to a bool column (use true or false)"));
      }
      char buffer[64];
      char* end = buffer;
      int64_t n = 0;
      bool integral = lua_isinteger(L, index);
      if (integral) {
        n = lua_tointeger(L, index);
      } else if (IsIntegerKind(kind)) {
        const double d = lua_tonumber(L, index);
        // 2^63 is exact as a double; the int64 range is [-2^63, 2^63).
        if (!std::isfinite(d) || d != std::trunc(d) || d < -9223372036854775808.0 ||
            d >= 9223372036854775808.0) {
          return absl::InvalidArgumentError(Cat(
              NumberText(L, index), " is not an integer, and the column is ", TypeLabel(column)));
        }
        n = static_cast<int64_t>(d);
        integral = true;
      }
      if (integral) {
        const int64_t lo = kind == LuaKind::kInt2   ? std::numeric_limits<int16_t>::min()
                           : kind == LuaKind::kInt4 ? std::numeric_limits<int32_t>::min()
                                                    : std::numeric_limits<int64_t>::min();
        const int64_t hi = kind == LuaKind::kInt2   ? std::numeric_limits<int16_t>::max()
                           : kind == LuaKind::kInt4 ? std::numeric_limits<int32_t>::max()
                                                    : std::numeric_limits<int64_t>::max();
        if (n < lo || n > hi) {
          return absl::InvalidArgumentError(
              Cat(n, " is out of range for the column's type ", TypeLabel(column)));
        }
        end = std::to_chars(buffer, buffer + sizeof buffer, n).ptr;
      } else {
        end = FormatDouble(lua_tonumber(L, index), kind == LuaKind::kFloat4, buffer,
                           buffer + sizeof buffer);
      }
      out->kind = ValueKind::kText;
      out->data.assign(buffer, end);
      return absl::OkStatus();
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, index) != UnchangedMarker()) break;
      if (!allow_unchanged) {
        return absl::InvalidArgumentError(
            "pgflow.unchanged in the row of an insert or a snapshot row (every value of a new "
            "row is sent)");
      }
      out->kind = ValueKind::kUnchangedToast;
      out->data.clear();
      return absl::OkStatus();
    default:
      break;
  }
  return absl::InvalidArgumentError(Cat("a ", luaL_typename(L, index),
                                        " cannot be written to a column (expected a string, a "
                                        "number, a boolean, nil or pgflow.unchanged)"));
}

// Empties the Lua stack when a call's result has been read.
class StackReset {
 public:
  explicit StackReset(lua_State* L) : L_(L) {}
  ~StackReset() { lua_settop(L_, 0); }

 private:
  lua_State* L_;
};

class LuaTransform : public Transform {
 public:
  LuaTransform(TransformContext context, std::shared_ptr<const LuaOptions> options)
      : context_(std::move(context)), options_(std::move(options)) {
    absl::StatusOr<std::unique_ptr<LuaVm>> vm = LuaVm::Open(*options_, context_.where);
    if (vm.ok()) {
      vm_ = *std::move(vm);
    } else {
      // Validation ran the same script; reaching here takes a script that behaves otherwise
      // the second time (or an interpreter that could not be made). Reported at the first
      // event, as Build cannot fail.
      broken_ = absl::FailedPreconditionError(
          Cat(context_.where, " (lua): ", options_->script_name, ": ", vm.status().message()));
    }
  }

  bool Touches(const TableSchema& table) const override {
    return options_->tables.empty() || PatternsCover(options_->tables, table);
  }

  absl::StatusOr<bool> Apply(Change* change) override {
    std::vector<Change> more;
    absl::StatusOr<bool> kept = Expand(change, &more);
    if (kept.ok() && !more.empty()) {
      return absl::FailedPreconditionError(Cat(context_.where,
                                               " (lua): the function returned several events "
                                               "where one was expected"));
    }
    return kept;
  }

  absl::StatusOr<bool> Expand(Change* change, std::vector<Change>* more) override {
    if (!broken_.ok()) return broken_;
    if (absl::Status s =
            CheckStillCovered(options_->tables, *change, Cat(context_.where, " (lua)"));
        !s.ok()) {
      return s;
    }
    if (change->table == nullptr) return true;
    if (change->op != Op::kRead && change->op != Op::kInsert && change->op != Op::kUpdate &&
        change->op != Op::kDelete) {
      return true;  // truncates, schema changes and messages pass
    }
    absl::StatusOr<const Plan*> found = PlanFor(change->table);
    if (!found.ok()) return found.status();
    const Plan& plan = **found;
    if (!plan.touched) return true;

    const size_t n = plan.kinds.size();
    CallJob job{
        .vm = vm_.get(),
        .plan = &plan,
        .change = change,
        .has_after = change->after.size() == n,
        .has_before = change->before_kind != BeforeKind::kNone && change->before.size() == n,
        .binary_texts = nullptr,
        .lsn = &lsn_text_};
    if (binary_texts_.size() < 2 * n) binary_texts_.resize(2 * n);
    for (size_t i = 0; i < n; ++i) {  // snapshot rows may come in binary form
      if (job.has_after && change->after[i].kind == ValueKind::kBinary) {
        binary_texts_[i] = ValueText(change->after[i], change->table->columns[i]).value_or("");
      }
      if (job.has_before && change->before[i].kind == ValueKind::kBinary) {
        binary_texts_[n + i] = ValueText(change->before[i], change->table->columns[i]).value_or("");
      }
    }
    job.binary_texts = binary_texts_.data();
    lsn_text_.clear();
    AppendLsn(change->lsn, &lsn_text_);

    lua_State* L = vm_->state();
    if (int status = vm_->Call(CallFunction, &job); status != LUA_OK) {
      return Failure(*change, plan, vm_->TakeError(status));
    }
    StackReset reset(L);
    if (!lua_checkstack(L, 8)) return Failure(*change, plan, "not enough memory");
    Frame frame;
    int next = kFirstOriginalSlot;
    if (job.has_after) {
      frame.after = next;
      next += static_cast<int>(n);
    }
    if (job.has_before) frame.before = next;
    const int result = lua_gettop(L);

    if (lua_isnil(L, result) || (lua_isboolean(L, result) && !lua_toboolean(L, result))) {
      return false;
    }
    if (!lua_istable(L, result)) {
      return Failure(*change, plan,
                     Cat("the function returned a ", luaL_typename(L, result),
                         " (expected the event, a list of events, or nil to drop it)"));
    }
    lua_rawgeti(L, result, 1);
    const bool list = !lua_isnil(L, result + 1);
    lua_pop(L, 1);
    if (!list) {
      lua_pushnil(L);
      if (lua_next(L, result) == 0) return false;  // {}: an empty list
      lua_pop(L, 2);
      // The common case: the event itself, rewritten where the script changed it.
      if (absl::Status s = ReadEvent(result, plan, frame, *change, change); !s.ok()) {
        return Failure(*change, plan, s.message());
      }
      return true;
    }
    Change input = std::move(*change);
    const size_t count = lua_rawlen(L, result);
    for (size_t k = 1; k <= count; ++k) {
      lua_rawgeti(L, result, static_cast<lua_Integer>(k));
      if (!lua_istable(L, -1)) {
        return Failure(input, plan,
                       Cat("item ", k, " of the list the function returned is a ",
                           luaL_typename(L, -1), ", not an event"));
      }
      Change out;
      out.op = input.op;
      out.table = input.table;
      out.before_kind = input.before_kind;
      out.txn = input.txn;
      out.lsn = input.lsn;
      out.sequence = input.sequence;
      if (absl::Status s = ReadEvent(lua_gettop(L), plan, frame, input, &out); !s.ok()) {
        return Failure(input, plan, Cat("item ", k, ": ", s.message()));
      }
      lua_pop(L, 1);
      if (k == 1) {
        *change = std::move(out);
      } else {
        more->push_back(std::move(out));
      }
    }
    return count > 0;
  }

 private:
  // Where the values a call pushed sit on the stack; 0: that row was absent.
  struct Frame {
    int after = 0;
    int before = 0;
  };

  absl::StatusOr<const Plan*> PlanFor(const TableSchemaPtr& table) {
    auto it = plans_.find(table.get());
    if (it != plans_.end()) return &it->second;
    if (plans_.size() >= kMaxPlans) {
      for (auto& [key, plan] : plans_) luaL_unref(vm_->state(), LUA_REGISTRYINDEX, plan.names_ref);
      plans_.clear();
    }
    Plan plan;
    plan.hold = table;
    plan.touched = Touches(*table);
    for (const Column& column : table->columns) plan.kinds.push_back(KindOf(column.type_oid));
    plan.key = table->RowKeyColumns();
    if (!plan.touched) {
      return &plans_.emplace(table.get(), std::move(plan)).first->second;
    }
    if (int status = vm_->Call(MakeNames, &plan); status != LUA_OK) {
      return absl::ResourceExhaustedError(Cat(context_.where, " (lua): ", vm_->TakeError(status)));
    }
    lua_settop(vm_->state(), 0);
    return &plans_.emplace(table.get(), std::move(plan)).first->second;
  }

  // Reads the event table at `index` into *out. `input` is the change the function got (the
  // values of `frame` are its values); `out` may be `input` itself, rewritten in place.
  absl::Status ReadEvent(int index, const Plan& plan, const Frame& frame, const Change& input,
                         Change* out) {
    lua_State* L = vm_->state();
    const int n = static_cast<int>(plan.kinds.size());
    Op op = input.op;
    lua_rawgeti(L, kKeysSlot, kOpKey);
    lua_rawget(L, index);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const absl::string_view text = lua_tostring(L, -1);
      if (text == "insert") {
        op = Op::kInsert;
      } else if (text == "update") {
        op = Op::kUpdate;
      } else if (text == "delete") {
        op = Op::kDelete;
      } else if (text == "read") {
        op = Op::kRead;
      } else {
        return absl::InvalidArgumentError(
            Cat("op '", text, "' is not one of insert, update, delete, read"));
      }
    } else if (!lua_isnil(L, -1)) {
      return absl::InvalidArgumentError(Cat("op is a ", luaL_typename(L, -1), ", not a string"));
    }
    lua_pop(L, 1);
    for (EventKey key : {kSchemaKey, kTableKey}) {
      lua_rawgeti(L, kKeysSlot, key);
      lua_rawget(L, index);
      lua_rawgeti(L, kNamesSlot, n + (key == kSchemaKey ? 1 : 2));
      const bool same = lua_isnil(L, -2) || lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
      if (!same) {
        return absl::InvalidArgumentError(
            Cat("an event of ", plan.hold->QualifiedName(), " cannot become one of another table (",
                kEventKeys[key - 1],
                " changed): each event returned is of the table the function got"));
      }
    }

    const bool new_row = op == Op::kInsert || op == Op::kRead;
    const bool allow_unchanged = !new_row;
    if (op != Op::kDelete) {
      lua_rawgeti(L, kKeysSlot, kAfterKey);
      lua_rawget(L, index);
      if (!lua_istable(L, -1)) {
        return absl::InvalidArgumentError(Cat("an ", OpName(op),
                                              " needs `after`, a table of column values (got ",
                                              luaL_typename(L, -1), ")"));
      }
      if (absl::Status s = ReadRow("after", lua_gettop(L), plan, frame.after, input.after,
                                   allow_unchanged, &out->after);
          !s.ok()) {
        return s;
      }
      lua_pop(L, 1);
    } else {
      out->after.clear();
    }
    if (new_row) {
      out->before.clear();
      out->before_kind = BeforeKind::kNone;
    } else {
      lua_rawgeti(L, kKeysSlot, kBeforeKey);
      lua_rawget(L, index);
      if (lua_istable(L, -1)) {
        // The old row the event came with (values changed or not) keeps its kind; one the
        // script made is whole when it holds a value beside the key's.
        const bool same = lua_rawequal(L, -1, kBeforeTableSlot);
        if (absl::Status s = ReadRow("before", lua_gettop(L), plan, frame.before, input.before,
                                     allow_unchanged, &out->before);
            !s.ok()) {
          return s;
        }
        out->before_kind = same ? input.before_kind : BeforeKindOf(plan, out->before);
      } else if (!lua_isnil(L, -1)) {
        return absl::InvalidArgumentError(
            Cat("before is a ", luaL_typename(L, -1), ", not a table of column values"));
      } else if (op == Op::kDelete) {
        return absl::InvalidArgumentError(
            "a delete needs `before`, a table of column values holding at least the key");
      } else {
        out->before.clear();
        out->before_kind = BeforeKind::kNone;
      }
      lua_pop(L, 1);
    }
    out->op = op;
    return absl::OkStatus();
  }

  static BeforeKind BeforeKindOf(const Plan& plan, const Row& row) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i].is_null()) continue;
      if (std::find(plan.key.begin(), plan.key.end(), i) == plan.key.end()) {
        return BeforeKind::kFull;
      }
    }
    return BeforeKind::kKey;
  }

  // Reads the row table at `index` into *out. `originals` is the stack slot of the first value
  // pushed for this row (0: none), and `original` the row they came from: a value the script
  // left as it was keeps its original form (no conversion). `out` may be `original` itself.
  absl::Status ReadRow(std::string_view name, int index, const Plan& plan, int originals,
                       const Row& original, bool allow_unchanged, Row* out) {
    lua_State* L = vm_->state();
    const TableSchema& table = *plan.hold;
    const int n = static_cast<int>(plan.kinds.size());
    const bool in_place = originals != 0 && out == &original;
    if (!in_place) out->assign(n, Value());
    int present = 0;
    for (int i = 0; i < n; ++i) {
      lua_rawgeti(L, kNamesSlot, i + 1);
      lua_rawget(L, index);
      if (!lua_isnil(L, -1)) ++present;
      if (originals != 0 && lua_rawequal(L, -1, originals + i)) {
        if (!in_place) (*out)[i] = original[i];
        lua_pop(L, 1);
        continue;
      }
      absl::Status s = FromLua(L, -1, table.columns[i], plan.kinds[i], allow_unchanged, &(*out)[i]);
      lua_pop(L, 1);
      if (!s.ok()) {
        return absl::InvalidArgumentError(Cat(name, ".", table.columns[i].name, ": ", s.message()));
      }
    }
    // Every key must be a column: count the entries, and name the stray one if they are more.
    int entries = 0;
    lua_pushnil(L);
    while (lua_next(L, index) != 0) {
      ++entries;
      lua_pop(L, 1);
    }
    if (entries == present) return absl::OkStatus();
    lua_pushnil(L);
    while (lua_next(L, index) != 0) {
      std::string key;
      if (lua_type(L, -2) == LUA_TSTRING) {
        size_t length = 0;
        const char* text = lua_tolstring(L, -2, &length);
        key.assign(text, length);
        const bool column = std::any_of(table.columns.begin(), table.columns.end(),
                                        [&key](const Column& c) { return c.name == key; });
        if (column) {
          lua_pop(L, 1);
          continue;
        }
        key = Cat("'", key, "'");
      } else {
        key = lua_type(L, -2) == LUA_TNUMBER ? NumberText(L, -2) : Cat("a ", luaL_typename(L, -2));
      }
      lua_pop(L, 2);
      return absl::InvalidArgumentError(
          Cat(name, " has the key ", key, ", which is not a column of ", table.QualifiedName(),
              ": lua cannot add columns (a sink's table has the source's); rename the column "
              "upstream or write the value into an existing column"));
    }
    return absl::OkStatus();
  }

  // The error that stops the pipeline, naming the transform, the script and the event.
  absl::Status Failure(const Change& change, const Plan& plan, absl::string_view message) const {
    std::string event = Cat("the ", OpName(change.op), " of ", change.table->QualifiedName(),
                            " at ", change.lsn.ToString());
    const size_t n = plan.kinds.size();
    const Row* row = change.after.size() == n    ? &change.after
                     : change.before.size() == n ? &change.before
                                                 : nullptr;
    if (row != nullptr && !plan.key.empty()) {
      event += " (";
      for (size_t k = 0; k < plan.key.size(); ++k) {
        const size_t i = plan.key[k];
        const Value& value = (*row)[i];
        event += Cat(k > 0 ? ", " : "", change.table->columns[i].name, "=",
                     value.is_unchanged_toast()
                         ? std::string("(unsent)")
                         : ValueText(value, change.table->columns[i]).value_or("null"));
      }
      event += ")";
    }
    return absl::FailedPreconditionError(Cat(context_.where, " (lua): ", options_->script_name,
                                             " failed on ", event, ": ", Sv(message)));
  }

  const TransformContext context_;
  const std::shared_ptr<const LuaOptions> options_;
  std::unique_ptr<LuaVm> vm_;
  absl::Status broken_;
  absl::flat_hash_map<const TableSchema*, Plan> plans_;
  std::vector<std::string> binary_texts_;  // per call, reused
  std::string lsn_text_;                   // per call, reused
};

class LuaFactory : public TransformFactoryOf<LuaOptions> {
 public:
  std::string_view type() const override { return "lua"; }
  std::string_view help() const override {
    return "Rewrites, drops or splits the events of the tables it names with a Lua function: "
           "{script: \"function transform(event) ... return event end\"} or {file: rules.lua}; "
           "the function returns the event, a list of events, or nil to drop it.";
  }

 protected:
  const OptionTable<LuaOptions>& table() const override {
    static const auto* table = new OptionTable<LuaOptions>({
        ListOption("table", &LuaOptions::table)
            .DefaultText("every table")
            .Help("The tables whose events the function gets: schema.table or schema.*, one or "
                  "a list; the others pass untouched."),
        StringOption("script", &LuaOptions::script)
            .NoDefault()
            .Help("The Lua code, inline (`script: |` and the code indented below it); or give "
                  "`file`."),
        StringOption("file", &LuaOptions::file)
            .NoDefault()
            .Help("A file holding the Lua code, relative to the pipeline file's folder; or give "
                  "`script`."),
        StringOption("function", &LuaOptions::function)
            .NonEmpty()
            .Help("The global function called with each event (insert, update, delete, read)."),
        IntOption("max_instructions", &LuaOptions::max_instructions)
            .AtLeast(int64_t{1000})
            .Help("Lua VM instructions one event may take; past them the pipeline stops."),
        BytesOption("max_memory", &LuaOptions::max_memory)
            .AtLeast(uint64_t{1} << 20)
            .Help("Cap on the interpreter's heap; past it the pipeline stops."),
    });
    return *table;
  }

  absl::Status Check(const ConfigNode& node, LuaOptions* options) const override {
    if (absl::Status s = ParseTablePatterns(node, "table", options->table, &options->tables);
        !s.ok()) {
      return s;
    }
    if (options->script.empty() == options->file.empty()) {
      return node.Error(options->script.empty()
                            ? "give the Lua code inline (`script: |`) or in a file (`file: "
                              "rules.lua`)"
                            : "give `script` or `file`, not both");
    }
    const std::string_view key = options->file.empty() ? "script" : "file";
    if (!options->file.empty()) {
      absl::StatusOr<std::string> code =
          ReadConfigFile(ResolveConfigPath(node.file(), options->file));
      if (!code.ok()) return node.Get(key)->Error(Sv(code.status().message()));
      options->code = *std::move(code);
      options->chunk_name = Cat("@", options->file);
      options->script_name = options->file;
    } else {
      options->code = options->script;
      options->chunk_name = "=script";
      options->script_name = "inline script";
    }
    // Compiled and its top level run now, so that a mistake is found by `pgflow validate`.
    const absl::string_view path(node.path().data(), node.path().size());
    absl::StatusOr<std::unique_ptr<LuaVm>> vm =
        LuaVm::Open(*options, std::string(absl::StripSuffix(path, ".lua")));
    if (!vm.ok()) return node.Get(key)->Error(Sv(vm.status().message()));
    return absl::OkStatus();
  }

  std::unique_ptr<Transform> Build(const TransformContext& context,
                                   std::shared_ptr<const LuaOptions> options) const override {
    return std::make_unique<LuaTransform>(context, std::move(options));
  }
};

}  // namespace

void RegisterLuaTransform() { RegisterTransformFactory(std::make_unique<LuaFactory>()); }

}  // namespace pgflow
