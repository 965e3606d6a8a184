#include "engine/transform.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TableSchemaPtr Table(std::string name, std::vector<std::string> columns) {
  auto table = std::make_shared<TableSchema>();
  table->schema = "public";
  table->name = std::move(name);
  for (std::string& c : columns) {
    Column column;
    column.name = std::move(c);
    column.type_oid = 25;
    table->columns.push_back(std::move(column));
  }
  return table;
}

Event Control(EventKind kind) {
  Event event;
  event.kind = kind;
  return event;
}

Event ChangeOf(const TableSchemaPtr& table, std::vector<std::string> values) {
  Event event;
  event.kind = EventKind::kChange;
  event.change.op = Op::kInsert;
  event.change.table = table;
  for (std::string& v : values) event.change.after.push_back(Value::Text(25, std::move(v)));
  return event;
}

EventBatchPtr BatchOf(std::vector<Event> events) {
  auto batch = std::make_shared<EventBatch>();
  batch->events = std::move(events);
  return batch;
}

// Drops the rows of `secrets` and the last column of every other table, counting its calls.
class DropSecrets : public Transform {
 public:
  absl::StatusOr<bool> Apply(Change* change) override {
    ++calls;
    if (change->table->name == "secrets") return false;
    if (change->table->name == "broken") return absl::InvalidArgumentError("cannot transform");
    change->table = outputs.For(change->table, [](const TableSchema& in) {
      auto out = std::make_shared<TableSchema>(in);
      out->columns.pop_back();
      return out;
    });
    change->after.pop_back();
    return true;
  }
  bool Touches(const TableSchema& table) const override { return table.name != "untouched"; }

  int calls = 0;
  OutputSchemas outputs;
};

TEST(TransformChainTest, ChangesAreTransformedControlEventsPassUntouched) {
  auto transform = std::make_unique<DropSecrets>();
  DropSecrets* seen = transform.get();
  std::vector<std::unique_ptr<Transform>> list;
  list.push_back(std::move(transform));
  TransformChain chain(std::move(list));
  TableSchemaPtr users = Table("users", {"id", "email"});
  TableSchemaPtr secrets = Table("secrets", {"id", "key"});
  EventBatchPtr in = BatchOf({Control(EventKind::kBegin), ChangeOf(users, {"1", "a@b"}),
                              ChangeOf(secrets, {"1", "k"}), ChangeOf(users, {"2", "c@d"}),
                              Control(EventKind::kCommit), Control(EventKind::kChunkDone)});
  absl::StatusOr<EventBatchPtr> out = chain.Apply(in);
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<Event>& events = (*out)->events;
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].kind, EventKind::kBegin);
  EXPECT_EQ(events[3].kind, EventKind::kCommit);
  EXPECT_EQ(events[4].kind, EventKind::kChunkDone);
  EXPECT_EQ(events[1].change.after.size(), 1u);
  // One output schema per input version: both rows of `users` carry the same one.
  EXPECT_EQ(events[1].change.table, events[2].change.table);
  EXPECT_NE(events[1].change.table, users);
  EXPECT_EQ(events[1].change.table->columns.size(), 1u);
  // The input, shared with other consumers, is as it was.
  EXPECT_EQ(in->events.size(), 6u);
  EXPECT_EQ(in->events[1].change.after.size(), 2u);
  EXPECT_EQ(seen->calls, 3);
  EXPECT_GT((*out)->bytes, 0u);

  EXPECT_TRUE(chain.Touches(*users));
  EXPECT_FALSE(chain.Touches(*Table("untouched", {"id"})));
  EXPECT_FALSE(TransformChain().Touches(*users));
  EXPECT_EQ(*TransformChain().Apply(in), in);  // no transforms: the batch itself
}

// An emitter that refuses a batch `full` times before taking it.
class FullThenOk : public Emitter {
 public:
  Result Emit(const EventBatchPtr& batch, absl::Duration) override {
    if (full > 0) {
      --full;
      return Result::kTimeout;
    }
    taken.push_back(batch);
    return Result::kOk;
  }
  bool WantsRawCopy(const TableSchema&) const override { return true; }
  int full = 0;
  std::vector<EventBatchPtr> taken;
};

TEST(TransformingEmitterTest, ARetriedBatchIsTransformedOnce) {
  auto transform = std::make_unique<DropSecrets>();
  DropSecrets* seen = transform.get();
  std::vector<std::unique_ptr<Transform>> list;
  list.push_back(std::move(transform));
  FullThenOk next;
  next.full = 2;
  absl::Status failure;
  TransformingEmitter emitter(TransformChain(std::move(list)), &next,
                              [&](absl::Status s) { failure = s; });
  EventBatchPtr batch = BatchOf({ChangeOf(Table("users", {"id", "email"}), {"1", "a"})});
  EXPECT_EQ(emitter.Emit(batch, absl::Milliseconds(1)), Emitter::Result::kTimeout);
  EXPECT_EQ(emitter.Emit(batch, absl::Milliseconds(1)), Emitter::Result::kTimeout);
  EXPECT_EQ(emitter.Emit(batch, absl::Milliseconds(1)), Emitter::Result::kOk);
  EXPECT_EQ(seen->calls, 1);
  ASSERT_EQ(next.taken.size(), 1u);
  EXPECT_EQ(next.taken[0]->events[0].change.after.size(), 1u);
  EXPECT_TRUE(failure.ok());

  // Raw COPY only for tables no transform touches.
  EXPECT_FALSE(emitter.WantsRawCopy(*Table("users", {"id"})));
  EXPECT_TRUE(emitter.WantsRawCopy(*Table("untouched", {"id"})));

  // A failing transform stops the pipeline through `fail`, and Emit answers kClosed.
  EventBatchPtr bad = BatchOf({ChangeOf(Table("broken", {"id"}), {"1"})});
  EXPECT_EQ(emitter.Emit(bad, absl::Milliseconds(1)), Emitter::Result::kClosed);
  EXPECT_EQ(failure.message(), "cannot transform");
}

}  // namespace
}  // namespace pgflow
