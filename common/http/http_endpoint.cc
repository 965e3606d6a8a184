#include "common/http/http_endpoint.h"

#include <curl/curl.h>

#include <algorithm>

#include "common/http/retry_policy.h"
#include "engine/config_node.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

// CURLOPT_WRITEFUNCTION: the body into the HttpResponse, up to its body_limit.
size_t KeepBody(char* data, size_t size, size_t count, void* out) {
  auto* response = static_cast<HttpResponse*>(out);
  const size_t n = size * count;
  const size_t room = response->body_limit - std::min(response->body_limit, response->body.size());
  if (room > 0) response->body.append(data, std::min(n, room));
  return n;
}

}  // namespace

std::unique_ptr<OptionTable<HttpEndpointOptions>> MakeHttpEndpointTable(
    const HttpEndpointOptions& defaults, std::string_view peer) {
  using O = HttpEndpointOptions;
  auto show = [](bool b) { return b ? "true" : "false"; };
  return std::make_unique<OptionTable<O>>(std::initializer_list<Option<O>>{
      StringOption("ca_file", &O::ca_file)
          .DefaultText("the system's")
          .Help(Cat("PEM file of the certificate authorities an https ", peer,
                    "'s certificate is checked against.")),
      StringOption("client_cert", &O::client_cert).Help("PEM client certificate, for mutual TLS."),
      StringOption("client_key", &O::client_key).Help("PEM key of client_cert."),
      BoolOption("tls_verify", &O::tls_verify)
          .DefaultText(show(defaults.tls_verify))
          .Help(
              Cat("Check an https ", peer, "'s certificate and host name; false only for tests.")),
      BoolOption("gzip", &O::gzip)
          .DefaultText(show(defaults.gzip))
          .Help("Compress request bodies (Content-Encoding: gzip): less network for some CPU."),
      DurationOption("timeout", &O::timeout)
          .DefaultText(FormatDuration(defaults.timeout))
          .Help("How long one request may take, connecting included."),
  });
}

void SetUpHandle(void* handle, const HttpEndpointOptions& options, const char* url,
                 HttpResponse* response) {
  CURL* curl = static_cast<CURL*>(handle);
  const long timeout = static_cast<long>(options.timeout.count());
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min<long>(timeout, 10000));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, KeepBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, response);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, ReadRetryAfterHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response->retry_after_seconds);
  if (!options.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  if (!options.client_cert.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, options.client_cert.c_str());
  }
  if (!options.client_key.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLKEY, options.client_key.c_str());
  }
  if (!options.tls_verify) {
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
}

}  // namespace pgflow
