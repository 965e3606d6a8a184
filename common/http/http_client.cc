#include "common/http/http_client.h"

#include <curl/curl.h>
#include <zlib.h>

#include <algorithm>
#include <mutex>

#include "engine/str_cat.h"

namespace pgflow {

HttpClient::HttpClient(HttpClientOptions options) : options_(std::move(options)) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  for (std::string& url : options_.urls) {
    while (!url.empty() && url.back() == '/') url.pop_back();
  }
  if (!options_.username.empty()) userpwd_ = Cat(options_.username, ":", options_.password);
  if (!options_.api_key.empty()) auth_header_ = Cat("Authorization: ApiKey ", options_.api_key);
  curl_ = curl_easy_init();
}

void HttpClient::Prepare(void* handle, const std::string& url, HttpResponse* response) const {
  CURL* curl = static_cast<CURL*>(handle);
  SetUpHandle(curl, options_.endpoint, url.c_str(), response);
  // Answers may come compressed (the node decides); libcurl inflates them.
  curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
  if (!userpwd_.empty()) {
    curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl, CURLOPT_USERPWD, userpwd_.c_str());
  }
}

struct curl_slist* HttpClient::Headers(std::string_view content_type, bool gzipped) const {
  struct curl_slist* headers =
      curl_slist_append(nullptr, Cat("Content-Type: ", content_type).c_str());
  if (gzipped) headers = curl_slist_append(headers, "Content-Encoding: gzip");
  if (!auth_header_.empty()) headers = curl_slist_append(headers, auth_header_.c_str());
  return headers;
}

std::string_view HttpClient::Encode(std::string_view body, std::string* scratch) const {
  return options_.endpoint.gzip ? GzipEncode(body, scratch) : body;
}

std::string_view GzipEncode(std::string_view body, std::string* scratch) {
  if (body.empty()) return body;
  z_stream z{};
  // 15 + 16: a gzip header and trailer around the deflate stream.
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return body;
  }
  scratch->resize(deflateBound(&z, body.size()));
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  z.avail_in = static_cast<uInt>(body.size());
  z.next_out = reinterpret_cast<Bytef*>(scratch->data());
  z.avail_out = static_cast<uInt>(scratch->size());
  const int rc = deflate(&z, Z_FINISH);
  scratch->resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return body;  // (cannot happen with deflateBound's room) sent as is
  return *scratch;
}

HttpClient::~HttpClient() {
  for (void* lane : lanes_) {
    if (multi_ != nullptr) curl_multi_remove_handle(static_cast<CURLM*>(multi_), static_cast<CURL*>(lane));
    curl_easy_cleanup(static_cast<CURL*>(lane));
  }
  if (multi_ != nullptr) curl_multi_cleanup(static_cast<CURLM*>(multi_));
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

std::vector<absl::StatusOr<HttpResponse>> HttpClient::PostMany(
    std::string_view path, const std::vector<std::string>& bodies, std::string_view content_type) {
  if (bodies.size() == 1) return {Request("POST", path, bodies[0], content_type)};
  if (multi_ == nullptr) multi_ = curl_multi_init();
  CURLM* multi = static_cast<CURLM*>(multi_);
  while (lanes_.size() < bodies.size()) lanes_.push_back(curl_easy_init());
  const std::string url = Cat(options_.urls[current_], path);
  // (Each body is gzipped when asked; one that could not be is sent as it is, labelled so.)
  struct curl_slist* plain_headers = Headers(content_type, false);
  struct curl_slist* gzip_headers = Headers(content_type, true);
  std::vector<HttpResponse> responses(bodies.size());
  std::vector<std::string> gzipped(bodies.size());
  for (size_t i = 0; i < bodies.size(); ++i) {
    CURL* curl = static_cast<CURL*>(lanes_[i]);
    curl_easy_reset(curl);
    Prepare(curl, url, &responses[i]);
    const std::string_view body = Encode(bodies[i], &gzipped[i]);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER,
                     body.data() == bodies[i].data() ? plain_headers : gzip_headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl, CURLOPT_PRIVATE, reinterpret_cast<char*>(i));
    curl_multi_add_handle(multi, curl);
  }
  std::vector<absl::StatusOr<HttpResponse>> results(bodies.size(),
                                                    absl::UnavailableError("no answer"));
  int running = static_cast<int>(bodies.size());
  while (running > 0) {
    if (curl_multi_perform(multi, &running) != CURLM_OK) break;
    if (running > 0) curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  }
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    char* index = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &index);
    const size_t i = reinterpret_cast<size_t>(index);
    if (msg->data.result == CURLE_OK) {
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &responses[i].status);
      results[i] = std::move(responses[i]);
    } else {
      results[i] = absl::UnavailableError(
          Cat(options_.peer, " unreachable: ", options_.urls[current_], ": ",
              curl_easy_strerror(msg->data.result)));
    }
  }
  for (size_t i = 0; i < bodies.size(); ++i) {
    curl_multi_remove_handle(multi, static_cast<CURL*>(lanes_[i]));
  }
  curl_slist_free_all(plain_headers);
  curl_slist_free_all(gzip_headers);
  // A node that did not answer: the next requests try the next node, if there are several.
  for (const auto& r : results) {
    if (!r.ok()) {
      current_ = (current_ + 1) % options_.urls.size();
      break;
    }
  }
  return results;
}

absl::StatusOr<HttpResponse> HttpClient::Request(std::string_view method, std::string_view path,
                                                 std::string_view body,
                                                 std::string_view content_type) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::InternalError("libcurl could not be initialised");
  std::string last_error;
  for (size_t attempt = 0; attempt < options_.urls.size(); ++attempt) {
    const std::string url = Cat(options_.urls[current_], path);
    HttpResponse response;
    curl_easy_reset(curl);
    Prepare(curl, url, &response);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, std::string(method).c_str());
    if (method == "HEAD") curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    struct curl_slist* headers = nullptr;
    std::string gzipped;
    if (!body.empty() || method == "POST" || method == "PUT") {
      const std::string_view sent = Encode(body, &gzipped);
      headers = Headers(content_type, sent.data() != body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, sent.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(sent.size()));
    } else if (!auth_header_.empty()) {
      headers = curl_slist_append(nullptr, auth_header_.c_str());
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    const CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    if (code == CURLE_OK) {
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
      return response;
    }
    last_error = Cat(options_.urls[current_], ": ", curl_easy_strerror(code));
    current_ = (current_ + 1) % options_.urls.size();  // the next node, if there are several
  }
  return absl::UnavailableError(Cat(options_.peer, " unreachable: ", last_error));
}

}  // namespace pgflow
