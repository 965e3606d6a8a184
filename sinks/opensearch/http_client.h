#pragma once

// HTTP/1.1 requests to OpenSearch (or Elasticsearch) over libcurl: keep-alive connections,
// basic auth, a timeout per request, the nodes of `urls` tried in turn when one cannot be
// reached; several requests at once over libcurl's multi interface, on the calling thread.
// Not thread-safe: one per sink thread.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

struct HttpResponse {
  long status = 0;
  std::string body;
  // Retry-After, in seconds, when the server sent one (429, 503); 0 otherwise.
  int retry_after_seconds = 0;
};

class HttpClient {
 public:
  // `urls`: "http://127.0.0.1:9200", ... (no trailing slash needed).
  HttpClient(std::vector<std::string> urls, std::string username, std::string password,
             std::chrono::milliseconds timeout);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `method` GET, PUT, POST, HEAD, DELETE on `path` ("/_bulk"). Unavailable when no node
  // answered (connection refused, timeout), naming the node and libcurl's reason; any HTTP
  // status is a response.
  absl::StatusOr<HttpResponse> Request(std::string_view method, std::string_view path,
                                       std::string_view body = {},
                                       std::string_view content_type = "application/json");

  // Several POSTs of `bodies` to `path` at once, each on a connection of its own (kept alive
  // from call to call), all on the calling thread; one result per body, in order.
  std::vector<absl::StatusOr<HttpResponse>> PostMany(std::string_view path,
                                                     const std::vector<std::string>& bodies,
                                                     std::string_view content_type);

  // The node requests go to now, for messages.
  const std::string& node() const { return urls_[current_]; }

 private:
  std::vector<std::string> urls_;
  size_t current_ = 0;
  std::string userpwd_;
  std::chrono::milliseconds timeout_;
  void* curl_ = nullptr;  // CURL*
  void* multi_ = nullptr;                // CURLM*
  std::vector<void*> lanes_;             // CURL*, one per concurrent request, kept alive
};

}  // namespace pgflow
