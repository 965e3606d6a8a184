#pragma once

// What every HTTP endpoint a sink sends to is configured with, declared once: TLS (a CA file,
// a client certificate, verification), gzip and a timeout per request, as an option group each
// sink embeds in its own table (EmbedOptions), and the one libcurl set-up of a handle from it.
// A sink adds only what its protocol needs (authentication, methods, HTTP/2, a socket policy).

#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <string_view>

#include "engine/options.h"

namespace pgflow {

struct HttpEndpointOptions {
  std::string ca_file;                       // PEM CA bundle for https (default: the system's)
  std::string client_cert;                   // PEM client certificate, for mutual TLS
  std::string client_key;                    // its PEM key
  bool tls_verify = true;                    // check the peer's certificate and host name
  bool gzip = false;                         // compress request bodies (Content-Encoding: gzip)
  std::chrono::milliseconds timeout{30000};  // one request, connecting included

  // The group's defaults with a sink's own request timeout.
  static HttpEndpointOptions WithTimeout(std::chrono::milliseconds timeout) {
    HttpEndpointOptions options;
    options.timeout = timeout;
    return options;
  }
};

// The table of the group above (ca_file, client_cert, client_key, tls_verify, gzip, timeout),
// for a sink to embed in its own: EmbedOptions(&Options::http, table). `defaults` are the
// embedding sink's (its field's initializer), shown by `pgflow options`; `peer` names what is
// at the other end in the help texts ("node", "endpoint"). The table keeps no reference to its
// arguments.
std::unique_ptr<OptionTable<HttpEndpointOptions>> MakeHttpEndpointTable(
    const HttpEndpointOptions& defaults, std::string_view peer);

// An answer, as SetUpHandle's callbacks write it.
struct HttpResponse {
  long status = 0;
  std::string body;
  // Retry-After, in seconds (ParseRetryAfter), when the server sent one (429, 503); 0 otherwise.
  int retry_after_seconds = 0;
  // Bytes of the body kept (for messages, say); the rest is read and dropped.
  size_t body_limit = std::numeric_limits<size_t>::max();

  // An answer that keeps at most `body_limit` bytes of its body.
  static HttpResponse Keeping(size_t body_limit) {
    HttpResponse response;
    response.body_limit = body_limit;
    return response;
  }
};

// Sets on `curl` (a CURL*, fresh or curl_easy_reset) what every request to an endpoint
// configured with `options` carries: `url`, no signals, the timeout (and a connect timeout of at
// most 10 s within it), TLS, and the answer's body and Retry-After into *response, which must
// outlive the transfer. `url` is copied by libcurl. Does not set a method, a body or headers.
void SetUpHandle(void* curl, const HttpEndpointOptions& options, const char* url,
                 HttpResponse* response);

}  // namespace pgflow
