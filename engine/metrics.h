#pragma once

// pgflow's metrics: counters, gauges and histograms in one registry, read by the admin
// server's /metrics in Prometheus's text exposition format 0.0.4.
//
// The hot paths (the source's fan-out, each sink's runner) update cells with relaxed atomic
// operations only: no lock, no allocation. Finding a cell (by family name and label values)
// takes the registry's lock, so callers look their cells up once and keep the pointers, which
// stay valid for the registry's lifetime. Values that are cheaper to read than to keep up to
// date (queue bytes, snapshot progress, WAL positions) are set by collectors the registry
// calls just before it renders an exposition.
//
// The registry outlives every run of a pipeline within the process (`pgflow run` restarts a
// pipeline after an outage with the same registry), so counters never go backwards.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace pgflow {

// Label names and values, in the order they are rendered.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets (upper bounds, increasing); rendered cumulatively
// with the `+Inf` bucket, `_sum` and `_count`. The count is the sum of the buckets read at
// scrape time, so the exposition is always self-consistent.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (not cumulative) counts, bounds().size() + 1 of them (the last is +Inf).
  std::vector<uint64_t> BucketCounts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

// Bucket bounds for durations in seconds (1 ms to 30 s) and for sizes (1 to 100,000).
std::vector<double> LatencyBuckets();
std::vector<double> SizeBuckets();

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The cell of family `name` with `labels`, created on first use. A family's help and type
  // are fixed by its first use; asking for the same name as another type is a programming
  // error (aborts). Thread-safe; the pointer is valid as long as the registry.
  Counter* GetCounter(std::string_view name, std::string_view help, const MetricLabels& labels);
  Gauge* GetGauge(std::string_view name, std::string_view help, const MetricLabels& labels);
  Histogram* GetHistogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                          std::vector<double> bounds);

  // Registers `collect`, called (on the scraping thread, without the registry's lock) before
  // every exposition to set gauges. Returns an id for RemoveCollector, which waits for a
  // running call to end: after it returns, `collect` is never called again.
  int AddCollector(std::function<void()> collect);
  void RemoveCollector(int id);

  // Every family, in the text exposition format 0.0.4 (families sorted by name, each with
  // its HELP and TYPE lines; label values escaped).
  std::string Exposition();

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Cell {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, Cell> cells;  // by rendered label set, so output order is stable
  };
  Cell& CellFor(std::string_view name, std::string_view help, Type type, const MetricLabels& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);

  // Held while collectors run, so that RemoveCollector can wait for a call in progress.
  absl::Mutex collect_mu_;
  std::map<int, std::function<void()>> collectors_ ABSL_GUARDED_BY(collect_mu_);
  int next_collector_ ABSL_GUARDED_BY(collect_mu_) = 0;
};

// The text format's escapes: `\\`, `\"` and `\n` in a label value; `\\` and `\n` in help.
std::string EscapeLabelValue(std::string_view value);
std::string EscapeHelp(std::string_view help);
// A sample value as the format writes it: integers without a fraction, +Inf/-Inf/NaN.
std::string FormatSampleValue(double value);

}  // namespace pgflow
