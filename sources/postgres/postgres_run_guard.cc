#include "sources/postgres/postgres_run_guard.h"

#include <utility>

#include "common/postgres/pg_connection.h"
#include "sources/postgres/slot_holder.h"

namespace pgflow {

PostgresRunGuard::PostgresRunGuard(std::string pipeline, std::string file,
                                   std::shared_ptr<const PostgresSourceOptions> options)
    : pipeline_(std::move(pipeline)), file_(std::move(file)), options_(std::move(options)) {}

PostgresRunGuard::~PostgresRunGuard() = default;

absl::Status PostgresRunGuard::CheckCanStart() {
  absl::StatusOr<PgConnPtr> conn = Connect(options_->url, ConnectionKind::kRegular);
  if (!conn.ok()) return absl::OkStatus();
  absl::Status free = WaitForSlotFree(conn->get(), pipeline_, options_->slot);
  return absl::IsFailedPrecondition(free) ? free : absl::OkStatus();
}

void PostgresRunGuard::Watch(RunStatus* status, MetricsRegistry* metrics,
                             std::function<void(std::string)> on_lost) {
  monitor_ = std::make_unique<SlotMonitor>(pipeline_, file_, options_, status, metrics,
                                           std::move(on_lost));
  monitor_->Start();
}

void RegisterPostgresRunGuard() {
  RegisterRunGuard("postgres", [](const PipelineConfig& config) -> std::unique_ptr<RunGuard> {
    std::shared_ptr<const PostgresSourceOptions> options = PostgresSourceOf(config);
    if (options == nullptr || options->snapshot.mode == SnapshotMode::kOnly) return nullptr;
    return std::make_unique<PostgresRunGuard>(config.name, config.file, std::move(options));
  });
}

}  // namespace pgflow
