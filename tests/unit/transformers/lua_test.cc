#include "transformers/lua.h"

#include <chrono>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "cli/components.h"
#include "engine/config.h"

#include "tests/unit/transformers/transform_testing.h"

namespace pgflow {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// `text` with every line indented by `spaces`.
std::string Indent(std::string_view text, int spaces) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    if (line.empty()) continue;
    out += Cat(std::string(spaces, ' '), line, "\n");
  }
  return out;
}

// The pipeline file of a lua transform on public.t with `script` and the `extra` option lines.
std::string PipelineYaml(std::string_view script, std::string_view extra) {
  return Cat("pipeline: p\n", "source: {postgres: {url: 'postgres://db/x', tables: [public.t]}}\n",
             "transforms:\n", "  - lua:\n", "      table: public.t\n", Indent(extra, 6),
             script.empty() ? "" : "      script: |\n", Indent(script, 8),
             "sinks: {out: {jsonl: {path: x}}}\n");
}

absl::StatusOr<PipelineConfig> Parse(std::string_view script, std::string_view extra = "") {
  RegisterComponents();  // as `pgflow` registers them
  return ParsePipelineConfig(PipelineYaml(script, extra), "p.yaml");
}

// The chain of a lua transform with `script`, built through the registry as a pipeline file
// would be.
TransformChain LuaChain(std::string_view script, std::string_view extra = "") {
  absl::StatusOr<PipelineConfig> config = Parse(script, extra);
  EXPECT_TRUE(config.ok()) << config.status();
  return BuildTransforms("p", config.ok() ? config->transforms : std::vector<TransformConfig>{});
}

// public.t: id int4 key, name text, total numeric, qty int4, big int8, flag bool, score
// float8, doc text.
TableSchemaPtr Table(std::string name = "t") {
  auto t = std::make_shared<TableSchema>();
  t->schema = "public";
  t->name = std::move(name);
  t->replica_identity = 'd';
  t->columns = {{"id", oid::kInt4, -1, true, ""},        {"name", oid::kText, -1, false, ""},
                {"total", oid::kNumeric, -1, false, ""}, {"qty", oid::kInt4, -1, false, ""},
                {"big", oid::kInt8, -1, false, ""},      {"flag", oid::kBool, -1, false, ""},
                {"score", oid::kFloat8, -1, false, ""},  {"doc", oid::kText, -1, false, ""}};
  return t;
}

Row MakeRow(std::vector<std::string> values) {
  const TableSchemaPtr t = Table();
  Row row;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint32_t type = t->columns[i].type_oid;
    row.push_back(values[i] == "NULL" ? Value::Null(type) : Value::Text(type, values[i]));
  }
  return row;
}

Row DefaultRow() { return MakeRow({"7", "ann", "12.50", "5", "42", "t", "1.5", "NULL"}); }

Change Insert(Row after = DefaultRow()) {
  Change c;
  c.op = Op::kInsert;
  c.table = Table();
  c.after = std::move(after);
  c.lsn = Lsn(0x16B3748);
  c.txn.xid = 991;
  c.txn.commit_time_us = 1700000000123456;
  return c;
}

Change Update(Row before, Row after) {
  Change c = Insert(std::move(after));
  c.op = Op::kUpdate;
  c.before = std::move(before);
  c.before_kind = BeforeKind::kFull;
  return c;
}

absl::StatusOr<std::vector<Change>> RunChain(TransformChain& chain, std::vector<Change> changes) {
  return transform_testing::ApplyChain(chain, std::move(changes));
}

absl::StatusOr<Change> RunOne(TransformChain& chain, Change change) {
  absl::StatusOr<std::vector<Change>> out = RunChain(chain, {std::move(change)});
  if (!out.ok()) return out.status();
  if (out->size() != 1) return absl::InternalError(Cat(out->size(), " changes came out"));
  return (*out)[0];
}

TEST(LuaTest, ChangesValuesOfEachKind) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  local a = event.after
  assert(math.type(a.qty) == "integer", "qty: " .. tostring(math.type(a.qty)))
  assert(type(a.total) == "string" and a.total == "12.50", "total")
  assert(a.flag == true, "flag")
  assert(a.score == 1.5, "score")
  a.qty = a.qty + 1
  a.name = a.name .. "!"
  a.total = "99.95"
  a.flag = not a.flag
  a.score = a.score * 2 + 0.1
  a.big = 10.0
  return event
end
)");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->op, Op::kInsert);
  EXPECT_EQ(out->after[0], Value::Text(oid::kInt4, "7"));  // left alone
  EXPECT_EQ(out->after[1], Value::Text(oid::kText, "ann!"));
  EXPECT_EQ(out->after[2], Value::Text(oid::kNumeric, "99.95"));
  EXPECT_EQ(out->after[3], Value::Text(oid::kInt4, "6"));
  EXPECT_EQ(out->after[4], Value::Text(oid::kInt8, "10"));  // an integral float: no ".0"
  EXPECT_EQ(out->after[5], Value::Text(oid::kBool, "f"));
  EXPECT_EQ(out->after[6], Value::Text(oid::kFloat8, "3.1"));  // shortest exact form
  EXPECT_TRUE(out->after[7].is_null());
}

TEST(LuaTest, ValuesThatComeBackUnchangedKeepTheirForm) {
  // A float8 and a numeric written oddly, and a binary snapshot value, come back as they were.
  TransformChain chain = LuaChain("function transform(e) e.after.name = 'x' return e end");
  Change read = Insert(MakeRow({"7", "ann", "012.500", "5", "42", "t", "1.50", "NULL"}));
  read.op = Op::kRead;
  read.after[3] = Value{ValueKind::kBinary, oid::kInt4, std::string("\0\0\0\5", 4)};
  absl::StatusOr<Change> out = RunOne(chain, read);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->op, Op::kRead);
  EXPECT_EQ(out->after[1].data, "x");
  EXPECT_EQ(out->after[2].data, "012.500");
  EXPECT_EQ(out->after[6].data, "1.50");
  EXPECT_EQ(out->after[3], read.after[3]);
}

TEST(LuaTest, SeesTheEventsFields) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  event.after.doc = table.concat({event.op, event.schema, event.table, event.lsn,
                                  event.commit_ts, event.xid, tostring(event.before)}, " ")
  return event
end
)");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->after[7].data, "insert public t 0/16B3748 1700000000123456 991 nil");
}

TEST(LuaTest, DropsOnNilOrFalse) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  if event.after.qty > 100 then return nil end
  if event.after.qty > 10 then return false end
  return event
end
)");
  absl::StatusOr<std::vector<Change>> out =
      RunChain(chain, {Insert(MakeRow({"1", "a", "1", "5", "1", "t", "1", "NULL"})),
                       Insert(MakeRow({"2", "b", "1", "50", "1", "t", "1", "NULL"})),
                       Insert(MakeRow({"3", "c", "1", "500", "1", "t", "1", "NULL"})),
                       Insert(MakeRow({"4", "d", "1", "6", "1", "t", "1", "NULL"}))});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].after[0].data, "1");
  EXPECT_EQ((*out)[1].after[0].data, "4");
}

TEST(LuaTest, ReturnsSeveralEvents) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  local audit = {op = "insert", after = {id = event.after.id + 1000, name = "copy of " .. event.after.name}}
  local gone = {op = "delete", before = {id = event.before.id}}
  return {event, audit, gone}
end
)");
  absl::StatusOr<std::vector<Change>> out = RunChain(
      chain, {Update(DefaultRow(), MakeRow({"7", "bob", "1", "5", "1", "t", "1", "NULL"}))});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 3u);
  EXPECT_EQ((*out)[0].op, Op::kUpdate);
  EXPECT_EQ((*out)[0].after[1].data, "bob");
  EXPECT_EQ((*out)[0].before[1].data, "ann");
  EXPECT_EQ((*out)[0].before_kind, BeforeKind::kFull);
  EXPECT_EQ((*out)[1].op, Op::kInsert);
  EXPECT_EQ((*out)[1].after[0], Value::Text(oid::kInt4, "1007"));
  EXPECT_EQ((*out)[1].after[1], Value::Text(oid::kText, "copy of bob"));
  EXPECT_TRUE((*out)[1].after[2].is_null());
  EXPECT_TRUE((*out)[1].before.empty());
  EXPECT_EQ((*out)[1].lsn, Lsn(0x16B3748));
  EXPECT_EQ((*out)[2].op, Op::kDelete);
  EXPECT_TRUE((*out)[2].after.empty());
  EXPECT_EQ((*out)[2].before[0].data, "7");
  EXPECT_TRUE((*out)[2].before[1].is_null());
  EXPECT_EQ((*out)[2].before_kind, BeforeKind::kKey);  // the script's old row: the key only
  // Each keeps an event id of its own: the further ones are numbered.
  EXPECT_EQ((*out)[0].part, 0u);
  EXPECT_EQ((*out)[1].part, 1u);
  EXPECT_EQ((*out)[2].part, 2u);
  EXPECT_EQ((*out)[1].sequence, (*out)[0].sequence);
}

TEST(LuaTest, AnEmptyListDropsAndOtherTablesAreRefused) {
  TransformChain drop = LuaChain("function transform(e) return {} end");
  absl::StatusOr<std::vector<Change>> out = RunChain(drop, {Insert()});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->empty());

  TransformChain move = LuaChain("function transform(e) e.table = 'other' return e end");
  absl::StatusOr<Change> moved = RunOne(move, Insert());
  ASSERT_FALSE(moved.ok());
  EXPECT_THAT(Message(moved.status()), HasSubstr("cannot become one of another table"));
}

TEST(LuaTest, NullsInAndOut) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  assert(event.after.doc == nil, "doc should be nil")
  event.after.doc = "filled"
  event.after.name = nil
  return event
end
)");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->after[7], Value::Text(oid::kText, "filled"));
  EXPECT_EQ(out->after[1], Value::Null(oid::kText));
}

TEST(LuaTest, UnchangedToastSentinelIsKept) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  assert(event.after.doc == pgflow.unchanged, "doc: " .. tostring(event.after.doc))
  event.after.name = "seen"
  return event
end
)");
  Row after = DefaultRow();
  after[7] = Value::UnchangedToast(oid::kText);
  absl::StatusOr<Change> out = RunOne(chain, Update(DefaultRow(), after));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->after[7].is_unchanged_toast());
  EXPECT_EQ(out->after[1].data, "seen");

  TransformChain insert = LuaChain(
      "function transform(e) e.after.doc = pgflow.unchanged "
      "return e end");
  absl::StatusOr<Change> refused = RunOne(insert, Insert());
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(Message(refused.status()),
              HasSubstr("after.doc: pgflow.unchanged in the row of an insert"));
}

TEST(LuaTest, Int8BeyondDoublePrecisionRoundTripsExactly) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  local big = event.after.big
  if type(big) == "string" then
    event.after.name = big              -- exact, as text
  else
    assert(math.type(big) == "integer", "big is " .. tostring(math.type(big)))
    event.after.big = big + 1           -- integer arithmetic: 2^53 + 1
  end
  return event
end
)");
  absl::StatusOr<std::vector<Change>> out = RunChain(
      chain, {Insert(MakeRow({"1", "a", "1", "5", "9223372036854775807", "t", "1", "NULL"})),
              Insert(MakeRow({"2", "a", "1", "5", "9007199254740992", "t", "1", "NULL"}))});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].after[4].data, "9223372036854775807");
  EXPECT_EQ((*out)[0].after[1].data, "9223372036854775807");
  EXPECT_EQ((*out)[1].after[4].data, "9007199254740993");
}

TEST(LuaTest, NumbersMustFitTheColumn) {
  TransformChain fraction = LuaChain("function transform(e) e.after.qty = 2.5 return e end");
  absl::StatusOr<Change> out = RunOne(fraction, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("after.qty: 2.5 is not an integer"));

  TransformChain wide = LuaChain("function transform(e) e.after.qty = 2^40 // 1 return e end");
  out = RunOne(wide, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("out of range for the column's type int4"));

  TransformChain boolean = LuaChain("function transform(e) e.after.flag = 1 return e end");
  out = RunOne(boolean, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("cannot be written to a bool column"));
}

TEST(LuaTest, AColumnThatDoesNotExistIsAnError) {
  TransformChain chain = LuaChain("function transform(e) e.after.color = 'red' return e end");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()),
              AllOf(HasSubstr("transforms[0] (lua)"), HasSubstr("'color'"),
                    HasSubstr("not a column of public.t"), HasSubstr("lua cannot add columns")));
}

TEST(LuaTest, RuntimeErrorNamesScriptLineAndEvent) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  local n = event.after.qty
  return event.after.nope + n
end
)");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(out.status()),
              HasSubstr("transforms[0] (lua): inline script failed on the insert of public.t at "
                        "0/16B3748 (id=7): script:3: attempt to perform arithmetic on a nil "
                        "value (field 'nope')"));
}

TEST(LuaTest, ScriptFromAFileNamesTheFile) {
  const std::string path = testing::TempDir() + "/lua_test_rules.lua";
  std::ofstream(path) << "function transform(event)\n"
                         "  -- a comment\n"
                         "  error('no ' .. event.op .. 's please')\n"
                         "end\n";
  TransformChain chain = LuaChain("", Cat("file: ", path));
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), AllOf(HasSubstr(Cat(path, " failed on the insert")),
                                           HasSubstr("lua_test_rules.lua:3: no inserts please")));
}

TEST(LuaTest, AnInfiniteLoopIsStoppedByTheBudget) {
  const auto start = std::chrono::steady_clock::now();
  TransformChain chain =
      LuaChain("function transform(e)\n  while true do end\nend\n", "max_instructions: 100000");
  absl::StatusOr<Change> out = RunOne(chain, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()),
              HasSubstr("script:2: instruction budget of 100000 exceeded (max_instructions)"));
  // A script that catches the error cannot go on either.
  TransformChain stubborn = LuaChain(R"(
function transform(e)
  while true do pcall(function() while true do end end) end
end
)");
  out = RunOne(stubborn, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("instruction budget of 1000000 exceeded"));
  // The budget is per event: the next one runs again.
  TransformChain counting = LuaChain(R"(
function transform(e)
  for i = 1, 30000 do end
  return e
end
)",
                                     "max_instructions: 100000");
  absl::StatusOr<std::vector<Change>> several =
      RunChain(counting, {Insert(), Insert(), Insert(), Insert()});
  ASSERT_TRUE(several.ok()) << several.status();
  EXPECT_EQ(several->size(), 4u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(LuaTest, AMemoryBombIsStoppedByMaxMemory) {
  const auto start = std::chrono::steady_clock::now();
  TransformChain table = LuaChain(R"(
function transform(e)
  local t = {} for i = 1, 1e9 do t[i] = i end
end
)",
                                  "max_memory: 4MiB\nmax_instructions: 1000000000");
  absl::StatusOr<Change> out = RunOne(table, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()),
              HasSubstr("not enough memory: the script's heap reached max_memory (4MiB)"));
  TransformChain string =
      LuaChain("function transform(e) return string.rep('x', 1e9) end", "max_memory: 4MiB");
  out = RunOne(string, Insert());
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("max_memory (4MiB)"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(LuaTest, TheSandboxHasNoFilesProcessesOrLoaders) {
  const std::pair<std::string, std::string> kCalls[] = {
      {"os.execute('true')", "global 'os'"},
      {"io.open('/etc/passwd')", "global 'io'"},
      {"require('os')", "global 'require'"},
      {"load('return 1')", "global 'load'"},
      {"dofile('/etc/passwd')", "global 'dofile'"},
      {"debug.getinfo(1)", "global 'debug'"},
      {"package.loadlib('x', 'y')", "global 'package'"},
      {"collectgarbage()", "global 'collectgarbage'"},
      {"string.dump(transform)", "field 'dump'"},
  };
  for (const auto& [call, missing] : kCalls) {
    TransformChain chain = LuaChain(Cat("function transform(e) ", call, " return e end"));
    absl::StatusOr<Change> out = RunOne(chain, Insert());
    ASSERT_FALSE(out.ok()) << call;
    EXPECT_THAT(Message(out.status()), HasSubstr(Cat("script:1: attempt to ")));
    EXPECT_THAT(Message(out.status()), HasSubstr(missing)) << call;
  }
  // What is kept works.
  TransformChain kept = LuaChain(R"(
function transform(e)
  print("seen", e.after.id)
  e.after.name = string.upper(e.after.name) .. utf8.char(233) .. math.floor(2.7) .. #table.pack(1, 2)
  return e
end
)");
  absl::StatusOr<Change> out = RunOne(kept, Insert());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->after[1].data, "ANNé22");
}

TEST(LuaTest, MistakesAreFoundAtValidation) {
  absl::StatusOr<PipelineConfig> syntax = Parse("function transform(event)\n  return event\n");
  ASSERT_FALSE(syntax.ok());
  EXPECT_THAT(Message(syntax.status()),
              AllOf(HasSubstr("p.yaml:"),
                    HasSubstr("transforms[0].lua.script: script:3: 'end' expected (to close "
                              "'function' at line 1)")));

  absl::StatusOr<PipelineConfig> missing = Parse("function transfrom(event) return event end");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(Message(missing.status()),
              HasSubstr("inline script defines no function 'transform'"));

  absl::StatusOr<PipelineConfig> named =
      Parse("function rewrite(event) return event end", "function: rewrite");
  EXPECT_TRUE(named.ok()) << named.status();

  absl::StatusOr<PipelineConfig> top = Parse("x = nil + 1\nfunction transform(e) end");
  ASSERT_FALSE(top.ok());
  EXPECT_THAT(Message(top.status()), HasSubstr("script:1: attempt to perform arithmetic"));

  absl::StatusOr<PipelineConfig> endless = Parse("while true do end\nfunction transform(e) end");
  ASSERT_FALSE(endless.ok());
  EXPECT_THAT(Message(endless.status()), HasSubstr("instruction budget"));

  absl::StatusOr<PipelineConfig> no_file = Parse("", "file: /nonexistent/rules.lua");
  ASSERT_FALSE(no_file.ok());
  EXPECT_THAT(Message(no_file.status()),
              AllOf(HasSubstr("transforms[0].lua.file"), HasSubstr("/nonexistent/rules.lua")));

  absl::StatusOr<PipelineConfig> both =
      Parse("function transform(e) return e end", "file: rules.lua");
  ASSERT_FALSE(both.ok());
  EXPECT_THAT(Message(both.status()), HasSubstr("give `script` or `file`, not both"));

  absl::StatusOr<PipelineConfig> neither = Parse("");
  ASSERT_FALSE(neither.ok());
  EXPECT_THAT(Message(neither.status()), HasSubstr("give the Lua code inline"));
}

TEST(LuaTest, OtherTablesAndTruncatesPassUntouched) {
  TransformChain chain = LuaChain("function transform(e) return nil end");
  Change other = Insert();
  other.table = Table("other");
  Change truncate;
  truncate.op = Op::kTruncate;
  truncate.table = Table();
  absl::StatusOr<std::vector<Change>> out = RunChain(chain, {other, Insert(), truncate});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_FALSE(chain.Touches(*Table("other")));  // its snapshot keeps the raw COPY path
  EXPECT_EQ((*out)[0].table->name, "other");
  EXPECT_EQ((*out)[0].after, other.after);
  EXPECT_EQ((*out)[1].op, Op::kTruncate);
}

TEST(LuaTest, WithoutTableEveryTableIsSeen) {
  RegisterComponents();
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(
      "pipeline: p\n"
      "source: {postgres: {url: 'postgres://db/x', tables: [public.t]}}\n"
      "transforms:\n"
      "  - lua: {script: 'function transform(e) e.after.name = e.table return e end'}\n"
      "sinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  TransformChain chain = BuildTransforms("p", config->transforms);
  EXPECT_TRUE(chain.Touches(*Table("other")));
  Change other = Insert();
  other.table = Table("other");
  absl::StatusOr<Change> out = RunOne(chain, other);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->after[1].data, "other");
}

TEST(LuaTest, RewritesTheOldRowOfUpdatesAndDeletes) {
  TransformChain chain = LuaChain(R"(
function transform(event)
  if event.before then event.before.name = "old " .. event.before.name end
  return event
end
)");
  Change del;
  del.op = Op::kDelete;
  del.table = Table();
  del.before = MakeRow({"7", "cy", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"});
  del.before_kind = BeforeKind::kKey;
  absl::StatusOr<std::vector<Change>> out = RunChain(
      chain, {Update(DefaultRow(), MakeRow({"7", "bob", "1", "5", "1", "t", "1", "NULL"})), del});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].before[1].data, "old ann");
  EXPECT_EQ((*out)[0].after[1].data, "bob");
  EXPECT_EQ((*out)[1].op, Op::kDelete);
  EXPECT_EQ((*out)[1].before[1].data, "old cy");
  EXPECT_EQ((*out)[1].before_kind, BeforeKind::kKey);
  EXPECT_TRUE((*out)[1].after.empty());
}

}  // namespace
}  // namespace pgflow
