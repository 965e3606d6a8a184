#pragma once

// The PostgreSQL source: logical replication with the built-in pgoutput plugin.
//
// Prepare() checks the server (wal_level, version), resolves the configured tables, warns about
// tables whose updates and deletes cannot be streamed correctly, creates or updates the
// publication and creates the logical slot if missing. Stream() runs START_REPLICATION from
// the slot, decodes every message into typed events, answers keepalives, sends standby status
// updates carrying only the confirmed (durable everywhere) position, and reconnects with
// backoff after a lost connection, resuming after the last transaction it handed on.

#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/source.h"
#include "schemas/catalog.h"
#include "sources/postgres/pg_connection.h"

namespace pgflow {

class PostgresSource : public Source {
 public:
  explicit PostgresSource(PipelineConfig config);
  ~PostgresSource() override;

  absl::StatusOr<Lsn> Prepare() override;
  absl::Status Stream(Emitter& emitter, const AckTracker& acks, const StopSignal& stop) override;
  absl::Status Finish(Lsn confirmed) override;

 private:
  class StreamState;

  absl::Status CheckServer(PGconn* conn);
  absl::Status CheckTables(PGconn* conn);
  absl::Status EnsurePublication(PGconn* conn);
  absl::StatusOr<Lsn> EnsureSlot(PGconn* conn);
  absl::Status StartReplication(Lsn from);

  PipelineConfig config_;
  const PostgresSourceConfig& source_;
  PgConnPtr replication_;
  Lsn start_;
};

}  // namespace pgflow
