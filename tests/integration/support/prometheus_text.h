#pragma once

// A strict reader of Prometheus's text exposition format 0.0.4, for tests that check what
// pgflow's /metrics serves. Written for the tests (no Debian package has one).
//
// Strict means it refuses what a scraper might quietly accept or silently misread: a missing
// final newline, a family split in two, a histogram whose +Inf bucket disagrees with its
// _count, a negative counter, a duplicated series. What it accepts follows the format's
// description (prometheus.io/docs/instrumenting/exposition_formats) and the Go parser
// (expfmt): tokens are separated by blanks or tabs; a float is written as Go's
// strconv.ParseFloat reads it, without hexadecimal forms or underscores (expfmt refuses
// those); TYPE is one of counter, gauge, histogram, summary, untyped, in lower case.
//
// Thread-safety: plain functions of their arguments.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow::testing {

struct PromSample {
  std::string name;                           // metric name as written (e.g. foo_bucket)
  std::map<std::string, std::string> labels;  // unescaped label values
  double value = 0;
};

struct PromFamily {
  std::string name;
  std::string help;  // unescaped
  std::string type;  // counter, gauge, histogram, summary, untyped
  std::vector<PromSample> samples;
};

// Parses a whole exposition; an error names the line number and what is wrong
// ("line 7: ..."). Families come back in the order they were written, including a family
// declared by HELP or TYPE that has no samples; samples without a preceding HELP or TYPE of
// their own name form an untyped family named after the sample. Sample timestamps are checked
// and dropped.
absl::StatusOr<std::vector<PromFamily>> ParsePrometheusText(std::string_view text);

// The value of the sample `name` with exactly `labels` (every label), or nullopt.
std::optional<double> FindSample(const std::vector<PromFamily>& families, const std::string& name,
                                 const std::map<std::string, std::string>& labels);

}  // namespace pgflow::testing
