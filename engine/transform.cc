#include "engine/transform.h"

namespace pgflow {

TableSchemaPtr OutputSchemas::For(const TableSchemaPtr& input, const Make& make) {
  auto it = outputs_.find(input.get());
  if (it != outputs_.end()) return it->second.output;
  TableSchemaPtr output = make(*input);
  outputs_.emplace(input.get(), Entry{input, output});
  return output;
}

TransformChain::TransformChain(std::vector<std::unique_ptr<Transform>> transforms)
    : transforms_(std::move(transforms)) {}

bool TransformChain::Touches(const TableSchema& table) const {
  for (const auto& transform : transforms_) {
    if (transform->Touches(table)) return true;
  }
  return false;
}

bool TransformChain::Changes(const TableSchema& table, std::string_view column) const {
  for (const auto& transform : transforms_) {
    if (transform->Changes(table, column)) return true;
  }
  return false;
}

absl::StatusOr<bool> TransformChain::ApplyOne(Change* change) {
  for (const auto& transform : transforms_) {
    absl::StatusOr<bool> kept = transform->Apply(change);
    if (!kept.ok() || !*kept) return kept;
  }
  return true;
}

absl::StatusOr<EventBatchPtr> TransformChain::Apply(const EventBatchPtr& batch) {
  if (transforms_.empty()) return batch;
  auto out = std::make_shared<EventBatch>();
  out->events.reserve(batch->events.size());
  for (const Event& event : batch->events) {
    if (event.kind != EventKind::kChange) {
      out->events.push_back(event);
      if (TableSchemaPtr& table = out->events.back().change.table; table != nullptr) {
        for (const auto& transform : transforms_) table = transform->OutputTable(table);
      }
      out->bytes += event.ApproximateBytes();
      continue;
    }
    if (absl::Status s = Run(event.change, 0, event, out.get()); !s.ok()) return s;
  }
  return out;
}

absl::Status TransformChain::Run(Change change, size_t first, const Event& like,
                                 EventBatch* out) {
  for (size_t i = first; i < transforms_.size(); ++i) {
    std::vector<Change> more;  // no allocation unless a transform adds to it
    absl::StatusOr<bool> kept = transforms_[i]->Expand(&change, &more);
    if (!kept.ok()) return kept.status();
    if (!more.empty()) {
      if (*kept) {
        if (absl::Status s = Run(std::move(change), i + 1, like, out); !s.ok()) return s;
      }
      for (size_t j = 0; j < more.size(); ++j) {
        more[j].part = change.part * 1000 + j + 1;
        if (absl::Status s = Run(std::move(more[j]), i + 1, like, out); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (!*kept) return absl::OkStatus();
  }
  Event event;
  event.kind = EventKind::kChange;
  event.txn = like.txn;
  event.position = like.position;
  event.chunk = like.chunk;
  event.rows = like.rows;
  event.change = std::move(change);
  out->bytes += event.ApproximateBytes();
  out->events.push_back(std::move(event));
  return absl::OkStatus();
}

TransformingEmitter::TransformingEmitter(TransformChain chain, Emitter* next, FailFn fail)
    : chain_(std::move(chain)), next_(next), fail_(std::move(fail)) {}

Emitter::Result TransformingEmitter::Emit(const EventBatchPtr& batch, absl::Duration timeout) {
  if (batch != input_) {
    absl::StatusOr<EventBatchPtr> transformed = chain_.Apply(batch);
    if (!transformed.ok()) {
      fail_(transformed.status());
      return Result::kClosed;
    }
    input_ = batch;  // held, so that its address is not reused while it is in progress
    output_ = *std::move(transformed);
  }
  Result result = next_->Emit(output_, timeout);
  if (result != Result::kTimeout) {
    input_.reset();
    output_.reset();
  }
  return result;
}

}  // namespace pgflow
