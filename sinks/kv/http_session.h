#pragma once

// HTTP/1.1 over the kv cache, read-only: GET (and HEAD) of "/" (the tables), "/<table>" (a
// page of rows, ?limit= and ?after=) and "/<table>/<key>" (one row, with its LSN as ETag), each
// optionally waiting for ?min_lsn=. Request bodies are refused, the head is bounded, and an
// optional bearer token guards everything.
//
// A session belongs to one connection and is used from one thread at a time.

#include <string>
#include <string_view>

#include "sinks/kv/kv_protocols.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

class HttpSession {
 public:
  // `service` must outlive the session.
  explicit HttpSession(KvService* service) : service_(service) {}

  // Appends `data` to the input and answers every complete request (pipelining), appending
  // the responses to *out. Stops at a request whose min_lsn the store has not applied yet
  // (kWait), and after a response that ends the connection (kClose: HTTP/1.0 or "Connection:
  // close", and malformed or oversized requests, answered with their 4xx first).
  SessionStep Feed(std::string_view data, std::string* out);
  // Ends a kWait: answers the waiting request, or a 504 when `reached` is false, then goes on
  // with the requests already received.
  SessionStep Resume(bool reached, std::string* out);
  // True when Feed stopped at the output bound with requests still buffered: once the output
  // is written, call Feed("") to go on.
  bool more() const { return more_; }

 private:
  struct Request {
    std::string method;
    std::string path;   // decoded later, per segment
    std::string query;  // after '?', raw
    bool keep_alive = true;
    std::string authorization;
    std::string if_none_match;
  };
  SessionStep Run(std::string* out);
  // Answers `request`: kClose when the connection must close after it, kWait for min_lsn.
  SessionStep Answer(const Request& request, std::string* out);

  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  KvStore::TableCache tables_;
  bool more_ = false;
  Request waiting_;  // the request a kWait is for
  std::string body_;  // a row's JSON while its reply is written, kept for its capacity
};

// Appends an HTTP/1.1 response with the JSON `body` (none for HEAD, and none for a 304),
// "Connection: close" unless `keep_alive`, and `extra_headers` (each ending in "\r\n").
void AppendHttpResponse(int status, std::string_view body, bool keep_alive,
                        std::string_view extra_headers, bool head, std::string* out);

}  // namespace pgflow
