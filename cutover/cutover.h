#pragma once

// `pgflow cutover`: moves an application from a migration pipeline's source (A) to its
// PostgreSQL target (B) through the pooler it connects by, with no failed transaction and a
// pause of about the time B needs to catch up.
//
//   1. checks, changing nothing (cutover/checks.h): the pipeline streams with little lag, B
//      holds every table and sequence, the pooler's database points at A, no session-mode
//      client holds a server, the application's roles can do on B what they do on A, and no
//      session on A writes around the pooler. Anything wrong is reported, all of it at once.
//   1b. verify: the source, as of a point the pipeline holds the target at, compared with the
//      target while the application writes on (`pgflow verify --live`); a difference refuses.
//   2. pause: PAUSE on the pooler (transactions under way finish, new ones wait); one still
//      open after the pause timeout abandons the cutover.
//   3. fence: A's database turns read-only for new sessions (default_transaction_read_only),
//      other sessions are ended if asked, and a marker goes through A's WAL
//      (pg_logical_emit_message) after the last write.
//   4. catch-up: B's sink records having applied the marker's transaction (pgflow.applied):
//      B holds every write A took.
//   5. sequences: B's set to A's values, plus an optional margin.
//   6. slot: the stream back from B to A (its file and publication made before the pause)
//      gets its slot on B, which starts here.
//   7. switch: B is made writable if an earlier cutover fenced it, RETARGET points the pooler's
//      database at B, and RESUME lets the clients go on.
//   8. handover: the running pipeline (its admin endpoint's POST /handover) ends once it has
//      confirmed the marker, and its process runs the stream back in its place.
// A failure before the switch undoes what was done (A writable again, RESUME on A, the stream
// back's slot dropped); after it, nothing is undone (docs/guides/migrate.md says how to go
// back).
//
// The module drives the pipeline (its admin endpoint), A, B and the pooler (its console)
// through their public interfaces only.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/postgres/postgres_origin.h"
#include "engine/stop_signal.h"

namespace pgflow::cutover {

// What the cutover knows of the pipeline, from its file.
struct PipelinePlan {
  std::string name;
  PostgresOrigin source;       // A
  bool skips_keyless = false;  // keyless_tables: skip (such tables are not on B)
  std::string sink;            // the postgres sink's name
  std::string target_url;      // B
  std::string target_schema;   // the sink's `schema` (empty: the source's names)
  std::string admin_listen;    // the pipeline's admin endpoint (empty: none)
};

// The stream back from B to A (step 7), started at the switch so that A stays current and
// going back is a cutover the other way. The caller (cli/) owns the pipeline files; the module
// calls these at their moment.
struct ReverseStream {
  std::string name;  // its pipeline name
  std::string file;  // its pipeline file
  std::string slot;  // its replication slot on B
  // Before the pause: writes its file and creates its publication (and the rest of what
  // `pgflow run` prepares in a source) on B, but no slot: the cutover creates it, named `slot`,
  // inside the pause once B holds everything A took, so that it keeps every write B takes
  // from then on and none before.
  std::function<absl::Status()> prepare;
  // Undoes `prepare` when the cutover is undone: drops the slot, removes the file.
  std::function<void()> forget;
  // After the switch: makes its file the one `pgflow run` runs, before the running pipeline is
  // asked to hand over to it.
  std::function<absl::Status()> take_over;
};

struct CutoverOptions {
  std::string pooler_url;  // the pooler's admin console
  std::string database;    // the pooler's database the application uses
  // What RETARGET points the database at; empty: B's host, port and database name (with the
  // user the database's url named, if any).
  std::string new_url;
  bool dry_run = false;  // the checks only
  std::chrono::milliseconds max_lag{1000};
  std::chrono::milliseconds pause_timeout{5000};
  std::chrono::milliseconds catch_up_timeout{10000};
  bool wait_sessions = false;     // let session-mode clients hold servers; PAUSE waits for them
  bool terminate_others = false;  // end A's sessions that bypass the pooler
  int64_t sequence_margin = 0;    // added to each sequence copied to B
  // `pgflow verify --live` (cli/): run after the checks, before the pause; what it found
  // identical, or why the cutover must not go on. Empty: no comparison (--no-verify).
  std::function<absl::StatusOr<std::string>()> verify;
  // The stream back; none: the pipeline keeps running as it is, idle (--no-reverse).
  std::optional<ReverseStream> reverse;
  // How long the running pipeline may take to hand over to the stream back.
  std::chrono::milliseconds handover_timeout{30000};
  // When requested (SIGINT, SIGTERM), a wait before the switch gives up and the cutover is
  // undone. May be null.
  const StopSignal* stop = nullptr;
};

struct CutoverStep {
  // "checks", "verify", "reverse", "pause", "fence", "catch-up", "sequences", "slot",
  // "switch", "handover"
  std::string name;
  absl::Duration took;
  std::string detail;  // what it did, or why it failed
  bool ok = true;
};

enum class Outcome {
  kChecked,    // --dry-run: every check passed
  kRefused,    // a check failed: nothing changed
  kAbandoned,  // a step before the switch failed: undone, the application stays on A
  kSwitched,   // the application is on B
  kBroken,     // a failure after the switch, or an undo that failed: see `error`
};
const char* OutcomeName(Outcome outcome);

struct CutoverReport {
  Outcome outcome = Outcome::kRefused;
  std::vector<std::string> problems;  // the checks' findings (kRefused)
  std::vector<std::string> notes;     // what the checks saw that does not stop the cutover
  std::vector<CutoverStep> steps;     // in order, each as it ended
  absl::Duration paused;  // from PAUSE sent until RESUME answered: what clients waited at most
  std::string fence_lsn;  // A's WAL position once fenced (the marker's)
  std::string reverse_pipeline;  // the stream back, once it streams
  std::string error;      // kAbandoned, kBroken: the step and the cause
  nlohmann::json ToJson() const;
};

// Runs the cutover; `on_step` (may be empty) is told each step as it ends. Never throws; the
// report says how it ended.
CutoverReport RunCutover(const PipelinePlan& plan, const CutoverOptions& options,
                         const std::function<void(const CutoverStep&)>& on_step);

}  // namespace pgflow::cutover
