#include "cli/status_command.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/pipeline_file.h"
#include "common/postgres/conninfo.h"
#include "common/postgres/pg_connection.h"
#include "engine/admin_server.h"
#include "engine/log.h"
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

// What `pgflow status` finds wrong, and the worst severity among it (the exit status).
struct Problems {
  int worst = kStatusHealthy;
  std::vector<std::string> list;
  void Add(int severity, std::string text) {
    worst = std::max(worst, severity);
    list.push_back(std::move(text));
  }
};

// The running process's /status, if it has an admin endpoint and answers as this pipeline;
// else null. Notes in report["admin"] what was asked and why there is no answer.
nlohmann::json AskProcess(const PipelineConfig& config, nlohmann::json* report) {
  nlohmann::json process = nullptr;
  if (config.admin.listen.empty()) return process;
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
  (*report)["admin"] = {{"listen", config.admin.listen},
                        {"reachable", !process.is_null()},
                        {"error", error.empty() ? nlohmann::json(nullptr) : nlohmann::json(error)}};
  return process;
}

// What the source's catalog shows of the pipeline.
struct CatalogView {
  nlohmann::json slot = nullptr;
  nlohmann::json snapshot = nullptr;
  bool slot_active = false;
  bool slot_lost = false;
};

// The problem of a replication slot that does not exist: the pipeline never initialised, or a
// server that cannot create one.
std::string MissingSlotProblem(PGconn* conn, const std::string& slot, const std::string& file) {
  auto wal_level = Exec(conn, "SELECT current_setting('wal_level')");
  const std::string level =
      wal_level.ok() ? PQgetvalue(wal_level->get(), 0, 0) : std::string("logical");
  if (level == "logical") {
    return absl::StrCat("replication slot ", slot,
                        " does not exist: the pipeline was never initialised or was torn down "
                        "(`pgflow run ",
                        file, "` creates it and copies the tables)");
  }
  return absl::StrCat("replication slot ", slot,
                      " does not exist, and the server cannot create one: its wal_level is ", level,
                      ". Set it on the server (ALTER SYSTEM SET wal_level = logical, then "
                      "restart PostgreSQL), then `pgflow run ",
                      file, "`");
}

// The replication slot of `source` as `conn` shows it, into `view`; what is wrong with it.
void ReadSlot(PGconn* conn, const PipelineConfig& config, const PostgresSourceOptions& source,
              const std::string& file, CatalogView* view, Problems* problems) {
  absl::StatusOr<SlotState> slot = ReadSlotState(conn, source.slot);
  if (!slot.ok()) {
    problems->Add(kStatusUnreachable,
                  absl::StrCat("reading the replication slot: ", slot.status().message()));
    return;
  }
  slot->max_retained_wal = static_cast<int64_t>(source.max_retained_wal);
  view->slot = slot->ToJson();
  view->slot_active = slot->active;
  view->slot_lost = slot->lost();
  if (!slot->exists) {
    problems->Add(kStatusUnreachable, MissingSlotProblem(conn, source.slot, file));
  } else if (slot->lost()) {
    problems->Add(kStatusUnreachable, LostSlotMessage(conn, config.name, file, *slot));
  } else if (slot->max_retained_wal > 0 && slot->retained_bytes > slot->max_retained_wal) {
    problems->Add(kStatusDegraded, absl::StrCat("the slot keeps ", HumanBytes(slot->retained_bytes),
                                                " of WAL, more than max_retained_wal (",
                                                HumanBytes(slot->max_retained_wal), ")"));
  }
}

// The source's catalog: report["source"], and for a postgres source the slot and the snapshot
// progress it records.
CatalogView ReadCatalog(const PipelineConfig& config, const std::string& file,
                        nlohmann::json* report, Problems* problems) {
  CatalogView view;
  std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(config);
  nlohmann::json& source_json = (*report)["source"];
  source_json = {{"type", config.source.type},
                 {"where", config.source.factory->Describe(*config.source.options)}};
  if (source == nullptr) return view;
  source_json["where"] = DescribeConninfo(source->url);
  absl::StatusOr<PgConnPtr> conn = Connect(source->url, ConnectionKind::kRegular);
  source_json["reachable"] = conn.ok();
  if (!conn.ok()) {
    source_json["error"] = std::string(conn.status().message());
    problems->Add(kStatusUnreachable,
                  absl::StrCat("source unreachable: ", conn.status().message()));
    return view;
  }
  if (source->snapshot.mode == SnapshotMode::kOnly) return view;
  ReadSlot(conn->get(), config, *source, file, &view, problems);
  view.snapshot = CatalogSnapshot(conn->get(), config.name);
  for (std::string& p : IncompleteCopies(conn->get(), config.name, file)) {
    problems->Add(kStatusDegraded, std::move(p));
  }
  return view;
}

// The phase: the process's own word when it answers (and its snapshot progress, into
// `view`), else what the slot shows.
std::string Phase(const PipelineConfig& config, const nlohmann::json& process,
                  const nlohmann::json& report, CatalogView* view, Problems* problems) {
  if (!process.is_null()) {
    if (process.contains("snapshot") && !process["snapshot"].is_null()) {
      view->snapshot = process["snapshot"];
    }
    if (!process.value("ready", false)) {
      problems->Add(kStatusDegraded,
                    absl::StrCat("not ready: ", Text(process, "not_ready_reason", "unknown")));
    }
    return Text(process, "phase", "running");
  }
  if (view->slot_active) {
    if (config.admin.listen.empty()) return "running (no admin endpoint to ask for more)";
    // Something holds the slot but its endpoint does not answer: a hung process, or not ours.
    const nlohmann::json admin = report.contains("admin") ? report.at("admin") : nullptr;
    problems->Add(kStatusDegraded, absl::StrCat("the admin endpoint does not answer: ",
                                                Text(admin, "error", "no answer")));
    return "running (its admin endpoint does not answer)";
  }
  if (view->slot_lost) return "stopped, slot lost";
  if (!view->slot.is_null() && view->slot.value("exists", false)) {
    problems->Add(kStatusDegraded,
                  "stopped: no pgflow streams from the slot, which keeps WAL on the server until "
                  "the pipeline runs again (or `pgflow teardown` drops it)");
  } else if (view->slot.is_null()) {
    // No slot to tell (a kafka source, a snapshot-only pipeline): no answer is no run.
    problems->Add(kStatusDegraded, config.admin.listen.empty()
                                       ? "not running, as far as can be told (no admin endpoint)"
                                       : "not running: its admin endpoint does not answer");
  }
  return "stopped";
}

}  // namespace

PipelineHealth GatherStatus(const PipelineConfig& config, const std::string& file) {
  PipelineHealth health;
  nlohmann::json& report = health.report;
  Problems problems;
  report["pipeline"] = config.name;
  report["file"] = file;
  nlohmann::json process = AskProcess(config, &report);
  CatalogView view = ReadCatalog(config, file, &report, &problems);
  report["phase"] = Phase(config, process, report, &view, &problems);
  report["slot"] = view.slot;
  report["snapshot"] = view.snapshot;
  report["sinks"] = process.is_null() ? nlohmann::json::array() : process["sinks"];
  report["last_error"] = process.is_null() ? nlohmann::json(nullptr) : process["last_error"];
  report["process"] = process;
  report["problems"] = problems.list;
  static constexpr const char* kHealth[] = {"healthy", "degraded", "unreachable or lost"};
  report["health"] = kHealth[problems.worst];
  health.exit_status = problems.worst;
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

namespace pgflow {
namespace {

struct StatusArgs {
  std::string path;
  bool json = false;
};

// The slots the pipelines before a cutover left in their sources (kept until `pgflow
// teardown` of their file): one line each, or none while the slot is gone.
nlohmann::json SupersededSlots(const PipelineFile& current) {
  nlohmann::json out = nlohmann::json::array();
  for (const PipelineFile& file : EarlierPipelineFiles(current)) {
    absl::StatusOr<PipelineConfig> config = LoadPipelineConfig(file.path);
    if (!config.ok()) continue;
    std::shared_ptr<const PostgresSourceOptions> source = PostgresSourceOf(*config);
    if (source == nullptr) continue;
    absl::StatusOr<PgConnPtr> conn = Connect(source->url, ConnectionKind::kRegular);
    if (!conn.ok()) continue;
    auto slot = Exec(conn->get(),
                     "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text "
                     "FROM pg_replication_slots WHERE slot_name = $1",
                     {source->slot});
    if (!slot.ok() || PQntuples(slot->get()) == 0) continue;
    out.push_back({{"file", file.path},
                   {"pipeline", config->name},
                   {"slot", source->slot},
                   {"source", DescribeConninfo(source->url)},
                   {"retained_bytes", std::stoll(PQgetvalue(slot->get(), 0, 0))}});
  }
  return out;
}

int Status(const StatusArgs& args) {
  // After a cutover, the stream back is what runs.
  const PipelineFile current = CurrentPipelineFile(args.path);
  std::optional<PipelineConfig> config = LoadOrReport(current.path);
  if (!config) return kExitConfig;
  try {
    PipelineHealth health = GatherStatus(*config, current.path);
    if (current.path != args.path) health.report["cut_over_from"] = args.path;
    if (nlohmann::json kept = SupersededSlots(current); !kept.empty()) {
      for (const nlohmann::json& k : kept) {
        health.report["problems"].push_back(
            absl::StrCat("slot ", k["slot"].get<std::string>(), " of pipeline ",
                         k["pipeline"].get<std::string>(), " (before a cutover) is kept in ",
                         k["source"].get<std::string>(), ", holding ",
                         HumanBytes(k["retained_bytes"].get<int64_t>()),
                         " of WAL: `pgflow teardown ", k["file"].get<std::string>(), "` drops it"));
      }
      health.report["superseded"] = kept;
      // A slot nobody reads pins WAL: degraded until it is dropped.
      health.exit_status = std::max(health.exit_status, kStatusDegraded);
    }
    if (args.json) {
      std::printf("%s\n", health.report.dump(2).c_str());
    } else {
      std::printf("%s", FormatStatus(health.report).c_str());
    }
    return health.exit_status;
  } catch (const nlohmann::json::exception& e) {
    // A field of another type than expected, in what a process of another version answered.
    LogError("status %s: unexpected answer from the admin endpoint %s: %s", config->name,
             config->admin.listen, e.what());
    return kStatusUnreachable;
  }
}

}  // namespace

Command AddStatusCommand(CLI::App& app) {
  auto args = std::make_shared<StatusArgs>();
  CLI::App* status = AddCommand(
      app, "status", "How a pipeline stands: phase, slot, retained WAL, lag, last error",
      "How a pipeline stands, running or not: phase (snapshot, streaming, stopped), "
      "snapshot progress, the replication slot (active, wal_status, retained WAL, "
      "safe_wal_size), lag per sink and the last error (those two from the running "
      "process's admin endpoint). Exit status 0 healthy, 1 degraded (stopped, not ready, "
      "retained WAL past max_retained_wal), 2 source unreachable or slot lost or missing.");
  AddPipelineFile(status, &args->path);
  status->add_flag("--json", args->json, "print the status as one JSON object, for scripts");
  return {status, [args] { return Status(*args); }};
}

}  // namespace pgflow
