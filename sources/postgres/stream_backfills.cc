// The replication loop's part that runs backfills (`pgflow snapshot`, backfill.h) beside the
// stream, one at a time, and records them done once the sinks hold their rows.

#include "sources/postgres/stream_state.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/log.h"

namespace pgflow {

absl::Status PostgresSource::StreamState::QueueBackfill(std::string_view content) {
  int64_t id = 0;
  if (!absl::SimpleAtoi(absl::string_view(content.data(), content.size()), &id)) {
    LogWarning("ignoring a malformed %s message '%s'", kBackfillPrefix, std::string(content));
    return absl::OkStatus();
  }
  if (backfills_seen_.insert(id).second) backfill_queue_.push_back(id);
  return absl::OkStatus();
}

void PostgresSource::StreamState::NoteForBackfill(const Change& change) {
  if (backfill_ == nullptr || !backfill_->Watches(change.table->relation_id)) return;
  if (change.op == Op::kTruncate) {
    backfill_->NoteTruncated();
    return;
  }
  if (!change.after.empty()) backfill_->NoteChanged(*change.table, change.after);
  if (!change.before.empty()) backfill_->NoteChanged(*change.table, change.before);
}

absl::Status PostgresSource::StreamState::OnWatermark(std::string_view content, Lsn lsn) {
  if (backfill_ == nullptr) return absl::OkStatus();
  std::optional<Backfill::Watermark> mark = backfill_->ParseWatermark(content);
  if (!mark) return absl::OkStatus();  // another run's, replayed: nothing to do
  if (!mark->high) {
    backfill_->OpenWindow(mark->chunk);
    return absl::OkStatus();
  }
  absl::StatusOr<Backfill::Chunk> chunk = backfill_->CloseWindow(mark->chunk);
  if (!chunk.ok()) return FailBackfill(chunk.status());
  if (chunk->replace) {
    // A keyless table's copy replaces what the sinks hold of it.
    Add(ChangeEvent(Op::kTruncate, chunk->table, lsn));
  }
  for (Row& row : chunk->rows) {
    Event event = ChangeEvent(Op::kRead, chunk->table, lsn);
    event.change.after = std::move(row);
    Add(std::move(event));
  }
  backfill_rows_ += chunk->rows.size();
  if (chunk->last) backfill_ending_ = true;
  return absl::OkStatus();
}

absl::Status PostgresSource::StreamState::FailBackfill(const absl::Status& error) {
  const int64_t id = backfill_->id();
  backfill_.reset();
  emitter_.NoteBackfill("");
  backfill_ending_ = false;
  backfill_durable_at_ = Lsn();
  if (absl::IsUnavailable(error)) {
    LogWarning("backfill %d: %s; starting it again", id, error.message());
    backfill_queue_.push_front(id);
    return absl::OkStatus();
  }
  LogError("backfill %d failed: %s", id, error.message());
  auto res = Exec(StateConnection(), "UPDATE pgflow.backfills SET error = $2 WHERE id = $1",
                  {absl::StrCat(id), std::string(error.message())});
  if (!res.ok()) LogWarning("backfill %d: %s", id, res.status().message());
  if (absl::IsNotFound(error)) return absl::OkStatus();
  // Not a pause to wait out (kUnavailable) nor a restart from the slot (kAborted): a stop.
  return absl::FailedPreconditionError(absl::StrCat("backfill ", id,
                                                    " failed, and the sinks may hold stale rows "
                                                    "of the tables it was copying: ",
                                                    error.message()));
}

void PostgresSource::StreamState::LoadPendingBackfills() {
  PGconn* conn = StateConnection();
  if (conn == nullptr) return;
  auto res = Exec(conn,
                  "SELECT id FROM pgflow.backfills WHERE to_regclass('pgflow.backfills') IS NOT "
                  "NULL AND pipeline = $1 AND finished_at IS NULL AND error IS NULL ORDER BY id",
                  {source_->pipeline_});
  if (!res.ok()) return;  // no pgflow schema: no backfill was ever asked for
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    QueueBackfill(PQgetvalue(res->get(), i, 0)).IgnoreError();
  }
}

absl::Status PostgresSource::StreamState::TendBackfills() {
  if (backfill_ != nullptr) {
    if (absl::Status e = backfill_->error(); !e.ok()) {
      if (absl::Status s = FailBackfill(e); !s.ok()) return s;
    } else if (backfill_durable_at_.IsValid() && acks_.Confirmed() >= backfill_durable_at_) {
      auto res =
          Exec(StateConnection(), "UPDATE pgflow.backfills SET finished_at = now() WHERE id = $1",
               {absl::StrCat(backfill_->id())});
      if (!res.ok()) LogWarning("backfill: %s", res.status().message());
      LogInfo("backfill %d: done, %d rows copied", backfill_->id(), backfill_rows_);
      if (backfill_->id() == source_->full_copy_backfill_) {
        Event done;
        done.kind = EventKind::kSnapshotDone;
        Add(std::move(done));
      }
      backfill_.reset();
      emitter_.NoteBackfill("");
      backfill_durable_at_ = Lsn();
    }
  }
  if (backfill_ != nullptr || backfill_queue_.empty()) return absl::OkStatus();
  if (Clock::now() < backfill_retry_at_) return absl::OkStatus();
  const int64_t id = backfill_queue_.front();
  PGconn* conn = StateConnection();
  if (conn == nullptr)
    return absl::OkStatus();  // the request stays queued: tried again at the next turn
  auto res = Exec(conn,
                  "SELECT t FROM pgflow.backfills b LEFT JOIN LATERAL unnest(b.tables) AS t ON "
                  "true WHERE b.id = $1",
                  {absl::StrCat(id)});
  if (!res.ok() && absl::IsUnavailable(res.status())) return absl::OkStatus();  // likewise
  backfill_queue_.pop_front();
  auto refuse = [&](const std::string& why) {
    LogError("backfill %d: %s", id, why);
    auto recorded =
        Exec(conn, "UPDATE pgflow.backfills SET error = $2 WHERE id = $1", {absl::StrCat(id), why});
    if (!recorded.ok()) LogWarning("backfill %d: %s", id, recorded.status().message());
    return absl::OkStatus();
  };
  if (!res.ok()) return refuse(absl::StrCat("cannot read the request: ", res.status().message()));
  if (PQntuples(res->get()) == 0) {
    // The stream may show a committed transaction a moment before other sessions see its
    // rows (the commit record is in the WAL before the commit is visible): look again, four
    // times a second, for a minute before concluding the request was deleted.
    // (Under synchronous replication, for as long as a standby takes to confirm.)
    auto [first_missed, added] = backfill_missing_since_.try_emplace(id, Clock::now());
    if (Clock::now() - first_missed->second < std::chrono::seconds(60)) {
      backfill_queue_.push_front(id);
      backfill_retry_at_ = Clock::now() + std::chrono::milliseconds(250);
      return absl::OkStatus();
    }
    backfill_missing_since_.erase(id);
    LogWarning("backfill %d: the request is gone from pgflow.backfills; nothing to copy", id);
    return absl::OkStatus();
  }
  backfill_missing_since_.erase(id);
  Backfill::Options options;
  options.url = source_->source_.url;
  options.id = id;
  options.skip_keyless = source_->SkipsKeyless();
  std::string listed;
  for (int i = 0; i < PQntuples(res->get()); ++i) {
    if (PQgetisnull(res->get(), i, 0)) continue;  // an empty list: every table
    const char* text = PQgetvalue(res->get(), i, 0);
    absl::StatusOr<TableRef> ref = ParseTableRef(text);
    if (!ref.ok()) {
      return refuse(absl::StrCat("invalid table '", text, "': ", ref.status().message()));
    }
    absl::StrAppend(&listed, listed.empty() ? "" : ", ", ref->Quoted());
    options.tables.push_back(*std::move(ref));
  }
  if (options.tables.empty()) options.tables = source_->source_.tables;
  LogInfo("backfill %d: copying %s beside the stream", id, listed.empty() ? "every table" : listed);
  backfill_rows_ = 0;
  backfill_ = std::make_unique<Backfill>(std::move(options));
  emitter_.NoteBackfill(
      absl::StrCat("backfill ", id, ": ", listed.empty() ? "every table" : listed));
  return absl::OkStatus();
}

}  // namespace pgflow
