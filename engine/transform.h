#pragma once

// Where transforms run (the types live in transformers/, one per file, registered by name:
// engine/registry.h, TransformFactory), and the rules every one of them keeps:
//
//   source ──► TransformingEmitter(pipeline chain) ──► fan-out ──► [sink chain] ──► sink
//
// - A transform sees change events only. Control events (begin, commit, rollback, positions,
//   snapshot chunk marks, snapshot done) pass every chain in place, so that acknowledgement
//   never depends on what a transform kept; the table a chunk mark names is the one the
//   transforms made of it (OutputTable).
// - A transform may rewrite a change, drop it, or change its table's shape (drop or rename a
//   column). The shape it hands on must be one output TableSchema per input TableSchema
//   version, the same object every time, so that sinks keep caching by schema pointer
//   (OutputSchemas keeps that mapping for a transform).
// - A batch is transformed once, even when the fan-out is full and the source hands the same
//   batch again (TransformingEmitter keeps the transformed batch until it is taken).
// - A table a transform may touch never takes the raw COPY path: its snapshot rows are
//   decoded (Emitter::WantsRawCopy asks the chain).
//
// Thread-compatible: a chain is used by one thread at a time (the source's, or one sink's).

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/change.h"
#include "engine/source.h"

namespace pgflow {

class Transform {
 public:
  virtual ~Transform() = default;
  // Rewrites `*change` in place, or returns false to drop it. An error stops the pipeline (no
  // position past it is acknowledged).
  virtual absl::StatusOr<bool> Apply(Change* change) = 0;
  // For a transform that may turn one change into several (lua): as Apply, and the changes it
  // appends to `more` follow `*change` (or take its place when it returns false), through the
  // rest of the chain. `more` is empty on entry.
  virtual absl::StatusOr<bool> Expand(Change* change, std::vector<Change>* more) {
    (void)more;
    return Apply(change);
  }
  // The schema the sinks see for `table` (what control events that name a table, a snapshot
  // chunk's end, carry on): `table` itself unless the transform reshapes it.
  virtual TableSchemaPtr OutputTable(const TableSchemaPtr& table) { return table; }
  // Whether Apply may change or drop rows of `table`; a table no transform touches keeps the
  // raw COPY path for its snapshot rows.
  virtual bool Touches(const TableSchema& table) const = 0;
  // Whether Apply may change the value of `column` in rows of `table` (joined documents are
  // found by the values of their join columns: documents/document_transforms.h).
  virtual bool Changes(const TableSchema& table, std::string_view column) const {
    (void)column;
    return Touches(table);
  }
};

// For a transform that changes a table's shape: the output schema of each input schema version,
// made once and handed out every time after. Holds the inputs it has seen (a few per table: one
// per schema change).
class OutputSchemas {
 public:
  using Make = std::function<TableSchemaPtr(const TableSchema& input)>;
  TableSchemaPtr For(const TableSchemaPtr& input, const Make& make);

 private:
  struct Entry {
    TableSchemaPtr input;  // keeps the key's address from being reused
    TableSchemaPtr output;
  };
  absl::flat_hash_map<const TableSchema*, Entry> outputs_;
};

// Transforms applied in order.
class TransformChain {
 public:
  TransformChain() = default;
  explicit TransformChain(std::vector<std::unique_ptr<Transform>> transforms);

  bool empty() const { return transforms_.empty(); }
  bool Touches(const TableSchema& table) const;
  // Whether a transform may change `column` in rows of `table` (Transform::Changes).
  bool Changes(const TableSchema& table, std::string_view column) const;

  // One change through the chain, for a transform that makes one change of one (every type
  // but lua): false when one dropped it.
  absl::StatusOr<bool> ApplyOne(Change* change);

  // `batch` with every change event run through the chain: dropped changes removed, control
  // events untouched and in place. The input is shared with other consumers and never
  // modified; an empty chain returns it as it is.
  absl::StatusOr<EventBatchPtr> Apply(const EventBatchPtr& batch);

 private:
  // Runs `change` through the transforms from `first` on, appending what comes out to `out`.
  absl::Status Run(Change change, size_t first, const Event& like, EventBatch* out);

  std::vector<std::unique_ptr<Transform>> transforms_;
};

// The Emitter that stands between the source and the fan-out when the pipeline has
// transforms. Its errors go to `fail` (the pipeline records them and stops); Emit then answers
// kClosed, as the fan-out does when the pipeline stops.
class TransformingEmitter : public Emitter {
 public:
  using FailFn = std::function<void(absl::Status)>;
  // `next` must outlive this emitter.
  TransformingEmitter(TransformChain chain, Emitter* next, FailFn fail);

  Result Emit(const EventBatchPtr& batch, absl::Duration timeout) override;
  void NoteServerWalEnd(Lsn wal_end) override { next_->NoteServerWalEnd(wal_end); }
  void NoteBackfill(std::string what) override { next_->NoteBackfill(std::move(what)); }
  void NoteSnapshot(std::vector<TableProgress> tables, bool running) override {
    next_->NoteSnapshot(std::move(tables), running);
  }
  bool WantsRawCopy(const TableSchema& table) const override {
    return !chain_.Touches(table) && next_->WantsRawCopy(table);
  }

 private:
  TransformChain chain_;
  Emitter* next_;
  FailFn fail_;
  // The batch being handed on and what the chain made of it, kept until `next_` took it all,
  // so that a batch the source emits again after kTimeout is not transformed twice.
  EventBatchPtr input_;
  EventBatchPtr output_;
};

}  // namespace pgflow
