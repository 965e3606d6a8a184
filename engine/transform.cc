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

absl::StatusOr<EventBatchPtr> TransformChain::Apply(const EventBatchPtr& batch) {
  if (transforms_.empty()) return batch;
  auto out = std::make_shared<EventBatch>();
  out->events.reserve(batch->events.size());
  for (const Event& event : batch->events) {
    if (event.kind != EventKind::kChange) {
      out->events.push_back(event);
      out->bytes += event.ApproximateBytes();
      continue;
    }
    Event changed = event;
    bool keep = true;
    for (const auto& transform : transforms_) {
      absl::StatusOr<bool> kept = transform->Apply(&changed.change);
      if (!kept.ok()) return kept.status();
      if (!*kept) {
        keep = false;
        break;
      }
    }
    if (!keep) continue;
    out->bytes += changed.ApproximateBytes();
    out->events.push_back(std::move(changed));
  }
  return out;
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
