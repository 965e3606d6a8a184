#include "sinks/opensearch/http_client.h"

#include <curl/curl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/str_cat.h"

namespace pgflow {
namespace {

size_t AppendBody(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* out) {
  const size_t n = size * count;
  constexpr std::string_view kRetryAfter = "retry-after:";
  if (n > kRetryAfter.size() && strncasecmp(data, kRetryAfter.data(), kRetryAfter.size()) == 0) {
    *static_cast<int*>(out) = std::atoi(std::string(data + kRetryAfter.size(), n - kRetryAfter.size()).c_str());
  }
  return n;
}

}  // namespace

HttpClient::HttpClient(std::vector<std::string> urls, std::string username, std::string password,
                       std::chrono::milliseconds timeout)
    : urls_(std::move(urls)), timeout_(timeout) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  for (std::string& url : urls_) {
    while (!url.empty() && url.back() == '/') url.pop_back();
  }
  if (!username.empty()) userpwd_ = Cat(username, ":", password);
  curl_ = curl_easy_init();
}

HttpClient::~HttpClient() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

absl::StatusOr<HttpResponse> HttpClient::Request(std::string_view method, std::string_view path,
                                                 std::string_view body,
                                                 std::string_view content_type) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::InternalError("libcurl could not be initialised");
  std::string last_error;
  for (size_t attempt = 0; attempt < urls_.size(); ++attempt) {
    const std::string url = Cat(urls_[current_], path);
    HttpResponse response;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, std::string(method).c_str());
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min<int64_t>(timeout_.count(), 10000)));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, ReadHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response.retry_after_seconds);
    if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (!userpwd_.empty()) {
      curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
      curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd_.c_str());
    }
    struct curl_slist* headers = nullptr;
    const std::string type_header = Cat("Content-Type: ", content_type);
    if (!body.empty() || method == "POST" || method == "PUT") {
      headers = curl_slist_append(headers, type_header.c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    const CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    if (code == CURLE_OK) {
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
      return response;
    }
    last_error = Cat(urls_[current_], ": ", curl_easy_strerror(code));
    current_ = (current_ + 1) % urls_.size();  // the next node, if there are several
  }
  return absl::UnavailableError(Cat("OpenSearch unreachable: ", last_error));
}

}  // namespace pgflow
