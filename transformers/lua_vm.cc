#include "transformers/lua_vm.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

// The instruction hook runs every kHookStep VM instructions.
constexpr int kHookStep = 1000;
}  // namespace

// A double as PostgreSQL reads it back exactly: the shortest form that round-trips ("0.1",
// "3", "1e+20"), NaN, Infinity, -Infinity. For a float4 column, the shortest as a float.
char* FormatDouble(double d, bool single, char* out, char* end) {
  auto copy = [out](std::string_view text) { return std::copy(text.begin(), text.end(), out); };
  if (std::isnan(d)) return copy("NaN");
  if (std::isinf(d)) return copy(d > 0 ? "Infinity" : "-Infinity");
  return single ? std::to_chars(out, end, static_cast<float>(d)).ptr
                : std::to_chars(out, end, d).ptr;
}

std::string NumberText(lua_State* L, int index) {
  char buffer[64];
  if (lua_isinteger(L, index)) {
    return std::string(buffer,
                       std::to_chars(buffer, buffer + sizeof buffer, lua_tointeger(L, index)).ptr);
  }
  return std::string(buffer, FormatDouble(lua_tonumber(L, index), false, buffer, buffer + 64));
}

void* LuaVm::Allocate(void* ud, void* ptr, size_t old_size, size_t new_size) {
  auto* vm = static_cast<LuaVm*>(ud);
  if (ptr == nullptr) old_size = 0;  // then it says what kind of object Lua makes
  if (new_size == 0) {
    std::free(ptr);
    vm->memory_used_ -= old_size;
    return nullptr;
  }
  // Shrinking never fails (Lua counts on it); growing past the cap does, and Lua raises "not
  // enough memory" after a full collection.
  if (new_size > old_size) {
    const size_t room =
        vm->memory_limit_ > vm->memory_used_ ? vm->memory_limit_ - vm->memory_used_ : 0;
    if (new_size - old_size > room) {
      vm->memory_refused_ = true;
      return nullptr;
    }
  }
  void* grown = std::realloc(ptr, new_size);
  if (grown == nullptr) return nullptr;
  vm->memory_used_ = vm->memory_used_ - old_size + new_size;
  return grown;
}

void LuaVm::CountHook(lua_State* L, lua_Debug* ar) {
  LuaVm* vm = Of(L);
  vm->spent_ += kHookStep;
  if (vm->spent_ <= vm->budget_) return;
  if (!vm->exhausted_) {
    // From now on every instruction raises, so that a script catching the error with pcall
    // cannot run on: the first instruction outside the pcall raises again.
    vm->exhausted_ = true;
    lua_sethook(L, CountHook, LUA_MASKCOUNT, 1);
  }
  lua_getinfo(L, "Sl", ar);
  lua_pushfstring(L, "%s:%d: instruction budget of %I exceeded (max_instructions)", ar->short_src,
                  ar->currentline, static_cast<LUAI_UACINT>(vm->budget_));
  lua_error(L);
}

int LuaVm::Print(lua_State* L) {
  const int n = lua_gettop(L);
  luaL_Buffer buffer;
  luaL_buffinit(L, &buffer);
  for (int i = 1; i <= n; ++i) {
    if (i > 1) luaL_addchar(&buffer, '\t');
    luaL_tolstring(L, i, nullptr);
    luaL_addvalue(&buffer);
  }
  luaL_pushresult(&buffer);
  size_t length = 0;
  const char* text = lua_tolstring(L, -1, &length);
  // No call into Lua follows: the temporaries below cannot be skipped by an error.
  LogInfo("%s (lua): %s", Of(L)->log_name_, absl::string_view(text, length));
  return 0;
}

int LuaVm::Setup(lua_State* L) {
  static constexpr luaL_Reg kLibraries[] = {{LUA_GNAME, luaopen_base},
                                            {LUA_STRLIBNAME, luaopen_string},
                                            {LUA_TABLIBNAME, luaopen_table},
                                            {LUA_MATHLIBNAME, luaopen_math},
                                            {LUA_UTF8LIBNAME, luaopen_utf8}};
  for (const luaL_Reg& library : kLibraries) {
    luaL_requiref(L, library.name, library.func, 1);
    lua_pop(L, 1);
  }
  // What reads files or compiles code at run time, and the collector's controls.
  for (const char* name :
       {"dofile", "loadfile", "load", "loadstring", "require", "collectgarbage"}) {
    lua_pushnil(L);
    lua_setglobal(L, name);
  }
  lua_getglobal(L, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");  // bytecode, which nothing here may load
  lua_pop(L, 1);
  lua_register(L, "print", Print);
  lua_createtable(L, 0, 1);
  lua_pushlightuserdata(L, UnchangedMarker());
  lua_setfield(L, -2, "unchanged");
  lua_setglobal(L, "pgflow");

  lua_createtable(L, std::size(kEventKeys), 0);
  for (int i = 0; i < static_cast<int>(std::size(kEventKeys)); ++i) {
    lua_pushstring(L, kEventKeys[i]);
    lua_rawseti(L, -2, i + 1);
  }
  Of(L)->keys_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  // Most of what a call makes (the event's tables) is garbage right after it.
  lua_gc(L, LUA_GCGEN, 0, 0);
  return 0;
}

int LuaVm::FindFunction(lua_State* L) {
  LuaVm* vm = Of(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_pushstring(L, vm->function_name_);
  lua_rawget(L, -2);
  if (!lua_isfunction(L, -1)) {
    vm->function_type_ = luaL_typename(L, -1);
    return 0;
  }
  vm->function_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

absl::StatusOr<std::unique_ptr<LuaVm>> LuaVm::Open(const LuaOptions& options,
                                                   std::string log_name) {
  std::unique_ptr<LuaVm> vm(new LuaVm(options, std::move(log_name)));
  const size_t limit = vm->memory_limit_;
  vm->memory_limit_ = std::numeric_limits<size_t>::max();
  lua_State* L = lua_newstate(Allocate, vm.get());
  if (L == nullptr) return absl::ResourceExhaustedError("cannot create a Lua interpreter");
  vm->state_ = L;
  *static_cast<LuaVm**>(lua_getextraspace(L)) = vm.get();
  if (int status = vm->Call(Setup, nullptr); status != LUA_OK) {
    return absl::ResourceExhaustedError(vm->TakeError(status));
  }
  vm->memory_limit_ = limit;
  lua_sethook(L, CountHook, LUA_MASKCOUNT, kHookStep);

  // Text only: a precompiled chunk can crash the interpreter.
  int status = luaL_loadbufferx(L, options.code.data(), options.code.size(),
                                options.chunk_name.c_str(), "t");
  if (status == LUA_OK) {
    vm->spent_ = 0;
    status = lua_pcall(L, 0, 0, 0);
  }
  if (status != LUA_OK) return absl::InvalidArgumentError(vm->TakeError(status));
  vm->function_name_ = options.function.c_str();
  if (status = vm->Call(FindFunction, nullptr); status != LUA_OK) {
    return absl::InvalidArgumentError(vm->TakeError(status));
  }
  if (vm->function_ref_ == LUA_NOREF) {
    return absl::InvalidArgumentError(
        Cat(options.script_name, " defines no function '", options.function, "' (",
            vm->function_type_ == nullptr ? "nil" : vm->function_type_, "): define function ",
            options.function, "(event) returning the event, a list of events, or nil to drop it"));
  }
  lua_settop(L, 0);
  return vm;
}

int LuaVm::Call(lua_CFunction fn, void* data) {
  spent_ = 0;
  memory_refused_ = false;
  if (exhausted_) {
    exhausted_ = false;
    lua_sethook(state_, CountHook, LUA_MASKCOUNT, kHookStep);
  }
  lua_settop(state_, 0);
  lua_pushcfunction(state_, fn);
  lua_pushlightuserdata(state_, data);
  return lua_pcall(state_, 1, LUA_MULTRET, 0);
}

std::string LuaVm::TakeError(int status) {
  std::string message;
  if (status == LUA_ERRMEM) {
    message = memory_refused_ ? Cat("not enough memory: the script's heap reached max_memory (",
                                    FormatBytes(memory_limit_), ")")
                              : std::string("not enough memory");
  } else if (lua_type(state_, -1) == LUA_TSTRING) {
    size_t length = 0;
    const char* text = lua_tolstring(state_, -1, &length);
    message.assign(text, length);
  } else if (lua_type(state_, -1) == LUA_TNUMBER) {
    message = NumberText(state_, -1);
  } else {
    message = Cat("(error object is a ", luaL_typename(state_, -1), " value)");
  }
  lua_settop(state_, 0);
  return message;
}

}  // namespace pgflow
