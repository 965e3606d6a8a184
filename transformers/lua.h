#pragma once

// The `lua` transform: rewrites, drops or splits change events with a Lua 5.4 function, for
// rules that `filter` and `mask` cannot say:
//
//   - lua:
//       table: public.orders      # optional: schema.table or schema.*, one or a list
//       script: |                 # or `file: rules.lua` (relative to the pipeline file)
//         function transform(event)
//           if event.after.total ~= nil and tonumber(event.after.total) > 1000 then
//             event.after.tier = "big"
//           end
//           return event
//         end
//
// The function (`function:`, default `transform`) gets each insert, update, delete and snapshot
// row of the tables named (every table without `table`) as a Lua table:
//   op         "read" (a snapshot row), "insert", "update", "delete"
//   schema, table
//   lsn        the change's WAL position as text, "0/16B3748" ("0/0" for snapshot rows)
//   commit_ts  the transaction's commit time, integer microseconds since the Unix epoch
//   xid        the transaction id, an integer
//   after      the new row (read, insert, update): column name -> value; nil for a delete
//   before     the old row (update, delete) when the stream sent one, else nil; under REPLICA
//              IDENTITY DEFAULT it holds the key columns only
// Values: NULL is nil; bool a boolean; int2, int4, float4, float8 numbers; int8 a number when
// it is within 2^53, else its text (exact); every other type (numeric, text, dates, json, uuid,
// arrays...) its PostgreSQL text form as a string. A value the stream did not send (an
// unchanged TOASTed value of an update) is `pgflow.unchanged`: left in place, it stays unsent.
// Truncates, schema changes and logical messages pass untouched and are not shown to the
// function, as are the other tables' events.
//
// It returns:
//   the event (changed or not)  the change, with the values it assigned
//   nil or false                the change is dropped
//   a list of events            as many changes, in order (an empty list drops it); each is of
//                               the same table, with its own `op` (read, insert, update or
//                               delete; the input's when absent) and rows. A delete needs
//                               `before`, the others `after`; a delete's `after` and an
//                               insert's `before` are not read.
// Assigned values are written as text of the column's type: a string as it is; an integer in
// decimal; a float in its shortest exact form ("0.1", "1e+20", NaN, Infinity), and into an
// integer column only when it is integral and in range; a boolean as t/f into a bool column
// and true/false into text and json columns; nil as NULL; pgflow.unchanged as unsent (update
// and delete rows only). A value left as it came keeps its original form. Assigning a key that
// is not a column of the table is an error: `lua` cannot add columns (the sinks' tables have
// the source's). `lsn`, `commit_ts` and `xid` are read-only; `schema` and `table` may not change.
//
// Sandbox: the base library without dofile, loadfile, load, require and collectgarbage, and
// string, table, math and utf8; no io, os, debug, package or coroutine. print() writes an
// info log line naming the transform. Each event may run `max_instructions` Lua VM
// instructions (counted in steps of 1000); the interpreter's heap is capped at `max_memory`.
// Past either, as on any runtime error, the pipeline stops with an error naming the transform,
// the script, the Lua message and its line, and the event (table, op, lsn and key values).
// (A single call into the string library, string.rep or a pattern match, is one instruction:
// its memory is capped, its time is not.)
//
// Validation (`pgflow validate`, before anything connects) reads `file`, compiles the script,
// runs its top level within the same limits and checks that the function exists; a syntax
// error is reported there, as "<pipeline file>:<line>:<col>: transforms[0].lua.script:
// script:2: ..." (inline: lines count from the script's first) or "...: rules.lua:2: ..." (a
// file). The transform runs the script's top level again when it is built and calls the
// function the top level defined; globals persist across events, as does anything the function
// stores in them.
//
// Thread-compatible: each transform instance owns one interpreter, used by the thread that
// runs its chain.

#include <cstdint>
#include <string>
#include <vector>

#include "common/postgres/table_ref.h"
#include "engine/registry.h"

namespace pgflow {

struct LuaOptions : TransformOptions {
  std::vector<std::string> table;  // as written; empty: every table
  std::vector<TableRef> tables;    // parsed
  std::string script;              // the code, inline
  std::string file;                // or the file holding it
  std::string function = "transform";
  int64_t max_instructions = 1000000;  // per event
  uint64_t max_memory = 64ull << 20;   // the interpreter's heap

  // Set by the factory once it read and compiled the script:
  std::string code;         // the script's text
  std::string chunk_name;   // "@rules.lua" or "=script": how Lua's messages name it
  std::string script_name;  // "rules.lua" or "inline script": how ours do
};

// Registers the `lua` transform type.
void RegisterLuaTransform();

}  // namespace pgflow
