#pragma once

// The guard against WAL bloat: how much WAL a pipeline's replication slot makes the server
// keep, read from pg_replication_slots, for `pgflow status`, /status, the metrics and a
// warning past `max_retained_wal`; and the plain explanation of a slot the server invalidated
// (max_slot_wal_keep_size), with the way out.

#include <libpq-fe.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "engine/metrics.h"
#include "engine/run_status.h"
#include "sources/postgres/postgres_source_config.h"

namespace pgflow {

// The slot `slot` as the server shows it (exists false when there is none). Works for any
// role: pg_replication_slots is readable by all.
absl::StatusOr<SlotState> ReadSlotState(PGconn* conn, const std::string& slot);

// What to tell the user of pipeline `pipeline` (file `file`) whose slot is lost: what was
// lost (from the slot's confirmed position to the oldest WAL the server still has, when
// `conn` may read it) and how to copy the tables again.
std::string LostSlotMessage(PGconn* conn, const std::string& pipeline, const std::string& file,
                            const SlotState& slot);

// Reads the slot every `interval` on a connection of its own, from a thread of its own, while
// the pipeline runs: publishes it to `status` and as metrics, warns (every 5 minutes) while
// retained WAL exceeds max_retained_wal, and calls `on_lost` once if the server invalidated the
// slot. A source it cannot reach is retried at the next interval (the pipeline reports that
// outage itself).
class SlotMonitor {
 public:
  SlotMonitor(std::string pipeline, std::string file,
              std::shared_ptr<const PostgresSourceOptions> options, RunStatus* status,
              MetricsRegistry* metrics, std::function<void(std::string)> on_lost,
              std::chrono::milliseconds interval = std::chrono::seconds(2));
  ~SlotMonitor();  // Stop()
  void Start();
  void Stop();

 private:
  void Run();
  void Poll(PGconn* conn);

  const std::string pipeline_;
  const std::string file_;
  const std::shared_ptr<const PostgresSourceOptions> holder_;
  const PostgresSourceOptions& options_;
  RunStatus* const status_;
  MetricsRegistry* const metrics_;
  const std::function<void(std::string)> on_lost_;
  const std::chrono::milliseconds interval_;
  absl::Notification stop_;
  std::thread thread_;
  // Cancels the query in progress, so that Stop does not wait out a server that hangs.
  absl::Mutex cancel_mu_;
  PGcancel* cancel_ ABSL_GUARDED_BY(cancel_mu_) = nullptr;
  bool lost_reported_ = false;
  absl::Time last_warning_ = absl::InfinitePast();
};

}  // namespace pgflow
