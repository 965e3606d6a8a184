#include "sinks/blackhole/blackhole_sink.h"

#include <memory>

#include "engine/log.h"
#include "engine/registry.h"

namespace pgflow {
namespace {

struct BlackholeOptions : SinkOptions {
  bool raw_copy = false;
};

const OptionTable<BlackholeOptions>& BlackholeTable() {
  static const auto* table = new OptionTable<BlackholeOptions>({
      BoolOption("raw_copy", &BlackholeOptions::raw_copy)
          .Help("Take snapshot rows as raw binary COPY data, the path a PostgreSQL target "
                "takes (measures the copy without decoding)."),
  });
  return *table;
}

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

class BlackholeSinkFactory : public SinkFactoryOf<BlackholeOptions> {
 public:
  std::string_view type() const override { return "blackhole"; }
  std::string_view help() const override {
    return "Takes every event and keeps nothing (for measuring and dry runs).";
  }

 protected:
  const OptionTable<BlackholeOptions>& table() const override { return BlackholeTable(); }
  std::unique_ptr<Sink> Build(const SinkContext& context,
                              std::shared_ptr<const BlackholeOptions> options) const override {
    return std::make_unique<BlackholeSink>(context.sink, options->raw_copy);
  }
};

}  // namespace

void RegisterBlackholeSink() { RegisterSinkFactory(std::make_unique<BlackholeSinkFactory>()); }

}  // namespace pgflow
