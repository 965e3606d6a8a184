#include "sinks/blackhole/blackhole_sink.h"

#include <memory>

#include "engine/config.h"
#include "engine/log.h"

namespace pgflow {
namespace {

class BlackholeSink : public Sink {
 public:
  explicit BlackholeSink(std::string name) : name_(std::move(name)) {}
  absl::Status Open() override { return absl::OkStatus(); }
  absl::Status Write(const Event& event) override {
    changes_ += event.kind == EventKind::kChange;
    return absl::OkStatus();
  }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Close() override {
    LogInfo("sink %s (blackhole): discarded %d changes", name_, changes_);
    return absl::OkStatus();
  }

 private:
  std::string name_;
  uint64_t changes_ = 0;
};

class BlackholeSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "blackhole"; }
  std::span<const OptionSpec> options() const override { return {}; }
  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (absl::Status s = node.CheckKeys({}); !s.ok()) return s;
    return std::make_shared<const SinkOptions>();
  }
  std::unique_ptr<Sink> Build(const PipelineConfig&, const SinkConfig& sink) const override {
    return std::make_unique<BlackholeSink>(sink.name);
  }
};

}  // namespace

void RegisterBlackholeSink() { RegisterSinkFactory(std::make_unique<BlackholeSinkFactory>()); }

}  // namespace pgflow
