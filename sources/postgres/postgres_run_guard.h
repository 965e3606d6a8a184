#pragma once

// What a PostgreSQL source adds to a run of its pipeline (engine/runner.h): the run refuses to
// start while another process holds the pipeline's replication slot, and watches the slot
// while it runs (sources/postgres/slot_monitor.h): retained WAL for /status and the metrics, a
// warning past max_retained_wal, and the end of the run when the server invalidated the slot.

#include <functional>
#include <memory>
#include <string>

#include "engine/runner.h"
#include "sources/postgres/postgres_source_config.h"
#include "sources/postgres/slot_monitor.h"

namespace pgflow {

class PostgresRunGuard : public RunGuard {
 public:
  // `file`: the pipeline file, named in the messages that say what to run.
  PostgresRunGuard(std::string pipeline, std::string file,
                   std::shared_ptr<const PostgresSourceOptions> options);
  ~PostgresRunGuard() override;  // stops the slot monitor

  // FailedPrecondition naming the holder when a live pgflow (or something that is no pgflow)
  // holds the slot (sources/postgres/slot_holder.h). Said before the sinks open their
  // listeners, whose "address in use" would say less. A source out of reach is OK.
  absl::Status CheckCanStart() override;
  // Starts the slot monitor; `on_lost` gets the explanation of an invalidated slot.
  void Watch(RunStatus* status, MetricsRegistry* metrics,
             std::function<void(std::string)> on_lost) override;

 private:
  const std::string pipeline_;
  const std::string file_;
  const std::shared_ptr<const PostgresSourceOptions> options_;
  std::unique_ptr<SlotMonitor> monitor_;
};

// Registers PostgresRunGuard for the "postgres" source type: a pipeline that only copies
// (snapshot mode `only`) leaves no slot behind and gets none.
void RegisterPostgresRunGuard();

}  // namespace pgflow
