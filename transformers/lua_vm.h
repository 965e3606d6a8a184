#pragma once

// The `lua` transform's interpreter (transformers/lua.h says what scripts see): one Lua 5.4
// state with the sandboxed libraries, the script's top level run and its function found, an
// instruction budget per call and a cap on the heap. Internal to the transform.
//
// Lua reports errors with longjmp (Debian's liblua5.4 is C): everything that may raise runs
// inside Call's lua_pcall, from C functions whose frames hold only trivially destructible
// locals (see transformers/lua.cc).

#include <lua.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "transformers/lua.h"

namespace pgflow {

// `pgflow.unchanged`: the light userdata scripts see for a value the stream did not send.
inline void* UnchangedMarker() {
  static char marker;
  return &marker;
}

// Keys of the event table, interned once in an array (kept in the registry) so that reading
// the function's result pushes them without allocating.
enum EventKey : int {
  kOpKey = 1,
  kSchemaKey,
  kTableKey,
  kLsnKey,
  kCommitTsKey,
  kXidKey,
  kAfterKey,
  kBeforeKey,
};
inline constexpr const char* kEventKeys[] = {"op",        "schema", "table", "lsn",
                                             "commit_ts", "xid",    "after", "before"};

// A double as PostgreSQL reads it back exactly: the shortest form that round-trips ("0.1",
// "3", "1e+20"), NaN, Infinity, -Infinity. For a float4 column, the shortest as a float.
// Writes at `out` (64 bytes are enough) and returns the end.
char* FormatDouble(double d, bool single, char* out, char* end);

// The number at `index` of L's stack as text: an integer in decimal, a float as FormatDouble.
std::string NumberText(lua_State* L, int index);

// One interpreter: the sandboxed libraries, the script's top level run, its function found,
// and the limits. Thread-compatible.
class LuaVm {
 public:
  // Stores nothing and returns the message of Lua (or ours: a missing function) when the
  // script does not compile, its top level fails, or the function is not defined.
  // `log_name` names the transform in print()'s lines ("transforms[0]").
  static absl::StatusOr<std::unique_ptr<LuaVm>> Open(const LuaOptions& options,
                                                     std::string log_name);
  ~LuaVm() {
    if (state_ != nullptr) lua_close(state_);
  }
  LuaVm(const LuaVm&) = delete;
  LuaVm& operator=(const LuaVm&) = delete;

  lua_State* state() const { return state_; }
  int function_ref() const { return function_ref_; }
  int keys_ref() const { return keys_ref_; }

  // Calls fn(data) protected, with a fresh instruction budget, leaving what it returns on the
  // stack from index 1: LUA_OK, or an error status (TakeError has the message).
  int Call(lua_CFunction fn, void* data);
  // The message of the error Call left, with the stack emptied.
  std::string TakeError(int status);

 private:
  LuaVm(const LuaOptions& options, std::string log_name)
      : log_name_(std::move(log_name)),
        budget_(options.max_instructions),
        memory_limit_(options.max_memory) {}

  static void* Allocate(void* ud, void* ptr, size_t old_size, size_t new_size);
  static void CountHook(lua_State* L, lua_Debug* ar);
  static int Print(lua_State* L);
  static int Setup(lua_State* L);
  static int FindFunction(lua_State* L);
  static LuaVm* Of(lua_State* L) { return *static_cast<LuaVm**>(lua_getextraspace(L)); }

  lua_State* state_ = nullptr;
  const std::string log_name_;
  const int64_t budget_;
  int64_t spent_ = 0;       // instructions run since the budget was reset
  bool exhausted_ = false;  // the hook then runs at every instruction (see CountHook)
  size_t memory_limit_;     // SIZE_MAX while the libraries are set up
  size_t memory_used_ = 0;
  bool memory_refused_ = false;
  int function_ref_ = LUA_NOREF;
  int keys_ref_ = LUA_NOREF;
  // For FindFunction.
  const char* function_name_ = nullptr;
  const char* function_type_ = nullptr;
};

}  // namespace pgflow
