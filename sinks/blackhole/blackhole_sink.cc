#include "sinks/blackhole/blackhole_sink.h"

#include <memory>

#include "engine/config.h"
#include "engine/log.h"

namespace pgflow {
namespace {

struct BlackholeOptions : SinkOptions {
  bool raw_copy = false;
};

constexpr OptionSpec kOptions[] = {
    {"raw_copy", "bool", false, "false",
     "take snapshot rows as raw binary COPY data, as a PostgreSQL target does (measures the "
     "copy without decoding)"},
};

class BlackholeSink : public Sink {
 public:
  BlackholeSink(std::string name, bool raw_copy) : name_(std::move(name)), raw_copy_(raw_copy) {}
  absl::Status Open() override { return absl::OkStatus(); }
  bool AcceptsRawCopy() const override { return raw_copy_; }
  absl::Status Write(const Event& event) override {
    if (event.kind == EventKind::kChange) ++changes_;
    if (event.kind == EventKind::kRawRows) changes_ += event.rows;
    return absl::OkStatus();
  }
  absl::Status Flush() override { return absl::OkStatus(); }
  absl::Status Close() override {
    LogInfo("sink %s (blackhole): discarded %d changes%s", name_, changes_,
            raw_copy_ ? " (snapshot rows as raw COPY data)" : "");
    return absl::OkStatus();
  }

 private:
  std::string name_;
  bool raw_copy_;
  uint64_t changes_ = 0;
};

class BlackholeSinkFactory : public SinkFactory {
 public:
  std::string_view type() const override { return "blackhole"; }
  std::span<const OptionSpec> options() const override { return kOptions; }
  absl::StatusOr<std::shared_ptr<const SinkOptions>> Parse(const ConfigNode& node) const override {
    if (absl::Status s = node.CheckKeys(kOptions); !s.ok()) return s;
    auto options = std::make_shared<BlackholeOptions>();
    if (auto v = node.Get("raw_copy")) {
      absl::StatusOr<bool> b = v->AsBool();
      if (!b.ok()) return b.status();
      options->raw_copy = *b;
    }
    return options;
  }
  std::unique_ptr<Sink> Build(const PipelineConfig&, const SinkConfig& sink) const override {
    auto options = std::static_pointer_cast<const BlackholeOptions>(sink.options);
    return std::make_unique<BlackholeSink>(sink.name, options->raw_copy);
  }
};

}  // namespace

void RegisterBlackholeSink() { RegisterSinkFactory(std::make_unique<BlackholeSinkFactory>()); }

}  // namespace pgflow
