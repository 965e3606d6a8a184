#pragma once

// The `kv` sink: the pipeline's tables held in memory and served from the pgflow process over
// Redis, memcached and HTTP (PGEC's idea; see kv_protocols.h for keys and commands).
//
//   cache: {kv: {redis: 127.0.0.1:6380, memcached: 127.0.0.1:11212, http: 127.0.0.1:8080}}
//
// Acknowledgement. The cache keeps nothing on disk, so "durable" cannot mean what it means for
// the other sinks. It acknowledges what it has applied (Flush does nothing more; DurableThrough
// keeps its default), so a kv pipeline never pins WAL. What makes that honest is the other
// half: a cache that starts empty asks for every row again (NeedsFullCopy). On the pipeline's
// first run that is the initial snapshot; on every later start of the process the source copies
// the tables again into the running stream (the `pgflow snapshot` backfill, exact by WAL
// watermarks) while the stream resumes from the slot. Until that copy is complete the cache
// answers "loading" (Redis -LOADING, memcached SERVER_ERROR, HTTP 503) rather than serve a
// partial table. When the pipeline restarts inside the same process (a lost connection), the
// cache and its listeners live on, and transactions it already applied are skipped.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "documents/document_feed.h"
#include "engine/registry.h"
#include "engine/transactional_sink.h"
#include "sinks/kv/kv_documents.h"
#include "sinks/kv/kv_protocols.h"
#include "sinks/kv/kv_server.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

struct KvSinkOptions : SinkOptions {
  KvListenOptions listen;
  KvServiceConfig service;
  KvStoreOptions store;
  bool write_through = false;
  // Joined documents to hold instead of tables' rows (sinks/kv/kv_documents.h).
  documents::DocumentNames documents;
};

// The cache of one kv sink: store, service, listeners and write-through connection. It outlives
// the sink objects of successive pipeline attempts in one process.
struct KvCache;

class KvSink : public TransactionalSink {
 public:
  // `documents`: what Open needs to hold the sink's documents; nullopt without them.
  KvSink(std::shared_ptr<KvCache> cache, bool fresh, SourcePositions positions,
         std::optional<KvDocuments::Setup> documents);
  ~KvSink() override;

  absl::Status Open() override;
  // Renders the documents noted (with documents; otherwise the cache has applied everything).
  absl::Status Flush() override;
  absl::Status Close() override;
  bool NeedsFullCopy() const override { return fresh_; }
  bool NeedsRowsAfterDdl() const override { return true; }
  // pgflow_kv_rows, pgflow_kv_used_memory_bytes, pgflow_kv_max_memory_bytes.
  void CollectMetrics(MetricsRegistry* metrics, const MetricLabels& labels) const override;

 protected:
  absl::Status OnBegin(const TxnInfo& txn) override;
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  absl::Status OnRollback() override;
  absl::Status OnPosition(Lsn position) override;
  absl::Status OnChunkDone(uint64_t chunk, const TableSchemaPtr& table) override;
  absl::Status OnSnapshotDone() override;
  // What the cache applied, in this process (a pipeline restarted in-process skips it again).
  Lsn AppliedThrough() const override;

 private:
  // Applies the snapshot rows staged so far.
  absl::Status CommitStagedReads();
  // With documents: renders what was noted and applies it, with `end` as the applied LSN.
  absl::Status RenderDocuments(Lsn end);

  std::shared_ptr<KvCache> cache_;
  const bool fresh_;
  size_t staged_reads_ = 0;
  std::optional<KvDocuments::Setup> documents_setup_;
  std::unique_ptr<KvDocuments> documents_;
  // With documents: the end of the last transaction (or stream position) taken, applied once
  // the documents it noted are rendered.
  Lsn documents_end_;
};

// Registers the "kv" sink type with the engine's factory registry.
void RegisterKvSink();

}  // namespace pgflow
