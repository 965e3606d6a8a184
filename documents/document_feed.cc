#include "documents/document_feed.h"

#include <chrono>
#include <algorithm>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "documents/document_catalog.h"
#include "documents/document_transforms.h"
#include "engine/config.h"
#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow::documents {
namespace {

// How often a long render logs its progress.
constexpr std::chrono::seconds kReportEvery(10);
// How long transactions the stream delivered may stay invisible to new snapshots.
constexpr std::chrono::seconds kVisibleWithin(60);
// Rendered documents waiting for the sink, in bytes (at least one waits, however large).
constexpr size_t kHandoffBytes = 8 << 20;

// Rendered documents from the rendering thread to the sink's, at most `capacity` waiting.
// Closed by either side: by the renderer when it is done (with its status), by the sink when it
// gives up (with its error, which the renderer's next Put returns).
class Handoff {
 public:
  explicit Handoff(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  // Waits for room; the sink's error once it closed the handoff.
  absl::Status Put(RenderedDocument document) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Handoff* h) { return h->closed_ || h->waiting_.empty() || h->bytes_ < h->capacity_; },
        this));
    if (closed_) return status_;
    bytes_ += Size(document);
    waiting_.push_back(std::move(document));
    return absl::OkStatus();
  }
  // The next document; nullopt once closed and empty.
  std::optional<RenderedDocument> Take() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Handoff* h) { return h->closed_ || !h->waiting_.empty(); }, this));
    if (waiting_.empty()) return std::nullopt;
    RenderedDocument document = std::move(waiting_.front());
    waiting_.pop_front();
    bytes_ -= Size(document);
    return document;
  }
  void Close(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    status_ = std::move(status);
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  static size_t Size(const RenderedDocument& d) {
    return d.key.size() + d.id.size() + (d.document.has_value() ? d.document->size() : 0);
  }

  const size_t capacity_;
  absl::Mutex mu_;
  std::deque<RenderedDocument> waiting_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// Runs a render on a thread of its own, closing `handoff` with its status; joined at the
// latest when it goes out of scope, after closing the handoff for it (so that a sink that
// stops taking documents, by an error or an exception, never leaves it waiting).
class RenderingThread {
 public:
  RenderingThread(Handoff* handoff, std::function<absl::Status()> render)
      : handoff_(handoff), thread_([handoff, render = std::move(render)] {
          handoff->Close(render());
        }) {}
  ~RenderingThread() {
    handoff_->Close(absl::CancelledError("the sink stopped taking documents"));
    Join();
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  Handoff* handoff_;
  std::thread thread_;
};

}  // namespace

absl::Status ReadDocumentNames(const ConfigNode& node, DocumentNames* out) {
  if (!node.IsSequence()) return node.Error("expected a list of document names: [orders]");
  std::set<std::string> seen;
  for (const ConfigNode& item : node.Items()) {
    absl::StatusOr<std::string> name = item.AsString();
    if (!name.ok() || name->empty()) return item.Error("expected a document's name");
    if (!seen.insert(*name).second) return item.Error(Cat("document ", *name, " is named twice"));
    out->names.push_back(*name);
  }
  if (out->names.empty()) return node.Error("name at least one document, or leave the key out");
  out->node = node;
  return absl::OkStatus();
}

namespace {

// The first node under `node` (itself included) whose table none of `followed` covers.
const DocumentNode* Unfollowed(const DocumentNode& node, const std::vector<TableRef>& followed) {
  if (std::none_of(followed.begin(), followed.end(),
                   [&](const TableRef& t) { return t.Covers(node.table); })) {
    return &node;
  }
  for (const DocumentNode& child : node.children) {
    if (const DocumentNode* found = Unfollowed(child, followed)) return found;
  }
  return nullptr;
}

}  // namespace

absl::Status CheckDocumentNames(const DocumentNames& names,
                                const std::optional<ConfigNode>& described,
                                const std::vector<TransformConfig>& transforms,
                                const std::vector<TableRef>* followed) {
  if (names.names.empty()) return absl::OkStatus();
  if (absl::Status s = CheckTransformTypes(transforms, *names.node); !s.ok()) return s;
  if (!described.has_value()) {
    return names.node->Error(
        "the pipeline describes no documents: add a top-level `documents:` section");
  }
  absl::StatusOr<std::map<std::string, DocumentSpec>> specs = ParseDocuments(*described);
  if (!specs.ok()) return specs.status();
  std::vector<std::string> known;
  for (const auto& [name, spec] : *specs) known.push_back(name);
  const std::vector<ConfigNode> items = names.node->Items();
  for (size_t i = 0; i < names.names.size(); ++i) {
    auto spec = specs->find(names.names[i]);
    if (spec == specs->end()) {
      return items[i].Error(Cat("no document '", names.names[i], "' under `documents:` (",
                                known.empty() ? "none" : Join(known, ", "), ")"));
    }
    const DocumentNode* unfollowed =
        followed != nullptr ? Unfollowed(spec->second.root, *followed) : nullptr;
    if (unfollowed != nullptr) {
      return items[i].Error(
          Cat(unfollowed->path, ": ", unfollowed->table.ToString(),
              " is not among the tables the source follows (its `tables:`): add it, or the "
              "document would miss its changes"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DocumentFeed>> DocumentFeed::Open(
    const std::optional<ConfigNode>& described, const std::vector<std::string>& names,
    const std::string& source_url, std::string who,
    const std::vector<TransformConfig>& transforms, const std::string& pipeline) {
  if (!described.has_value()) {
    return absl::InvalidArgumentError(Cat(who, ": the pipeline describes no documents"));
  }
  absl::StatusOr<std::map<std::string, DocumentSpec>> specs = ParseDocuments(*described);
  if (!specs.ok()) return specs.status();
  std::unique_ptr<DocumentFeed> feed(new DocumentFeed(source_url, std::move(who)));
  for (const std::string& name : names) {
    auto it = specs->find(name);
    if (it == specs->end()) {
      return absl::InvalidArgumentError(Cat(feed->who_, ": no document '", name, "'"));
    }
    feed->documents_.push_back(Document{it->second, nullptr, nullptr, nullptr});
  }
  feed->chain_ = BuildTransforms(pipeline, transforms);
  feed->stale_.assign(feed->documents_.size(), false);
  if (absl::Status s = feed->Connect(); !s.ok()) return s;
  for (Document& document : feed->documents_) {
    if (absl::Status s = feed->Build(document); !s.ok()) return s;
  }
  return feed;
}

absl::Status DocumentFeed::Connect() {
  if (conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK) return absl::OkStatus();
  conn_.reset();
  absl::StatusOr<PgConnPtr> conn = pgflow::Connect(url_, ConnectionKind::kRegular);
  if (!conn.ok()) {
    return absl::UnavailableError(
        Cat(who_, ": connecting to the source to render documents: ", conn.status().message()));
  }
  // It only reads.
  if (absl::Status s = Exec(conn->get(), "SET default_transaction_read_only = on").status();
      !s.ok()) {
    return s;
  }
  conn_ = *std::move(conn);
  return absl::OkStatus();
}

absl::Status DocumentFeed::Build(Document& document) {
  absl::StatusOr<Catalog> catalog = ReadCatalog(conn_.get(), document.spec.Tables());
  if (!catalog.ok()) return catalog.status();
  absl::StatusOr<DocumentTransforms> transforms =
      DocumentTransforms::Make(document.spec, *catalog, &chain_);
  if (!transforms.ok()) {
    return absl::FailedPreconditionError(Cat(who_, ": ", transforms.status().message()));
  }
  document.transforms = std::make_unique<DocumentTransforms>(*std::move(transforms));
  absl::StatusOr<DocumentSql> sql =
      DocumentSql::Make(document.spec, *catalog, document.transforms->whole());
  if (!sql.ok()) return absl::FailedPreconditionError(Cat(who_, ": ", sql.status().message()));
  document.sql = std::make_unique<DocumentSql>(*std::move(sql));
  document.renderer = std::make_unique<DocumentRenderer>(document.sql.get());
  return absl::OkStatus();
}

bool DocumentFeed::Reads(const std::string& table) const {
  for (const Document& document : documents_) {
    if (!document.sql->PlacesOf(table).empty()) return true;
  }
  return false;
}

void DocumentFeed::Take(const Change& change, bool in_txn) {
  if (change.op == Op::kDdl) {
    const DdlCommand* ddl = change.ddl.get();
    if (ddl == nullptr || ddl->object_type != "table" || ddl->tag != "ALTER TABLE") return;
    const std::string table = Cat(ddl->schema, ".", ddl->name);
    if (!Reads(table)) return;
    Stale(table);
    NoteTransaction(change.txn.xid);  // (the catalog is read once it is visible)
    return;
  }
  if (change.table == nullptr || change.op == Op::kMessage) return;
  if (change.op == Op::kTruncate) {
    const std::string table = change.table->QualifiedName();
    if (!Reads(table)) return;
    NoteEveryRootReading(table);
    NoteTransaction(change.txn.xid);
    return;
  }
  Note(change, /*snapshotting=*/change.op == Op::kRead && !in_txn);
}

bool DocumentFeed::Truncates(const Change& change) const {
  return change.op == Op::kTruncate && change.table != nullptr &&
         Reads(change.table->QualifiedName());
}

std::vector<const DocumentFeed::Document*> DocumentFeed::RootedIn(
    const std::string& table) const {
  std::vector<const Document*> out;
  for (const Document& document : documents_) {
    if (document.spec.root.table.ToString() == table) out.push_back(&document);
  }
  return out;
}

void DocumentFeed::Note(const Change& change, bool snapshotting) {
  if (change.table == nullptr) return;
  const std::string table = change.table->QualifiedName();
  bool read = false;  // by a document (each renderer finds whether its document reads it)
  for (Document& document : documents_) {
    if (snapshotting && change.op == Op::kRead && document.spec.root.table.ToString() != table) {
      continue;
    }
    read = document.renderer->Note(change) || read;
  }
  if (read && !snapshotting) NoteTransaction(change.txn.xid);
}

void DocumentFeed::NoteEveryRootReading(const std::string& table) {
  for (Document& document : documents_) {
    if (!document.sql->PlacesOf(table).empty()) document.renderer->NoteEveryRoot();
  }
}

void DocumentFeed::Stale(const std::string& table) {
  for (size_t i = 0; i < documents_.size(); ++i) {
    if (!documents_[i].sql->PlacesOf(table).empty()) stale_[i] = true;
  }
}

size_t DocumentFeed::noted() const {
  size_t noted = xids_.size();
  for (const Document& document : documents_) noted += document.renderer->noted();
  return noted;
}

absl::Status DocumentFeed::Render(size_t batch, const Emit& emit) {
  // Connected, and every transaction noted visible: done for the first document with something
  // to render (with nothing noted, neither is).
  bool visible = false;
  for (size_t i = 0; i < documents_.size(); ++i) {
    Document& document = documents_[i];
    if (!stale_[i] && document.renderer->empty()) continue;
    if (!visible) {
      if (absl::Status s = Connect(); !s.ok()) return s;
      if (absl::Status s = AwaitVisible(); !s.ok()) return s;
      visible = true;
    }
    if (stale_[i]) {
      // The schema of one of its tables changed: its queries anew, and every document again
      // (a field's type may have changed them all; what was noted is among them).
      std::set<std::string> roots = document.renderer->TakeRoots();  // (some may be gone)
      if (absl::Status s = Build(document); !s.ok()) {
        document.renderer->NoteRoots(std::move(roots));
        return s;
      }
      document.renderer->NoteRoots(std::move(roots));
      document.renderer->NoteEveryRoot();
      stale_[i] = false;
    }
    // The render runs on a thread of its own, at most kHandoffBytes ahead of `emit` (which
    // writes them to the sink): the source renders the next batch while the sink sends this
    // one. A render that fans out wide (a row many documents hold) says how far it is.
    Handoff handoff(kHandoffBytes);
    RenderingThread rendering(&handoff, [&] {
      return document.renderer->Render(conn_.get(), batch, [&](RenderedDocument d) {
        return handoff.Put(std::move(d));
      });
    });
    const auto start = std::chrono::steady_clock::now();
    auto next_report = start + kReportEvery;
    uint64_t rendered_count = 0;
    absl::Status emitted = absl::OkStatus();
    while (std::optional<RenderedDocument> rendered = handoff.Take()) {
      ++rendered_count;
      if (const auto now = std::chrono::steady_clock::now(); now >= next_report) {
        next_report = now + kReportEvery;
        const double seconds = std::chrono::duration<double>(now - start).count();
        LogInfo("%s: document %s: %d documents rendered in %.0f s (%.0f/s)", who_,
                document.spec.name, rendered_count, seconds, rendered_count / seconds);
      }
      if (rendered->document.has_value() && !document.transforms->empty()) {
        // The transforms at every level; a root they drop has no document.
        absl::StatusOr<std::optional<std::string>> transformed =
            document.transforms->Apply(*rendered->document);
        if (!transformed.ok()) {
          emitted = absl::Status(transformed.status().code(),
                                 Cat(who_, ": document ", document.spec.name, " ",
                                     rendered->id, ": ", transformed.status().message()));
          handoff.Close(emitted);
          break;
        }
        rendered->document = *std::move(transformed);
      }
      emitted = emit(document, *std::move(rendered));
      if (!emitted.ok()) {
        handoff.Close(emitted);  // (the render stops at its next document)
        break;
      }
    }
    rendering.Join();
    if (!emitted.ok()) return emitted;
    // (The noted documents are lost with a failed render: the caller restarts from its last
    // acknowledgement, which notes them again.)
    if (absl::Status s = handoff.status(); !s.ok()) {
      if (PQstatus(conn_.get()) != CONNECTION_OK) conn_.reset();
      return absl::UnavailableError(
          Cat(who_, ": rendering document ", document.spec.name, ": ", s.message()));
    }
  }
  xids_.clear();  // (seen visible, or their changes noted nothing to render)
  return absl::OkStatus();
}

absl::Status DocumentFeed::AwaitVisible() {
  if (xids_.empty()) return absl::OkStatus();
  std::string xids = "{";
  for (uint32_t xid : xids_) xids += Cat(xids.size() > 1 ? "," : "", xid);
  xids += "}";
  // A 32-bit xid is the full one within 2^31 below the snapshot's xmax; at or past xmax (or
  // listed as running) it is not visible yet.
  static const std::string kInvisible =
      "SELECT count(*) FROM (SELECT snap, pg_snapshot_xmax(snap)::text::bigint AS xmax "
      "FROM pg_current_snapshot() AS s(snap)) m, "
      "LATERAL (SELECT ((xmax - xid) % 4294967296 + 4294967296) % 4294967296 AS behind "
      "FROM unnest($1::bigint[]) AS x(xid)) x "
      "WHERE NOT (behind BETWEEN 1 AND 2147483647 AND "
      "pg_visible_in_snapshot((xmax - behind)::text::xid8, snap))";
  const auto deadline = std::chrono::steady_clock::now() + kVisibleWithin;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    absl::StatusOr<PgResultPtr> result = Exec(conn_.get(), kInvisible, {xids});
    if (!result.ok()) return result.status();
    if (std::string(PQgetvalue(result->get(), 0, 0)) == "0") return absl::OkStatus();
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::UnavailableError(
          Cat(who_, ": transactions the stream delivered are still not visible on the source "
                    "after ", kVisibleWithin.count(), " s (", xids, ")"));
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace pgflow::documents
