#pragma once

// The memcached text protocol over the kv cache: get, gets and the meta get (mg) of rows as
// JSON, version, stats, quit. Storage commands are refused (their data block is skipped
// first, so the session goes on): the cache is read-only.
//
// A session belongs to one connection and is used from one thread at a time.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "sinks/kv/kv_protocols.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

class MemcachedSession {
 public:
  // `service` must outlive the session.
  explicit MemcachedSession(KvService* service) : service_(service) {}

  // Appends `data` to the input and answers every complete line (pipelining), appending the
  // replies to *out. kClose after quit, and when the framing is lost (a line longer than
  // max_request_bytes or 64 KiB, a data block of a bad length): the error is appended first.
  SessionStep Feed(std::string_view data, std::string* out);
  // True when Feed stopped at the output bound with requests still buffered: once the output
  // is written, call Feed("") to go on.
  bool more() const { return more_; }

 private:
  using Tokens = std::vector<std::string_view>;  // a request line's words, the command first
  // get / gets (`with_cas`: each value's LSN as its cas) of the keys in tok[1..].
  void Get(const Tokens& tok, bool with_cas, std::string* out);
  // mg <key> <flags>*: the meta get.
  void MetaGet(const Tokens& tok, std::string* out);
  // stats: the general statistics (other groups answer only END).
  void Stats(const Tokens& tok, std::string* out);

  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  std::vector<std::string_view> tokens_;  // the line being run (views into in_)
  std::vector<KvRowPtr> rows_;            // a multi-key get's results, kept for their capacity
  KvStore::TableCache tables_;
  bool more_ = false;
  size_t skip_ = 0;  // bytes of a storage command's data block still to discard
};

}  // namespace pgflow
