#pragma once

// What the sinks that speak HTTP (opensearch, webhook) do with an answer, and how long they wait
// before trying again: one policy for both (as Vector's sinks/util/retries.rs is for its sinks).
// A sink adds only what its protocol knows beyond the status (OpenSearch's 409 on a versioned
// write, a _bulk item's error; a webhook's refused private address).
//
// Pure functions and a value type: no network, no clock; thread-safe.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string_view>

namespace pgflow {

enum class HttpDisposition {
  kAccepted,      // 2xx
  kRetryRequest,  // this request failed for a while (408, 500, 501, 505 and up): send it again
  // The endpoint as a whole is struggling (no answer, 429, 502, 503, 504): send it again, and
  // send less to that endpoint meanwhile.
  kRetryEndpoint,
  kGone,     // 410: the endpoint is gone for good
  kRefused,  // anything else (a 3xx: redirects are not followed; a 4xx): not worth sending again
};

// The disposition of an exchange that ended with libcurl's `curl_code` (a CURLcode; 0 is
// CURLE_OK) and, when it is 0, the HTTP status `status`. Any curl_code other than 0 means no
// answer came (refused, reset, timed out, a TLS failure): kRetryEndpoint, whatever `status`.
HttpDisposition Classify(long status, int curl_code);

// Whether `d` asks for the request to be sent again.
inline bool IsRetry(HttpDisposition d) {
  return d == HttpDisposition::kRetryRequest || d == HttpDisposition::kRetryEndpoint;
}

// Exponential backoff with jitter. The n-th retry's ceiling is `first` doubled n-1 times, never
// above `max`; the wait is drawn uniformly between half the ceiling and the whole of it (AWS's
// "equal jitter": retries of many requests spread out, yet each waits at least half and never
// longer than `max`). A Retry-After the server sent replaces the computed wait.
class Backoff {
 public:
  // REQUIRES: 0 < first <= max.
  Backoff(std::chrono::milliseconds first, std::chrono::milliseconds max)
      : first_(first), max_(max) {}

  // The wait before retry number `attempt` (1: after the first failure), or `retry_after` when
  // the server asked for one (> 0). Draws from a random generator of the calling thread's own.
  std::chrono::milliseconds Next(int attempt,
                                 std::chrono::seconds retry_after = std::chrono::seconds(0)) const;
  // The ceiling of retry number `attempt`: first * 2^(attempt-1), at most max.
  std::chrono::milliseconds Ceiling(int attempt) const;

 private:
  std::chrono::milliseconds first_;
  std::chrono::milliseconds max_;
};

// The wait a `Retry-After` header line asks for ("Retry-After: 120\r\n", the name in any
// case), in seconds, bounded to 0..86400 (a day); nullopt when `line` is another header. An HTTP
// date is not understood and reads as 0 (the caller's own backoff applies).
std::optional<int> ParseRetryAfter(std::string_view line);

// A libcurl header callback (CURLOPT_HEADERFUNCTION): stores ParseRetryAfter's seconds in the
// `int` that CURLOPT_HEADERDATA points at; other headers leave it as it is.
size_t ReadRetryAfterHeader(char* data, size_t size, size_t count, void* seconds);

}  // namespace pgflow
