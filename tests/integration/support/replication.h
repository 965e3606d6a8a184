#pragma once

// A pipeline between two test clusters, as the PostgreSQL sink and DDL tests use it: database
// `name` of the source cluster, followed into database `name` of the target cluster through
// a postgres sink called "replica" (plus any other sinks the test adds).

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/support/test_support.h"

namespace pgflow::testing {

class Replication {
 public:
  // `tables` and `snapshot` are YAML values for source.postgres; `extra_sinks`: more lines
  // under `sinks:`; `sink_options`: more keys of the postgres sink, each written ", key: value".
  Replication(TestCluster& source, TestCluster& target, const std::string& name,
              const std::string& tables, const std::string& snapshot,
              const std::string& extra_sinks = "", const std::string& sink_options = "");

  std::string source_url() const { return source_.Url(name_); }
  std::string target_url() const { return target_.Url(name_); }
  const std::string& yaml() const { return yaml_; }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::string File(const std::string& name) const { return dir_.File(name); }

  // `pgflow run` on the pipeline file, logging into log().
  std::unique_ptr<PgflowProcess> Start() const;
  bool LogHas(const std::string& needle) const;
  // Waits until `pgflow` streams (the snapshot, if any, is over); false if it exited first.
  bool WaitStreaming(PgflowProcess& pgflow) const;
  // The slot's confirmed position, and whether it reached `lsn`.
  std::string Confirmed() const;
  bool ConfirmedAtLeast(const std::string& lsn) const;
  // Waits until the slot confirms everything the source has written so far. (Only meaningful
  // once streaming: during the snapshot the slot sits at its consistent point.)
  bool CaughtUp(std::chrono::seconds timeout) const;
  // Waits until the stream has confirmed everything written so far, then stops pgflow cleanly.
  void DrainAndStop(PgflowProcess& pgflow) const;

 private:
  TestCluster& source_;
  TestCluster& target_;
  std::string name_;
  TempDir dir_;
  std::string yaml_;
};

// Every row of `table` as JSON text, in `order`.
std::vector<std::vector<std::string>> Rows(const std::string& url, const std::string& table,
                                           const std::string& order);

// Expects `table` to hold the same rows on both sides (compared in `order`).
void ExpectSameRows(const Replication& r, const std::string& table, const std::string& order);

}  // namespace pgflow::testing
