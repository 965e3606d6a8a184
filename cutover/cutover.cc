#include "cutover/cutover.h"

#include <libpq-fe.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "cutover/checks.h"
#include "engine/admin_server.h"
#include "engine/lsn.h"
#include "sinks/postgres/sequences.h"

namespace pgflow::cutover {
namespace {

constexpr char kMarkerPrefix[] = "pgflow.cutover";
constexpr absl::Duration kCatchUpPoll = absl::Milliseconds(2);
// Between the looks for sessions around the pooler inside the pause (the checks, before it,
// look 100 ms apart): a session seen once, and gone, was passing through.
constexpr std::chrono::milliseconds kInsideThePause{30};
// How long the pipeline may take to catch up with what the source took while it was held.
constexpr std::chrono::milliseconds kAfterVerify{60000};

// A's database-level default_transaction_read_only as it was before the fence: restored by
// LowerFence.
struct Fence {
  bool set = false;                // the fence is up
  std::optional<std::string> was;  // the database's own setting before, if it had one
};

std::string DatabaseName(PGconn* conn) { return QuoteIdent(PQdb(conn)); }

// The database's own default_transaction_read_only (ALTER DATABASE ... SET), if it has one.
absl::StatusOr<std::optional<std::string>> DatabaseReadOnlySetting(PGconn* conn) {
  auto setting = Exec(conn,
                      "SELECT substr(s, length('default_transaction_read_only=') + 1) FROM "
                      "pg_db_role_setting r, unnest(r.setconfig) s WHERE r.setrole = 0 AND "
                      "r.setdatabase = (SELECT oid FROM pg_database WHERE datname = "
                      "current_database()) AND s LIKE 'default\\_transaction\\_read\\_only=%'");
  if (!setting.ok()) return setting.status();
  if (PQntuples(setting->get()) == 0) return std::optional<std::string>();
  return std::optional<std::string>(PQgetvalue(setting->get(), 0, 0));
}

absl::StatusOr<Fence> RaiseFence(PGconn* a) {
  Fence fence;
  absl::StatusOr<std::optional<std::string>> before = DatabaseReadOnlySetting(a);
  if (!before.ok()) return before.status();
  fence.was = *before;
  auto set = Exec(a, absl::StrCat("ALTER DATABASE ", DatabaseName(a),
                                  " SET default_transaction_read_only = on"));
  if (!set.ok()) return set.status();
  fence.set = true;
  return fence;
}

absl::Status LowerFence(PGconn* a, const Fence& fence) {
  if (!fence.set) return absl::OkStatus();
  const std::string sql =
      fence.was.has_value()
          ? absl::StrCat("ALTER DATABASE ", DatabaseName(a),
                         " SET default_transaction_read_only = ", QuoteLiteral(*fence.was))
          : absl::StrCat("ALTER DATABASE ", DatabaseName(a),
                         " RESET default_transaction_read_only");
  return Exec(a, sql).status();
}

// Makes B's database writable for new sessions if an earlier cutover (the other way) left it
// read-only: what it said before, or nothing when it said nothing.
absl::StatusOr<std::string> LiftTargetFence(PGconn* b) {
  absl::StatusOr<std::optional<std::string>> setting = DatabaseReadOnlySetting(b);
  if (!setting.ok()) return setting.status();
  if (*setting != "on") return std::string();
  auto lifted = Exec(
      b, absl::StrCat("ALTER DATABASE ", DatabaseName(b), " RESET default_transaction_read_only"));
  if (!lifted.ok()) return lifted.status();
  return std::string("the target, read-only since an earlier cutover, made writable; ");
}

// Asks the pipeline's process to hand over at `marker`, then waits until its admin endpoint
// shows the stream back `reverse` streaming.
absl::StatusOr<std::string> HandOver(const std::string& admin, const ReverseStream& reverse,
                                     Lsn marker, std::chrono::milliseconds timeout) {
  constexpr std::chrono::milliseconds kRequestTimeout{5000};
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  // A pipeline retrying after an outage (409: not streaming) is asked again until it streams.
  for (;;) {
    absl::StatusOr<HttpReply> asked = AdminRequest(
        admin, "POST", absl::StrCat("/handover?at=", marker.ToString()), kRequestTimeout);
    if (asked.ok() && asked->status == 202) break;
    if (absl::Now() > deadline || (asked.ok() && asked->status != 409)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the pipeline did not take the handover: ",
          asked.ok() ? absl::StrCat("HTTP ", asked->status, ": ",
                                    absl::StripTrailingAsciiWhitespace(asked->body))
                     : std::string(asked.status().message()),
          "; the forward pipeline still runs, which the stream back must not run beside: "
          "stop it, then `pgflow run` its file, which runs the stream back"));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  std::string seen = "no answer";
  while (absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
    absl::StatusOr<HttpReply> status = AdminGet(admin, "/status", kRequestTimeout);
    if (!status.ok() || status->status != 200) continue;  // between the two pipelines
    const nlohmann::json j = nlohmann::json::parse(status->body, nullptr, false);
    if (!j.is_object()) continue;
    const std::string pipeline = j.value("pipeline", "");
    const std::string phase = j.value("phase", "");
    seen = absl::StrCat("pipeline ", pipeline, " ", phase);
    if (pipeline == reverse.name && phase == "streaming") {
      return absl::StrCat("pipeline ", reverse.name,
                          " streams from the target back to the source (", reverse.file, ")");
    }
    if (pipeline == reverse.name && phase == "failed") break;
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the stream back ", reverse.name, " is not streaming after ", timeout.count(),
                   " ms (the admin endpoint shows: ", seen, "); the process's log says why"));
}

// Writes the marker into A's WAL in a transaction of its own, after every write A took: its
// position. (This session began before the fence, and says READ WRITE anyway.)
absl::StatusOr<Lsn> WriteMarker(PGconn* a, const std::string& pipeline) {
  if (absl::Status s = Exec(a, "BEGIN READ WRITE").status(); !s.ok()) return s;
  auto marker =
      Exec(a, "SELECT pg_logical_emit_message(true, $1, $2)::text", {kMarkerPrefix, pipeline});
  absl::Status committed = Exec(a, marker.ok() ? "COMMIT" : "ROLLBACK").status();
  if (!marker.ok()) return marker.status();
  if (!committed.ok()) return committed;
  std::optional<Lsn> lsn = Lsn::Parse(PQgetvalue(marker->get(), 0, 0));
  if (!lsn) return absl::InternalError("pg_logical_emit_message returned no position");
  return *lsn;
}

// Waits until B records having applied a source transaction that ends at or past `marker`.
absl::StatusOr<Lsn> WaitApplied(PGconn* b, const std::string& pipeline, Lsn marker,
                                std::chrono::milliseconds timeout, const StopSignal* stop) {
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  Lsn applied;
  for (;;) {
    auto res = Exec(b, "SELECT lsn::text FROM pgflow.applied WHERE pipeline = $1", {pipeline});
    if (!res.ok()) return res.status();
    if (PQntuples(res->get()) > 0) {
      applied = Lsn::Parse(PQgetvalue(res->get(), 0, 0)).value_or(Lsn());
      if (applied >= marker) return applied;
    }
    if (stop != nullptr && stop->requested()) return absl::CancelledError("interrupted");
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the target applied up to ", applied.ToString(), " in ", timeout.count(),
                       " ms, not yet the source's last write at ", marker.ToString()));
    }
    absl::SleepFor(kCatchUpPoll);
  }
}

absl::StatusOr<int> CopySequences(PGconn* a, PGconn* b, const std::vector<SequencePair>& pairs,
                                  int64_t margin) {
  absl::StatusOr<SequenceCopyResult> copied = CopySequenceValues(a, b, pairs);
  if (!copied.ok()) return copied.status();
  if (!copied->missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("sequences missing on the target: ", absl::StrJoin(copied->missing, ", ")));
  }
  if (margin > 0) {
    for (const SequencePair& s : pairs) {
      auto moved = Exec(
          b,
          absl::StrCat("SELECT setval($1, (SELECT last_value FROM ", s.target, ") + $2::bigint)"),
          {s.target, std::to_string(margin)});
      if (!moved.ok()) return moved.status();
    }
  }
  return copied->copied;
}

// The steps after the checks, each recorded; undoes what it did when one before the switch
// fails.
class Cutover {
 public:
  Cutover(const PipelinePlan& plan, const CutoverOptions& options,
          const std::function<void(const CutoverStep&)>& on_step, CutoverReport* report)
      : plan_(plan), options_(options), on_step_(on_step), report_(report) {}

  void Go() {
    CheckResult checks;
    if (!Step("checks", [&]() -> absl::StatusOr<std::string> {
          checks = RunChecks(plan_, options_, &sides_);
          report_->notes = checks.notes;
          report_->problems = checks.problems;
          if (!checks.problems.empty()) {
            return absl::FailedPreconditionError(
                absl::StrCat(checks.problems.size(), " problem(s)"));
          }
          return absl::StrCat(checks.tables.size(), " tables, ", checks.sequences.size(),
                              " sequences, ", PQhost(sides_.source.get()), ":",
                              PQport(sides_.source.get()), " -> ", checks.new_url);
        })) {
      report_->outcome = Outcome::kRefused;
      return;
    }
    // The comparison held the pipeline: the backlog it left is caught up before the pause, or
    // the pause would wait for it.
    const auto verify_and_catch_up = [&]() -> absl::StatusOr<std::string> {
      absl::StatusOr<std::string> found = options_.verify();
      if (!found.ok()) return found;
      const absl::Time held = absl::Now();
      if (absl::Status s = WaitConfirmed(sides_.source.get(), plan_.source.slot, kAfterVerify);
          !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("after the comparison: ", s.message()));
      }
      return absl::StrCat(*found, "; caught up again in ",
                          absl::ToInt64Milliseconds(absl::Now() - held), " ms");
    };
    if (options_.verify && !Step("verify", verify_and_catch_up)) {
      report_->outcome = Outcome::kRefused;
      report_->problems.push_back(report_->error);
      return;
    }
    if (options_.dry_run) {
      report_->outcome = Outcome::kChecked;
      return;
    }
    PGconn* a = sides_.source.get();
    PGconn* b = sides_.target.get();
    PoolerConsole& console = *sides_.console;
    const std::string& db = options_.database;
    // The stream back's file and publication, before the pause: inside it, only its slot.
    if (options_.reverse.has_value()) {
      prepared_ = true;  // (undo removes whatever part of it was made)
      if (!Step("reverse", [&]() -> absl::StatusOr<std::string> {
            if (absl::Status s = options_.reverse->prepare(); !s.ok()) return s;
            return absl::StrCat(options_.reverse->name, " ready (", options_.reverse->file, ")");
          })) {
        Undo();
        return;
      }
    }
    pause_sent_ = absl::Now();
    paused_ = true;  // (a PAUSE that times out still leaves the database paused)
    bool ok = Step("pause", [&]() -> absl::StatusOr<std::string> {
      const StopSignal* stop = options_.stop;
      if (absl::Status s = console.Pause(db, options_.pause_timeout,
                                         [stop] { return stop != nullptr && stop->requested(); });
          !s.ok()) {
        return s;
      }
      return absl::StrCat(db, " paused on the pooler");
    });
    ok = ok && Step("fence", [&]() -> absl::StatusOr<std::string> {
           absl::StatusOr<Fence> fence = RaiseFence(a);
           if (!fence.ok()) return fence.status();
           fence_ = *fence;
           return Fenced(a);
         });
    Lsn marker;
    ok = ok && Step("catch-up", [&]() -> absl::StatusOr<std::string> {
           absl::StatusOr<Lsn> written = WriteMarker(a, plan_.name);
           if (!written.ok()) return written.status();
           marker = *written;
           report_->fence_lsn = marker.ToString();
           absl::StatusOr<Lsn> applied =
               WaitApplied(b, plan_.name, marker, options_.catch_up_timeout, options_.stop);
           if (!applied.ok()) return applied.status();
           return absl::StrCat("the target applied through ", applied->ToString(), " (source at ",
                               marker.ToString(), ")");
         });
    ok = ok && Step("sequences", [&]() -> absl::StatusOr<std::string> {
           absl::StatusOr<int> copied =
               CopySequences(a, b, checks.sequences, options_.sequence_margin);
           if (!copied.ok()) return copied.status();
           return absl::StrCat(*copied, " copied",
                               options_.sequence_margin > 0
                                   ? absl::StrCat(", each ", options_.sequence_margin, " further")
                                   : std::string());
         });
    if (options_.reverse.has_value()) {
      // The stream back starts here: after every write A took, before any B takes.
      ok = ok && Step("slot", [&]() -> absl::StatusOr<std::string> {
             auto made = Exec(b,
                              "SELECT lsn::text FROM pg_create_logical_replication_slot($1, "
                              "'pgoutput')",
                              {options_.reverse->slot});
             if (!made.ok()) return made.status();
             return absl::StrCat("slot ", options_.reverse->slot, " on the target from ",
                                 PQgetvalue(made->get(), 0, 0));
           });
    }
    if (!ok) {
      Undo();
      return;
    }
    const bool switched = Step("switch", [&]() -> absl::StatusOr<std::string> {
      absl::StatusOr<std::string> lifted = LiftTargetFence(b);
      if (!lifted.ok()) return lifted.status();
      const std::string quoted = absl::StrReplaceAll(checks.new_url, {{"'", "''"}});
      if (absl::Status s = console.Run(absl::StrCat("RETARGET ", db, " '", quoted, "'")); !s.ok()) {
        return s;
      }
      retargeted_ = true;
      if (absl::Status s = console.Run(absl::StrCat("RESUME ", db)); !s.ok()) return s;
      paused_ = false;
      report_->paused = absl::Now() - pause_sent_;
      return absl::StrCat(*lifted, db, " now at ", DescribeConninfo(checks.new_url), ", resumed");
    });
    if (switched) {
      report_->outcome = Outcome::kSwitched;
      if (!options_.reverse.has_value()) return;
      const ReverseStream& reverse = *options_.reverse;
      const bool handed_over = Step("handover", [&]() -> absl::StatusOr<std::string> {
        if (absl::Status s = reverse.take_over(); !s.ok()) return s;
        return HandOver(plan_.admin_listen, reverse, marker, options_.handover_timeout);
      });
      if (handed_over) {
        report_->reverse_pipeline = reverse.name;
        return;
      }
      report_->outcome = Outcome::kBroken;
      report_->error += "; the application is on the target, but nothing streams back yet";
      return;
    }
    if (!retargeted_) {
      Undo();
      return;
    }
    report_->outcome = Outcome::kBroken;  // retargeted, still paused: say so
    report_->error += absl::StrCat("; ", db, " points at the target but is still paused: RESUME ",
                                   db, " on the pooler's console");
  }

 private:
  // Runs one step, records it; false when it failed (the report's error names it).
  bool Step(const std::string& name, const std::function<absl::StatusOr<std::string>()>& body) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> result = body();
    CutoverStep step{.name = name,
                     .took = absl::Now() - start,
                     .detail = result.ok() ? *result : std::string(result.status().message()),
                     .ok = result.ok()};
    report_->steps.push_back(step);
    if (on_step_) on_step_(step);
    if (!result.ok()) report_->error = absl::StrCat(name, ": ", result.status().message());
    return result.ok();
  }

  // With --terminate-others, ends A's sessions that bypass the pooler; otherwise a session that
  // appeared since the checks stops the cutover.
  absl::StatusOr<std::string> Fenced(PGconn* a) {
    absl::StatusOr<std::vector<OtherSession>> others =
        OtherSessions(a, *sides_.console, options_.database, kInsideThePause);
    if (!others.ok()) return others.status();
    if (others->empty()) return std::string("the source is read-only for new sessions");
    if (!options_.terminate_others) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a session bypassing the pooler appeared on the source: ", (*others)[0].Describe()));
    }
    for (const OtherSession& s : *others) {
      if (absl::Status t =
              Exec(a, "SELECT pg_terminate_backend($1::int, 5000)", {std::to_string(s.pid)})
                  .status();
          !t.ok()) {
        return t;
      }
    }
    return absl::StrCat("the source is read-only for new sessions; ", others->size(),
                        " other session(s) ended");
  }

  // Undoes the pause, the fence and the stream back after a failure before the switch.
  void Undo() {
    std::vector<std::string> failed;
    if (prepared_) options_.reverse->forget();
    if (absl::Status s = LowerFence(sides_.source.get(), fence_); !s.ok()) {
      failed.push_back(absl::StrCat("making the source writable again: ", s.message()));
    }
    if (paused_) {
      if (absl::Status s = sides_.console->Run(absl::StrCat("RESUME ", options_.database));
          !s.ok()) {
        failed.push_back(absl::StrCat("RESUME ", options_.database, ": ", s.message()));
      } else {
        report_->paused = absl::Now() - pause_sent_;
      }
    }
    if (failed.empty()) {
      report_->outcome = Outcome::kAbandoned;
      report_->error += "; undone: the application stays on the source";
      return;
    }
    report_->outcome = Outcome::kBroken;
    report_->error += absl::StrCat("; undoing failed: ", absl::StrJoin(failed, "; "));
  }

  const PipelinePlan& plan_;
  const CutoverOptions& options_;
  const std::function<void(const CutoverStep&)>& on_step_;
  CutoverReport* report_;
  Sides sides_;
  Fence fence_;
  absl::Time pause_sent_;
  bool paused_ = false;
  bool prepared_ = false;  // the stream back's file, publication or slot may exist
  bool retargeted_ = false;
};

}  // namespace

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kChecked:
      return "checked";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kAbandoned:
      return "abandoned";
    case Outcome::kSwitched:
      return "switched";
    case Outcome::kBroken:
      return "broken";
  }
  return "broken";
}

nlohmann::json CutoverReport::ToJson() const {
  nlohmann::json j;
  j["outcome"] = OutcomeName(outcome);
  j["problems"] = problems;
  j["notes"] = notes;
  j["steps"] = nlohmann::json::array();
  for (const CutoverStep& s : steps) {
    j["steps"].push_back({{"step", s.name},
                          {"ok", s.ok},
                          {"seconds", absl::ToDoubleSeconds(s.took)},
                          {"detail", s.detail}});
  }
  j["paused_seconds"] = absl::ToDoubleSeconds(paused);
  j["fence_lsn"] = fence_lsn.empty() ? nlohmann::json(nullptr) : nlohmann::json(fence_lsn);
  j["reverse_pipeline"] =
      reverse_pipeline.empty() ? nlohmann::json(nullptr) : nlohmann::json(reverse_pipeline);
  j["error"] = error.empty() ? nlohmann::json(nullptr) : nlohmann::json(error);
  return j;
}

CutoverReport RunCutover(const PipelinePlan& plan, const CutoverOptions& options,
                         const std::function<void(const CutoverStep&)>& on_step) {
  CutoverReport report;
  Cutover(plan, options, on_step, &report).Go();
  return report;
}

}  // namespace pgflow::cutover
