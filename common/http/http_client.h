#pragma once

// HTTP/1.1 requests over libcurl (to OpenSearch or Elasticsearch, and to etcd's JSON gateway): keep-alive connections,
// basic auth or an API key, TLS (a CA file, a client certificate, verification on unless
// turned off), request bodies gzipped when asked, a timeout per request, the nodes of `urls`
// tried in turn when one cannot be reached; several requests at once over libcurl's multi
// interface, on the calling thread. Not thread-safe: one per sink thread.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http/http_endpoint.h"
#include "common/http/retry_policy.h"

struct curl_slist;

namespace pgflow {

// `body` gzipped (a gzip header and trailer around a deflate stream, at the fastest level)
// into *scratch, which the result then points at; `body` itself when empty or when zlib fails.
std::string_view GzipEncode(std::string_view body, std::string* scratch);

struct HttpClientOptions {
  std::vector<std::string> urls;  // "http://127.0.0.1:9200", ... (no trailing slash needed)
  std::string username;           // basic authentication, when set
  std::string password;
  std::string api_key;            // `Authorization: ApiKey <api_key>`, when set
  HttpEndpointOptions endpoint;   // TLS, gzip, the timeout
  std::string peer = "OpenSearch";  // what the urls are, for messages ("etcd")
};

class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions options);
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
  const std::string& node() const { return options_.urls[current_]; }
  // The next requests start at the next url (one that answered with an error of its own).
  void SkipNode() { current_ = (current_ + 1) % options_.urls.size(); }

 private:
  // Sets what every request carries: SetUpHandle's, and authentication.
  void Prepare(void* curl, const std::string& url, HttpResponse* response) const;
  // The headers of a request with a body (a curl_slist the caller frees); `gzipped`: the body
  // went through Encode's compression.
  struct curl_slist* Headers(std::string_view content_type, bool gzipped) const;
  // `body` as sent: gzipped into *scratch when options_.gzip (then the result points into
  // *scratch; otherwise at `body`).
  std::string_view Encode(std::string_view body, std::string* scratch) const;

  HttpClientOptions options_;
  size_t current_ = 0;
  std::string userpwd_;
  std::string auth_header_;
  void* curl_ = nullptr;  // CURL*
  void* multi_ = nullptr;                // CURLM*
  std::vector<void*> lanes_;             // CURL*, one per concurrent request, kept alive
};

}  // namespace pgflow
