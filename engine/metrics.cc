#include "engine/metrics.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/log.h"
#include "schemas/pg_float.h"

namespace pgflow {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> counts(bounds_.size() + 1);
  for (size_t i = 0; i < counts.size(); ++i) {
    counts[i] = counts_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

std::vector<double> SizeBuckets() { return {1, 10, 100, 1000, 10000, 100000}; }

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatSampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  // The shortest digits that read back as the same value (float8out's rule), which Go's
  // ParseFloat, and so Prometheus, reads.
  std::string out;
  AppendFloat8Text(value, &out);
  return out;
}

namespace {

const char* TypeName(int type) {
  switch (type) {
    case 0:
      return "counter";
    case 1:
      return "gauge";
    default:
      return "histogram";
  }
}

// `{a="x",b="y"}` (empty for no labels), with `extra` (such as le) appended.
std::string RenderLabels(const MetricLabels& labels, std::string_view extra_name = {},
                         std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, name, "=\"", EscapeLabelValue(value), "\"");
  }
  if (!extra_name.empty()) {
    if (out.size() > 1) out += ',';
    out.append(extra_name).append("=\"").append(extra_value).append("\"");
  }
  out += '}';
  return out;
}

}  // namespace

MetricsRegistry::Cell& MetricsRegistry::CellFor(std::string_view name, std::string_view help,
                                                Type type, const MetricLabels& labels) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  } else if (it->second.type != type) {
    LogError("metric %s registered as %s and as %s", name, TypeName(static_cast<int>(type)),
             TypeName(static_cast<int>(it->second.type)));
    std::abort();
  }
  Cell& cell = it->second.cells[RenderLabels(labels)];
  if (cell.labels.empty()) cell.labels = labels;
  return cell;
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const MetricLabels& labels) {
  absl::MutexLock lock(&mu_);
  Cell& cell = CellFor(name, help, Type::kCounter, labels);
  if (cell.counter == nullptr) cell.counter = std::make_unique<Counter>();
  return cell.counter.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const MetricLabels& labels) {
  absl::MutexLock lock(&mu_);
  Cell& cell = CellFor(name, help, Type::kGauge, labels);
  if (cell.gauge == nullptr) cell.gauge = std::make_unique<Gauge>();
  return cell.gauge.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const MetricLabels& labels, std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  Cell& cell = CellFor(name, help, Type::kHistogram, labels);
  if (cell.histogram == nullptr) cell.histogram = std::make_unique<Histogram>(std::move(bounds));
  return cell.histogram.get();
}

int MetricsRegistry::AddCollector(std::function<void()> collect) {
  absl::MutexLock lock(&collect_mu_);
  int id = next_collector_++;
  collectors_.emplace(id, std::move(collect));
  return id;
}

void MetricsRegistry::RemoveCollector(int id) {
  absl::MutexLock lock(&collect_mu_);
  collectors_.erase(id);
}

std::string MetricsRegistry::Exposition() {
  {
    absl::MutexLock lock(&collect_mu_);
    for (auto& [id, collect] : collectors_) collect();
  }
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(family.help), "\n# TYPE ", name, " ",
                    TypeName(static_cast<int>(family.type)), "\n");
    for (const auto& [rendered, cell] : family.cells) {
      switch (family.type) {
        case Type::kCounter:
          absl::StrAppend(&out, name, rendered, " ", cell.counter->value(), "\n");
          break;
        case Type::kGauge:
          absl::StrAppend(&out, name, rendered, " ", FormatSampleValue(cell.gauge->value()), "\n");
          break;
        case Type::kHistogram: {
          const Histogram& h = *cell.histogram;
          std::vector<uint64_t> counts = h.BucketCounts();
          uint64_t cumulative = 0;
          for (size_t i = 0; i < counts.size(); ++i) {
            cumulative += counts[i];
            std::string le = i < h.bounds().size() ? FormatSampleValue(h.bounds()[i]) : "+Inf";
            absl::StrAppend(&out, name, "_bucket", RenderLabels(cell.labels, "le", le), " ",
                            cumulative, "\n");
          }
          absl::StrAppend(&out, name, "_sum", rendered, " ", FormatSampleValue(h.sum()), "\n", name,
                          "_count", rendered, " ", cumulative, "\n");
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace pgflow
