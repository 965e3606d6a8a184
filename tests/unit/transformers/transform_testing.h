#pragma once

// What the transform tests share: a chain built through the registry as a pipeline file would
// build it, and batches of hand-made changes run through it.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/components.h"
#include "engine/config.h"
#include "engine/transform.h"

namespace pgflow::transform_testing {

// The chain of `transforms` (YAML list items: "  - mask: {...}\n") in a pipeline whose source
// follows `tables`.
inline absl::StatusOr<TransformChain> ChainOf(const std::string& transforms,
                                              const std::string& tables = "[public.t]") {
  RegisterComponents();
  absl::StatusOr<PipelineConfig> config = ParsePipelineConfig(
      "pipeline: p\n"
      "source: {postgres: {url: 'postgres://db/x', tables: " +
          tables + "}}\ntransforms:\n" + transforms + "sinks: {out: {jsonl: {path: x}}}\n",
      "p.yaml");
  if (!config.ok()) return config.status();
  return BuildTransforms("p", config->transforms);
}

// The changes as one batch of change events.
inline EventBatchPtr BatchOf(std::vector<Change> changes) {
  auto batch = std::make_shared<EventBatch>();
  for (Change& c : changes) {
    Event e;
    e.kind = EventKind::kChange;
    e.change = std::move(c);
    batch->events.push_back(std::move(e));
  }
  return batch;
}

// The changes `chain` hands on for `changes`.
inline absl::StatusOr<std::vector<Change>> ApplyChain(TransformChain& chain,
                                                      std::vector<Change> changes) {
  absl::StatusOr<EventBatchPtr> out = chain.Apply(BatchOf(std::move(changes)));
  if (!out.ok()) return out.status();
  std::vector<Change> result;
  for (const Event& e : (*out)->events) result.push_back(e.change);
  return result;
}

}  // namespace pgflow::transform_testing
