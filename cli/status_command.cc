#include "cli/status_command.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "engine/admin_server.h"
#include "engine/progress.h"
#include "sources/postgres/postgres_source_config.h"
#include "sources/postgres/slot_monitor.h"

namespace pgflow {
namespace {

constexpr std::chrono::milliseconds kAdminTimeout(3000);

// The snapshot progress pgflow recorded in the source (pgflow.snapshots and the chunks a
// stopped snapshot left); null when the pipeline never took one or the role may not read it.
nlohmann::json CatalogSnapshot(PGconn* conn, const std::string& pipeline) {
  auto run = Exec(conn, "SELECT started_at, finished_at FROM pgflow.snapshots WHERE pipeline = $1",
                  {pipeline});
  if (!run.ok() || PQntuples(run->get()) != 1) return nullptr;
  nlohmann::json snapshot;
  snapshot["started_at"] = PQgetvalue(run->get(), 0, 0);
  const bool finished = !PQgetisnull(run->get(), 0, 1);
  snapshot["finished_at"] = finished ? nlohmann::json(PQgetvalue(run->get(), 0, 1)) : nullptr;
  snapshot["running"] = false;
  snapshot["state"] = finished ? "done" : "not finished";
  snapshot["tables"] = nlohmann::json::array();
  auto chunks = Exec(conn,
                     "SELECT table_schema || '.' || table_name, coalesce(sum(rows), 0), "
                     "coalesce(sum(bytes) FILTER (WHERE done_at IS NOT NULL), 0), sum(bytes), "
                     "count(done_at), count(*) FROM pgflow.snapshot_chunks WHERE pipeline = $1 "
                     "GROUP BY 1 ORDER BY 1",
                     {pipeline});
  if (!chunks.ok()) return snapshot;
  for (int i = 0; i < PQntuples(chunks->get()); ++i) {
    auto number = [&](int column) { return std::stoull(PQgetvalue(chunks->get(), i, column)); };
    snapshot["tables"].push_back({{"table", PQgetvalue(chunks->get(), i, 0)},
                                  {"rows", number(1)},
                                  {"bytes_done", number(2)},
                                  {"bytes_total", number(3)},
                                  {"chunks_done", number(4)},
                                  {"chunks_total", number(5)}});
  }
  return snapshot;
}

// What the catalog shows the sinks do not hold whole yet: an initial copy not finished, a
// backfill pending or failed. One line each.
std::vector<std::string> IncompleteCopies(PGconn* conn, const std::string& pipeline,
                                          const std::string& file) {
  std::vector<std::string> problems;
  auto snapshot = Exec(conn,
                       "SELECT (SELECT count(done_at) || ' of ' || count(*) FROM "
                       "pgflow.snapshot_chunks WHERE pipeline = $1) FROM pgflow.snapshots "
                       "WHERE pipeline = $1 AND finished_at IS NULL",
                       {pipeline});
  if (snapshot.ok() && PQntuples(snapshot->get()) == 1) {
    problems.push_back(absl::StrCat("the initial copy is not finished (",
                                    PQgetvalue(snapshot->get(), 0, 0),
                                    " chunks done): the sinks do not hold every row yet"));
  }
  auto backfills = Exec(conn,
                        "SELECT id, array_to_string(tables, ', '), error FROM pgflow.backfills "
                        "WHERE to_regclass('pgflow.backfills') IS NOT NULL AND pipeline = $1 "
                        "AND finished_at IS NULL ORDER BY id",
                        {pipeline});
  if (!backfills.ok()) return problems;
  for (int i = 0; i < PQntuples(backfills->get()); ++i) {
    std::string tables = PQgetvalue(backfills->get(), i, 1);
    if (tables.empty()) tables = "every table";
    if (PQgetisnull(backfills->get(), i, 2)) {
      problems.push_back(absl::StrCat("backfill ", PQgetvalue(backfills->get(), i, 0), " (",
                                      tables,
                                      ") is not finished: the sinks do not hold every row of "
                                      "them yet"));
    } else {
      problems.push_back(absl::StrCat(
          "backfill ", PQgetvalue(backfills->get(), i, 0), " (", tables,
          ") failed: ", PQgetvalue(backfills->get(), i, 2),
          "; the sinks may hold part of them: `pgflow snapshot ", file, " --tables ", tables,
          "` copies them again"));
    }
  }
  return problems;
}

std::string Text(const nlohmann::json& j, const char* key, const std::string& otherwise = "-") {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return otherwise;
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

}  // namespace

PipelineHealth GatherStatus(const PipelineConfig& config, const std::string& file) {
  PipelineHealth health;
  nlohmann::json& report = health.report;
  std::vector<std::string> problems;
  int worst = kStatusHealthy;
  auto problem = [&](int severity, std::string text) {
    worst = std::max(worst, severity);
    problems.push_back(std::move(text));
  };
  report["pipeline"] = config.name;
  report["file"] = file;

  // The running process, if it has an admin endpoint and answers.
  nlohmann::json process = nullptr;
  if (!config.admin.listen.empty()) {
    absl::StatusOr<HttpReply> reply = AdminGet(config.admin.listen, "/status", kAdminTimeout);
    std::string error;
    if (!reply.ok()) {
      error = std::string(reply.status().message());
    } else if (reply->status != 200) {
      error = absl::StrCat("/status answered ", reply->status);
    } else {
      process = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
      if (!process.is_object()) {
        process = nullptr;
        error = "/status answered something other than a JSON object";
      } else if (process.value("pipeline", "") != config.name) {
        // Another pipeline's endpoint on that address says nothing about this one.
        error = absl::StrCat("the endpoint serves pipeline '", process.value("pipeline", ""),
                             "', not ", config.name);
        process = nullptr;
      }
    }
    report["admin"] = {{"listen", config.admin.listen},
                       {"reachable", !process.is_null()},
                       {"error", error.empty() ? nlohmann::json(nullptr) : nlohmann::json(error)}};
  }

  // The source's catalog.
  nlohmann::json slot_json = nullptr;
  nlohmann::json snapshot = nullptr;
  bool slot_active = false;
  bool slot_lost = false;
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(config);
  report["source"] = {{"type", config.source.type},
                      {"where", config.source.factory->Describe(*config.source.options)}};
  if (source != nullptr) {
    report["source"]["where"] = DescribeConninfo(source->url);
    absl::StatusOr<PgConnPtr> conn = Connect(source->url, ConnectionKind::kRegular);
    report["source"]["reachable"] = conn.ok();
    if (!conn.ok()) {
      report["source"]["error"] = std::string(conn.status().message());
      problem(kStatusUnreachable, absl::StrCat("source unreachable: ", conn.status().message()));
    } else if (source->snapshot.mode != SnapshotMode::kOnly) {
      absl::StatusOr<SlotState> slot = ReadSlotState(conn->get(), source->slot);
      if (!slot.ok()) {
        problem(kStatusUnreachable,
                absl::StrCat("reading the replication slot: ", slot.status().message()));
      } else {
        slot->max_retained_wal = static_cast<int64_t>(source->max_retained_wal);
        slot_json = slot->ToJson();
        slot_active = slot->active;
        slot_lost = slot->lost();
        if (!slot->exists) {
          auto wal_level = Exec(conn->get(), "SELECT current_setting('wal_level')");
          const std::string level =
              wal_level.ok() ? PQgetvalue(wal_level->get(), 0, 0) : std::string("logical");
          problem(kStatusUnreachable,
                  level == "logical"
                      ? absl::StrCat("replication slot ", source->slot,
                                     " does not exist: the pipeline was never initialised or was "
                                     "torn down (`pgflow run ",
                                     file, "` creates it and copies the tables)")
                      : absl::StrCat("replication slot ", source->slot,
                                     " does not exist, and the server cannot create one: its "
                                     "wal_level is ",
                                     level,
                                     ". Set it on the server (ALTER SYSTEM SET wal_level = "
                                     "logical, then restart PostgreSQL), then `pgflow run ",
                                     file, "`"));
        } else if (slot->lost()) {
          problem(kStatusUnreachable, LostSlotMessage(conn->get(), config.name, file, *slot));
        } else if (slot->max_retained_wal > 0 && slot->retained_bytes > slot->max_retained_wal) {
          problem(kStatusDegraded, absl::StrCat("the slot keeps ", HumanBytes(slot->retained_bytes),
                                                " of WAL, more than max_retained_wal (",
                                                HumanBytes(slot->max_retained_wal), ")"));
        }
      }
      snapshot = CatalogSnapshot(conn->get(), config.name);
      for (std::string& p : IncompleteCopies(conn->get(), config.name, file)) {
        problem(kStatusDegraded, std::move(p));
      }
    }
  }

  // The phase: the process's own word when it answers, else what the slot shows.
  std::string phase;
  if (!process.is_null()) {
    phase = Text(process, "phase", "running");
    if (process.contains("snapshot") && !process["snapshot"].is_null()) {
      snapshot = process["snapshot"];
    }
    if (!process.value("ready", false)) {
      problem(kStatusDegraded,
              absl::StrCat("not ready: ", Text(process, "not_ready_reason", "unknown")));
    }
  } else if (slot_active) {
    if (config.admin.listen.empty()) {
      phase = "running (no admin endpoint to ask for more)";
    } else {
      // Something holds the slot but its endpoint does not answer: a hung process, or not ours.
      phase = "running (its admin endpoint does not answer)";
      problem(kStatusDegraded, absl::StrCat("the admin endpoint does not answer: ",
                                            Text(report["admin"], "error", "no answer")));
    }
  } else if (slot_lost) {
    phase = "stopped, slot lost";
  } else {
    phase = "stopped";
    if (!slot_json.is_null() && slot_json.value("exists", false)) {
      problem(kStatusDegraded,
              "stopped: no pgflow streams from the slot, which keeps WAL on the server until the "
              "pipeline runs again (or `pgflow teardown` drops it)");
    } else if (slot_json.is_null()) {
      // No slot to tell (a kafka source, a snapshot-only pipeline): no answer is no run.
      problem(kStatusDegraded, config.admin.listen.empty()
                                   ? "not running, as far as can be told (no admin endpoint)"
                                   : "not running: its admin endpoint does not answer");
    }
  }
  report["phase"] = phase;
  report["slot"] = slot_json;
  report["snapshot"] = snapshot;
  report["sinks"] = process.is_null() ? nlohmann::json::array() : process["sinks"];
  report["last_error"] = process.is_null() ? nlohmann::json(nullptr) : process["last_error"];
  report["process"] = process;
  report["problems"] = problems;
  static constexpr const char* kHealth[] = {"healthy", "degraded", "unreachable or lost"};
  report["health"] = kHealth[worst];
  health.exit_status = worst;
  return health;
}

std::string FormatStatus(const nlohmann::json& report) {
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    absl::StrAppend(&out, absl::StrFormat("  %-12s %s\n", label, value));
  };
  absl::StrAppend(&out, "pipeline ", Text(report, "pipeline"), " (", Text(report, "file"), ")\n");
  line("health", Text(report, "health"));
  line("phase", Text(report, "phase"));
  line("source",
       absl::StrCat(Text(report["source"], "type"), " ", Text(report["source"], "where")));
  const nlohmann::json& slot = report["slot"];
  if (slot.is_object() && slot.value("exists", false)) {
    std::string safe =
        Text(slot, "wal_status") == "lost" ? "-"
        : slot["safe_wal_size"].is_null()
            ? "no cap (max_slot_wal_keep_size -1)"
            : HumanBytes(static_cast<double>(slot.value("safe_wal_size", int64_t{0})));
    line("slot",
         absl::StrCat(Text(slot, "name"), ": ", slot.value("active", false) ? "active" : "inactive",
                      ", wal_status ", Text(slot, "wal_status"), ", retained WAL ",
                      HumanBytes(static_cast<double>(slot.value("retained_wal_bytes", int64_t{0}))),
                      ", safe_wal_size ", safe));
    line("", absl::StrCat("confirmed ", Text(slot, "confirmed_flush_lsn"), ", server at ",
                          Text(slot, "server_wal")));
  } else if (slot.is_object()) {
    line("slot", absl::StrCat(Text(slot, "name"), ": none"));
  }
  const nlohmann::json& snapshot = report["snapshot"];
  if (snapshot.is_object()) {
    std::string state = snapshot.value("running", false) ? "copying" : Text(snapshot, "state", "");
    line("snapshot", state.empty() ? "-" : state);
    const nlohmann::json tables = snapshot.value("tables", nlohmann::json::array());
    for (const nlohmann::json& t : tables) {
      if (!t.is_object()) continue;
      line("", absl::StrFormat(
                   "%s: %s rows, %s of %s, %d/%d chunks", Text(t, "table"),
                   HumanCount(t.value("rows", uint64_t{0})), HumanBytes(t.value("bytes_done", 0.0)),
                   HumanBytes(t.value("bytes_total", 0.0)), t.value("chunks_done", uint64_t{0}),
                   t.value("chunks_total", uint64_t{0})));
    }
  }
  if (report["sinks"].is_array() && !report["sinks"].empty()) {
    line("sinks",
         absl::StrFormat("%-16s %-10s %10s %14s %10s", "NAME", "TYPE", "LAG", "DURABLE", "QUEUE"));
    for (const nlohmann::json& s : report["sinks"]) {
      if (!s.is_object()) continue;
      line("", absl::StrFormat("%-16s %-10s %9.1fs %14s %10s%s", Text(s, "name"), Text(s, "type"),
                               s.value("lag_seconds", 0.0), Text(s, "durable"),
                               HumanBytes(s.value("queue_bytes", 0.0)),
                               s.value("failed", false) ? "  FAILED" : ""));
    }
  }
  if (report.contains("admin")) {
    line("admin",
         absl::StrCat(Text(report["admin"], "listen"),
                      report["admin"].value("reachable", false)
                          ? ""
                          : absl::StrCat(" (", Text(report["admin"], "error", "no answer"), ")")));
  }
  line("last error", Text(report, "last_error", "none"));
  for (const nlohmann::json& p : report["problems"])
    line("problem", p.is_string() ? p.get<std::string>() : p.dump());
  return out;
}

}  // namespace pgflow
