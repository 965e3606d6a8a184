#pragma once

// The `opensearch` sink: every chosen table as an index of documents that follows the
// database (OpenSearch 1-3, and Elasticsearch 7-8, through the `_bulk` API they share).
//
//   search:
//     opensearch: {url: "http://127.0.0.1:9200", index: "{schema}.{table}"}
//
// - A row is a document: `_id` is its key (one column: its text; several: a JSON array of
//   their values; longer than 512 bytes: "sha256:" and the hex digest of that). With
//   `shared: true` several tables may share an index ("shop", "{schema}"): then each document
//   carries `pgflow_table` ("public.orders", mapped as a keyword) and its `_id` is
//   "public.orders/<key>", so rows of different tables never collide, and a TRUNCATE or a
//   dropped table deletes only its own documents. Without it, a second table reaching an index
//   stops the pipeline, naming both.
// - DROP TABLE (`on_drop_table`): keep the documents (default), or delete them: the table's
//   own index, or its documents in a shared one. Snapshot rows
//   and inserts index, updates index the new row, deletes delete, TRUNCATE deletes every
//   document of the index (read by a scroll, deleted in bulk under the TRUNCATE's version). A
//   table without a key is refused: a document needs an id.
// - Order is exact under retries and restarts: every write carries an external version
//   (`external_gte`), the commit LSN of its transaction (a snapshot row: the snapshot's
//   consistent point, so a streamed change always wins over a copied row). The changes of one
//   transaction to one row are folded into its last, so versions rise strictly per document.
//   A 409 (a newer version is there) and a 404 on a delete count as done.
// - Indexes are created when first written, with an explicit mapping from the column types
//   (text with a keyword subfield, numbers, dates, booleans, json as flat_object, arrays by
//   their elements); a column added later is added to the mapping before its first document.
// - An update whose new row lacks an unchanged TOASTed value (the stream does not send it) is
//   a partial update of the fields it has (`update` with `doc`): indexing the row would lose
//   the field. Partial updates carry no external version.
// - Durability: Flush sends what is buffered as `_bulk` requests and returns once every item
//   is done. Items that fail for a while (408, 429, 5xx, the node unreachable: Classify in
//   common/http/retry_policy.h) are sent again, and only they, after a Backoff of 100 ms doubling
//   to 10 s (or the Retry-After asked for) for up to `retry_for`, after which the
//   pipeline restarts from its last acknowledgement (nothing is lost). An item refused for good
//   (400: a mapping conflict, a value the field cannot take) stops the pipeline naming the
//   document and the reason; with `dead_letter:` it is recorded there (engine/dead_letter.h),
//   durably before the flush returns, and the rest goes on.
//
// - A flush sends its documents over `connections` requests at once (libcurl's multi
//   interface, on the sink's thread), spread by id, so one slow request does not hold the rest;
//   while the node pushes back (429, 5xx) the requests at once are halved, and grow again by
//   one per round it takes in full.
// - Indexes pgflow creates for the initial snapshot (fast_load) start with refresh off and no
//   replicas, marked `_meta.pgflow.loading` in their mapping; once the snapshot is in, they get
//   `refresh_interval` and `replicas` (also after a run that stopped mid-load, at the first
//   change streamed to them). Indexes that exist already are left as they are.
//
// - A column whose type changes so that the index cannot take it in place (integer to text, ...),
//   or a column dropped or renamed, in an index pgflow created for one table: at the first row of
//   the new shape, pgflow creates a new index "<index>-r<lsn>" with the new mapping, asks the
//   source for a backfill of the table (as `pgflow snapshot` does) and writes the table's changes
//   there; once the backfill is complete (every sink holds it), the alias <index> is pointed at the
//   new index and the old one removed, in one _aliases call: searches see the old index until then,
//   never a half-built one. A restart finds the rebuild again by the new index's _meta.

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "nlohmann/json.hpp"
#include "common/postgres/pg_connection.h"
#include "engine/registry.h"
#include "engine/transactional_sink.h"
#include "schemas/json_encoding.h"
#include "common/http/http_client.h"
#include "documents/document_feed.h"

namespace pgflow {

struct OpenSearchSinkOptions : SinkOptions {
  std::vector<std::string> url;
  std::string username;
  std::string password;
  std::string api_key;
  HttpEndpointOptions http =
      HttpEndpointOptions::WithTimeout(std::chrono::milliseconds(30000));  // TLS, gzip, timeout
  std::string index = "{schema}.{table}";
  std::string refresh_interval = "1s";
  int replicas = -1;  // -1: the cluster's default
  bool fast_load = true;
  bool shared = false;  // several tables per index
  // column -> mapping (JSON text of an object), over the one derived from its type.
  absl::flat_hash_map<std::string, std::string> properties;
  bool derive_mapping = true;  // false: the cluster's index templates or dynamic mapping decide
  // DROP TABLE of a followed table: keep its documents, or delete them (its index, when the
  // table has one of its own).
  enum class OnDrop { kKeep, kDelete } on_drop_table = OnDrop::kKeep;
  uint64_t batch_bytes = 5 << 20;
  int batch_docs = 2000;
  int connections = 4;
  std::chrono::milliseconds retry_for{300000};
  // Joined documents to write instead of tables' rows (the pipeline's `documents:`).
  documents::DocumentNames documents;
};

class OpenSearchSink : public TransactionalSink {
 public:
  OpenSearchSink(SinkContext context, std::shared_ptr<const OpenSearchSinkOptions> options);

  absl::Status Open() override;
  absl::Status Flush() override;
  absl::Status Close() override;
  uint64_t DeadLettered() const override { return dead_lettered_.load(); }
  // A column added with a default reaches the documents already indexed by a new read of the
  // table (their fields are the row's, not DDL's to fill).
  bool NeedsRowsAfterDdl() const override { return true; }

 protected:
  absl::Status OnBegin(const TxnInfo& txn) override;
  absl::Status OnChange(const Change& change, bool in_txn) override;
  absl::Status OnCommit(const TxnInfo& txn) override;
  absl::Status OnRollback() override;
  absl::Status OnSnapshotDone() override;

 private:
  // One bulk action, its lines ready to send.
  struct Action {
    std::string index;
    std::string id;
    std::string lines;  // action line and, but for a delete, the source line
    bool is_delete = false;
    // The change it was made from, kept only with `dead_letter:` (to record it if refused).
    std::shared_ptr<const Change> change;
  };

  // The index of `schema`.`table` (a route's destination first); InvalidArgument naming it when
  // it is not a valid index name.
  absl::StatusOr<std::string> IndexFor(const std::string& destination, const std::string& schema,
                                       const std::string& table);
  absl::StatusOr<std::string> IndexFor(const Change& change) {
    return IndexFor(change.destination, change.table->schema, change.table->name);
  }
  // Makes `index` (the name the table's documents go to) map `table`'s columns and returns the
  // index to write them to: `index`, or while it is rebuilt the index being built. `loading`:
  // the change is a row of the initial snapshot (an index created for it is created for the
  // load: no refresh, no replicas, until FinishLoad). `lsn`: the change's, naming a rebuild.
  absl::StatusOr<std::string> EnsureMapping(const std::string& index, const TableSchemaPtr& table,
                                            bool loading, Lsn lsn);
  // What `index` maps (read on first sight, or created from `table` with `meta` as its
  // _meta.pgflow), kept in mapped_; columns of `table` it lacks are added.
  absl::Status LoadOrCreate(const std::string& index, const TableSchemaPtr& table, bool loading,
                            const std::string& meta);
  // A column of `table` changed type in a way `index` cannot take in place: a new index is
  // built behind it (a backfill of the table from the source), swapped in when complete.
  absl::StatusOr<std::string> StartRebuild(const std::string& index, const TableSchemaPtr& table,
                                           const std::string& why, Lsn lsn);
  // Asks the source for a backfill of the table and records it in the target's _meta.
  absl::StatusOr<int64_t> RequestRebuildBackfill(const std::string& index,
                                                 const std::string& target,
                                                 const std::string& schema,
                                                 const std::string& table);
  // At Open: rebuilds a stop or a crash cut short, found by their index's _meta.
  absl::Status FindRebuilds();
  // Swaps the rebuilds whose backfill is complete in (at most once a second).
  absl::Status CheckRebuilds();
  absl::Status Swap(const std::string& index);
  // Forgets what is known of `index` (its mapping, the table versions checked against it, a
  // load in progress): it was removed, or its name now points elsewhere.
  void ForgetIndex(const std::string& index);
  // The index's settings as they should be once loaded: refresh_interval and replicas.
  std::string AfterLoadSettings() const;
  // The body of the request creating an index that maps `properties`, with `pgflow` (an object)
  // as its _meta.pgflow: for an initial load (`fast`: refresh off and no replicas, marked
  // loading until FinishLoad), or else with the settings it keeps after one.
  nlohmann::json NewIndexBody(nlohmann::json properties, nlohmann::json pgflow, bool fast) const;
  // What an index's `mappings` (as GET /<index>/_mapping has them) say of it: nullopt when
  // pgflow did not create it (no _meta.pgflow), else whether it was created for an initial load
  // not finished yet (a stop or a crash cut it short).
  static std::optional<bool> LoadMark(const nlohmann::json& mappings);
  absl::Status FinishLoad(const std::string& index);
  absl::StatusOr<Action> MakeAction(const Change& change);
  absl::Status Add(Action action);
  // Deletes every document of `table` from `index` under `version`: the whole index, or in a
  // shared one the table's documents. `why` names the command, for the log.
  absl::Status DeleteDocuments(const std::string& index, const std::string& table, Lsn version,
                               const std::string& why);
  absl::Status Truncate(const Change& change);
  absl::Status DropTable(const Change& change);
  // Sends every buffered action, retrying the items that fail for a while.
  absl::Status SendAll();
  // What the answer to the actions `sent` means: those to send again go to `again` (with the
  // reason and any Retry-After), a permanent refusal is an error.
  absl::Status Judge(const absl::StatusOr<HttpResponse>& res, std::vector<Action>& sent,
                     std::vector<Action>* again, std::string* reason, int* wait_seconds);

  // Joined documents (`documents:`, opensearch_documents.cc): each an index of its own, its
  // documents rendered from the source by feed_ as changes touch them.
  absl::Status OpenDocuments();
  absl::Status OnDocumentChange(const Change& change);
  // Renders what feed_ noted into pending_, each document's write folded into one already
  // pending for it (so that two renders of one document never race in a batch).
  absl::Status RenderDocuments();
  absl::Status AddDocument(Action action);

  // `id` as a document's _id: hashed ("sha256:" and the hex digest) when longer than OpenSearch
  // takes.
  static std::string DocumentId(std::string id);

  // In an index several tables share: the field naming each document's table.
  static constexpr char kTableField[] = "pgflow_table";

  const SinkContext context_;
  const std::shared_ptr<const OpenSearchSinkOptions> options_;
  // `shared`: several tables may share an index, so each document carries its table
  // (kTableField) and its id starts with it.
  const bool shared_;
  // The field type json and jsonb columns map to, by the node's version (Open): flat_object
  // (OpenSearch 2.7+), flattened (Elasticsearch 7.3+), else an object kept but not indexed.
  std::string json_type_ = "flat_object";
  // The mapping of a column: the user's (`properties`) or the one derived from its type.
  nlohmann::json Mapping(const Column& column) const;
  // Without `shared`: the table each index was first written by in this run (a second is an
  // error, naming both: their ids would collide).
  absl::flat_hash_map<std::string, std::pair<uint32_t, std::string>> index_table_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<DeadLetterStore> dead_letters_;  // with `dead_letter:`
  std::atomic<uint64_t> dead_lettered_{0};         // read by the metrics from another thread
  std::vector<Action> pending_;  // in order, ready for _bulk
  size_t pending_bytes_ = 0;
  // The open transaction's actions, one per document (the last change wins).
  std::vector<Action> txn_;
  absl::flat_hash_map<std::string, size_t> txn_slot_;  // index + '\0' + id -> position in txn_
  // What each index is known to map (field -> type; "" for an object), and the table
  // versions already checked against it.
  struct IndexState {
    absl::flat_hash_map<std::string, std::string> fields;
    bool owned = false;  // created by pgflow (_meta.pgflow): it may rebuild it
  };
  absl::flat_hash_map<std::string, IndexState> mapped_;
  // Indexes being rebuilt after a type change, by name: the index built, the backfill filling
  // it (pgflow.backfills on the source).
  struct Rebuild {
    std::string target;
    int64_t backfill = 0;
  };
  absl::flat_hash_map<std::string, Rebuild> rebuilds_;
  std::chrono::steady_clock::time_point rebuilds_checked_{};
  PgConnPtr source_conn_;  // reads the backfills' state
  absl::flat_hash_map<std::string, TableSchemaPtr> checked_;  // index + table version
  // Indexes created for the initial load (fast_load), whose settings FinishLoad restores.
  absl::flat_hash_set<std::string> loading_;
  // Requests sent at once now: `connections`, halved while the node pushes back (429, 5xx),
  // grown again by one per round it takes in full.
  size_t lanes_ = 0;
  std::string scratch_;

  // With `documents:`.
  std::unique_ptr<documents::DocumentFeed> feed_;
  absl::flat_hash_map<std::string, std::string> document_index_;  // document -> its index
  // The version of the documents rendered next: the last commit LSN (or snapshot point) seen.
  Lsn document_version_;
  absl::flat_hash_map<std::string, size_t> pending_document_;  // index + '\0' + id -> pending_
};

// Registers the "opensearch" sink type.
void RegisterOpenSearchSink();

}  // namespace pgflow
