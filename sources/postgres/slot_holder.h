#pragma once

// Who holds a pipeline's replication slot, and whether a new run may take it. A pgflow's
// replication connection names its process and host (ReplicationApplicationName), which
// pg_stat_activity shows beside the WAL sender that holds the slot.

#include <string>

#include "absl/status/status.h"
#include "common/postgres/pg_connection.h"

namespace pgflow {

// Who holds a slot through WAL sender `server_pid`: "pgflow process 4242 on db-host (since
// ...; its WAL sender is server process 1234)", or the server process, its application and
// client when it is no pgflow.
std::string DescribeSlotHolder(PGconn* conn, const std::string& server_pid);

// Returns once `slot` is free (or missing): at once when nothing holds it; after waiting (up to
// 10 s) when a pgflow holds it that died (its WAL sender lets go within moments) or runs on
// another machine (which may be waiting out a lost connection). An error naming the holder when
// a live pgflow of this machine runs `pipeline`, when something that is no pgflow holds the
// slot, or when the wait runs out.
absl::Status WaitForSlotFree(PGconn* conn, const std::string& pipeline, const std::string& slot);

}  // namespace pgflow
