#pragma once

// etcd's v3 API through its JSON gateway (POST /v3/kv/range, /v3/lease/grant, ...; keys and
// values in base64, 64-bit numbers as strings) over libcurl: the keys, leases and
// transactions the cluster's nodes and the pooler use. The consensus is etcd's: a key created
// only if absent, or replaced only if it still holds what was read, is decided by etcd's
// transaction, never by anything here.
//
// The endpoints are tried in turn when one cannot be reached (a member down or cut off); a
// member that answers with an error is an answer. Each call is bounded by the timeout.
//
// Not thread-safe: one per thread.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/http/http_client.h"
#include "nlohmann/json.hpp"

namespace pgflow::cluster {

// The check of a configuration's list of etcd client urls: each http:// or https://.
absl::Status CheckEtcdUrls(const std::vector<std::string>& urls);

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t lease = 0;  // 0: none
};

class Etcd {
 public:
  // `endpoints`: "http://127.0.0.1:2379", ...
  Etcd(std::vector<std::string> endpoints, std::chrono::milliseconds timeout);

  // A lease of `ttl` seconds: its id.
  absl::StatusOr<int64_t> Grant(int64_t ttl);
  // Renews `lease`: its seconds left, or 0 when it is gone (expired or revoked).
  absl::StatusOr<int64_t> KeepAlive(int64_t lease);
  struct LeaseTime {
    // The seconds left as etcd read them, rounded toward zero (0: under a second left, or
    // ended less than a second ago and not swept yet); -1: gone.
    int64_t left = -1;
    int64_t granted = 0;  // the TTL it was granted, which each renewal gives it again
  };
  absl::StatusOr<LeaseTime> TimeToLive(int64_t lease);
  // Ends `lease` and deletes the keys it holds (one already gone is no error).
  absl::Status Revoke(int64_t lease);

  absl::StatusOr<std::optional<EtcdKeyValue>> Get(std::string_view key);
  // Every key starting with `prefix`, in key order.
  absl::StatusOr<std::vector<EtcdKeyValue>> List(std::string_view prefix);
  absl::Status Put(std::string_view key, std::string_view value, int64_t lease = 0);
  absl::Status Delete(std::string_view key);
  // Every key starting with `prefix`: how many there were.
  absl::StatusOr<int64_t> DeletePrefix(std::string_view prefix);

  // `key` = `value` (held by `lease`, 0: none) only if `key` does not exist: whether it was.
  absl::StatusOr<bool> Create(std::string_view key, std::string_view value, int64_t lease);
  // `key` = `value` only if it holds `expected` now: whether it did.
  absl::StatusOr<bool> Replace(std::string_view key, std::string_view expected,
                               std::string_view value, int64_t lease);
  // Deletes `key` only if it holds `expected`: whether it did.
  absl::StatusOr<bool> DeleteIf(std::string_view key, std::string_view expected);

  // The member answering now, for messages.
  const std::string& endpoint() const { return http_.node(); }

 private:
  // POST `body` to `path`: the answer's JSON; an error names etcd's message.
  absl::StatusOr<nlohmann::json> Call(std::string_view path, const nlohmann::json& body);
  // A transaction of one comparison on `key` and one operation on success.
  absl::StatusOr<bool> Transaction(nlohmann::json compare, nlohmann::json success);

  size_t endpoints_;
  HttpClient http_;
};

}  // namespace pgflow::cluster
