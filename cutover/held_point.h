#pragma once

// A consistent point of a running pipeline, for `pgflow verify --live`: an exported snapshot of
// its source as of a WAL position X, and the pipeline held at X (its admin endpoint's POST
// /hold, engine/hold_gate.h), so that while the application goes on writing to the source, the
// pipeline's targets show the source exactly as of X, and the snapshot can be compared with
// them. Released by Release or the destructor (and by the pipeline itself once the hold runs
// out).
//
// The snapshot is a temporary logical replication slot's (CREATE_REPLICATION_SLOT ...
// TEMPORARY ... EXPORT_SNAPSHOT), kept as long as its connection: the point lives as long as
// this object. A pipeline already past X when asked is asked again at a new point.

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/postgres/pg_connection.h"
#include "engine/lsn.h"

namespace pgflow::cutover {

class HeldPoint {
 public:
  // Takes the point of pipeline `pipeline`: `source_url` as it reads it (a role with
  // REPLICATION), `admin` its admin endpoint (which must say it is that pipeline's); the pipeline
  // holds for `longest` at most. The point waits for the source's transactions under way to end:
  // for `wait` at most (an error then names the oldest).
  static absl::StatusOr<std::unique_ptr<HeldPoint>> Take(const std::string& pipeline,
                                                         const std::string& source_url,
                                                         const std::string& admin,
                                                         std::chrono::seconds longest,
                                                         std::chrono::milliseconds wait);

  HeldPoint(const HeldPoint&) = delete;
  HeldPoint& operator=(const HeldPoint&) = delete;
  ~HeldPoint();

  Lsn at() const { return at_; }
  // The snapshot's name, for SET TRANSACTION SNAPSHOT on connections to the source.
  const std::string& snapshot() const { return snapshot_; }
  // How long the pipeline took to hold once asked, at the last attempt; and the attempts.
  std::chrono::milliseconds took() const { return took_; }
  int attempts() const { return attempts_; }

  // OK while the pipeline still holds there (not released, not run out).
  absl::Status StillHeld() const;
  // Lets the pipeline go on and drops the snapshot. Idempotent.
  absl::Status Release();

 private:
  HeldPoint() = default;

  std::string admin_;
  PgConnPtr replication_;  // holds the slot and its snapshot
  Lsn at_;
  std::string snapshot_;
  std::chrono::milliseconds took_{0};
  int attempts_ = 0;
  bool held_ = false;
};

}  // namespace pgflow::cutover
