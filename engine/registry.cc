#include "engine/registry.h"

#include "common/postgres/postgres_origin.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

// The factories of one kind, by type, in registration order; the first of a type wins.
template <typename Factory>
class Registry {
 public:
  static Registry& Get() {
    static auto* registry = new Registry();
    return *registry;
  }
  void Add(std::unique_ptr<Factory> factory) {
    if (factory == nullptr || Find(factory->type()) != nullptr) return;
    factories_.push_back(std::move(factory));
  }
  const Factory* Find(std::string_view type) const {
    for (const auto& factory : factories_) {
      if (factory->type() == type) return factory.get();
    }
    return nullptr;
  }
  std::vector<const Factory*> All() const {
    std::vector<const Factory*> out;
    for (const auto& factory : factories_) out.push_back(factory.get());
    return out;
  }

 private:
  std::vector<std::unique_ptr<Factory>> factories_;
};

}  // namespace

void RegisterSinkFactory(std::unique_ptr<SinkFactory> factory) {
  Registry<SinkFactory>::Get().Add(std::move(factory));
}
const SinkFactory* FindSinkFactory(std::string_view type) {
  return Registry<SinkFactory>::Get().Find(type);
}
std::vector<const SinkFactory*> SinkFactories() { return Registry<SinkFactory>::Get().All(); }

void RegisterTransformFactory(std::unique_ptr<TransformFactory> factory) {
  Registry<TransformFactory>::Get().Add(std::move(factory));
}
const TransformFactory* FindTransformFactory(std::string_view type) {
  return Registry<TransformFactory>::Get().Find(type);
}
std::vector<const TransformFactory*> TransformFactories() {
  return Registry<TransformFactory>::Get().All();
}

void RegisterSourceFactory(std::unique_ptr<SourceFactory> factory) {
  Registry<SourceFactory>::Get().Add(std::move(factory));
}
const SourceFactory* FindSourceFactory(std::string_view type) {
  return Registry<SourceFactory>::Get().Find(type);
}
std::vector<const SourceFactory*> SourceFactories() { return Registry<SourceFactory>::Get().All(); }

std::string DeadLetterFallbackUrl(const SinkFactory& factory, const SinkOptions& options,
                                  const SourceTraits& source) {
  std::string own = factory.DeadLetterDatabase(options);
  if (!own.empty()) return own;
  return source.postgres ? source.postgres->url : "";
}

absl::StatusOr<std::unique_ptr<DeadLetterStore>> OpenDeadLetters(const SinkContext& context) {
  if (!context.dead_letter.enabled()) return std::unique_ptr<DeadLetterStore>();
  // (A sink with a database of its own for them opens its store itself.)
  return OpenDeadLetterStore(context.dead_letter,
                             context.source.postgres ? context.source.postgres->url : "",
                             Cat("sinks.", context.sink, ".dead_letter"));
}

}  // namespace pgflow
