#include "common/http/retry_policy.h"

#include <strings.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>

namespace pgflow {

HttpDisposition Classify(long status, int curl_code) {
  if (curl_code != 0) return HttpDisposition::kRetryEndpoint;
  if (status / 100 == 2) return HttpDisposition::kAccepted;
  if (status == 410) return HttpDisposition::kGone;
  if (status == 429 || (status >= 502 && status <= 504)) return HttpDisposition::kRetryEndpoint;
  if (status == 408 || status >= 500) return HttpDisposition::kRetryRequest;
  return HttpDisposition::kRefused;
}

std::chrono::milliseconds Backoff::Ceiling(int attempt) const {
  const double doubled =
      std::min<double>(first_.count() * std::pow(2.0, std::clamp(attempt - 1, 0, 30)),
                       static_cast<double>(max_.count()));
  return std::chrono::milliseconds(static_cast<int64_t>(doubled));
}

std::chrono::milliseconds Backoff::Next(int attempt, std::chrono::seconds retry_after) const {
  if (retry_after.count() > 0) return retry_after;
  static thread_local std::mt19937_64 random{std::random_device{}()};
  const double ceiling = static_cast<double>(Ceiling(attempt).count());
  return std::chrono::milliseconds(
      static_cast<int64_t>(ceiling * std::uniform_real_distribution<double>(0.5, 1.0)(random)));
}

std::optional<int> ParseRetryAfter(std::string_view line) {
  constexpr std::string_view kName = "retry-after:";
  if (line.size() <= kName.size() || strncasecmp(line.data(), kName.data(), kName.size()) != 0) {
    return std::nullopt;
  }
  const long long seconds =
      std::strtoll(std::string(line.substr(kName.size())).c_str(), nullptr, 10);
  return static_cast<int>(std::clamp<long long>(seconds, 0, 86400));
}

size_t ReadRetryAfterHeader(char* data, size_t size, size_t count, void* seconds) {
  const size_t n = size * count;
  if (std::optional<int> parsed = ParseRetryAfter(std::string_view(data, n))) {
    *static_cast<int*>(seconds) = *parsed;
  }
  return n;
}

}  // namespace pgflow
