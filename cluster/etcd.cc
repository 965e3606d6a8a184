#include "cluster/etcd.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "engine/str_cat.h"

namespace pgflow::cluster {
namespace {

using nlohmann::json;

std::string Encode(std::string_view bytes) {
  return absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

absl::StatusOr<std::string> Decode(const json& field) {
  std::string out;
  if (!field.is_string() || !absl::Base64Unescape(field.get<std::string>(), &out)) {
    return absl::DataLossError("etcd sent a key or value that is not base64");
  }
  return out;
}

// The gateway's 64-bit numbers are strings ("7587..."); absent fields are zero.
int64_t Number(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  int64_t value = 0;
  if (it->is_string() && absl::SimpleAtoi(it->get<std::string>(), &value)) return value;
  return 0;
}

// The first key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // (every key)
}

absl::StatusOr<EtcdKeyValue> ReadKeyValue(const json& kv) {
  EtcdKeyValue out;
  absl::StatusOr<std::string> key = Decode(kv.value("key", json("")));
  if (!key.ok()) return key.status();
  out.key = std::move(*key);
  if (kv.contains("value")) {
    absl::StatusOr<std::string> value = Decode(kv["value"]);
    if (!value.ok()) return value.status();
    out.value = std::move(*value);
  }
  out.create_revision = Number(kv, "create_revision");
  out.mod_revision = Number(kv, "mod_revision");
  out.lease = Number(kv, "lease");
  return out;
}

HttpClientOptions ClientOptions(std::vector<std::string> endpoints,
                                std::chrono::milliseconds timeout) {
  HttpClientOptions options;
  options.peer = "etcd";
  options.urls = std::move(endpoints);
  options.endpoint.timeout = timeout;
  return options;
}

}  // namespace

absl::Status CheckEtcdUrls(const std::vector<std::string>& urls) {
  for (const std::string& url : urls) {
    if (!url.starts_with("http://") && !url.starts_with("https://")) {
      return absl::InvalidArgumentError(
          Cat("'", url, "' is no etcd client url (http://host:2379)"));
    }
  }
  return absl::OkStatus();
}

Etcd::Etcd(std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::max<size_t>(1, endpoints.size())),
      http_(ClientOptions(std::move(endpoints), timeout)) {}

absl::StatusOr<json> Etcd::Call(std::string_view path, const json& body) {
  absl::Status last;
  // A member that answers 5xx (one cut off from its quorum: "no leader") is passed over like
  // one that does not answer; any other answer is etcd's.
  for (size_t attempt = 0; attempt < endpoints_; ++attempt) {
    absl::StatusOr<HttpResponse> response = http_.Request("POST", path, body.dump());
    if (!response.ok()) return response.status();  // (every member was tried)
    json answer = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    if (response->status == 200 && answer.is_object() && !answer.contains("error")) {
      return answer;
    }
    std::string message = response->body.substr(0, 300);
    if (answer.is_object()) message = answer.value("message", answer.value("error", message));
    last = absl::UnavailableError(
        Cat("etcd ", http_.node(), path, ": HTTP ", response->status, ": ", message));
    if (response->status < 500) return last;
    http_.SkipNode();
  }
  return last;
}

absl::StatusOr<int64_t> Etcd::Grant(int64_t ttl) {
  absl::StatusOr<json> answer = Call("/v3/lease/grant", {{"TTL", std::to_string(ttl)}});
  if (!answer.ok()) return answer.status();
  const int64_t id = Number(*answer, "ID");
  if (id == 0) return absl::UnavailableError(Cat("etcd granted no lease: ", answer->dump()));
  return id;
}

absl::StatusOr<int64_t> Etcd::KeepAlive(int64_t lease) {
  absl::StatusOr<json> answer = Call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}});
  if (!answer.ok()) return answer.status();
  // (A lease that is gone comes back without its TTL.)
  return Number(answer->value("result", json::object()), "TTL");
}

absl::StatusOr<Etcd::LeaseTime> Etcd::TimeToLive(int64_t lease) {
  absl::StatusOr<json> answer = Call("/v3/lease/timetolive", {{"ID", std::to_string(lease)}});
  if (!answer.ok()) return answer.status();
  // (The gateway leaves out fields that are 0: a lease in its last second comes without TTL;
  // one that is gone has TTL -1 and no grantedTTL.)
  LeaseTime time;
  time.granted = Number(*answer, "grantedTTL");
  time.left = Number(*answer, "TTL");
  if (time.granted <= 0) time.left = -1;
  return time;
}

absl::Status Etcd::Revoke(int64_t lease) {
  absl::StatusOr<json> answer = Call("/v3/lease/revoke", {{"ID", std::to_string(lease)}});
  if (!answer.ok() && answer.status().message().find("not found") != std::string_view::npos) {
    return absl::OkStatus();
  }
  return answer.status();
}

absl::StatusOr<std::optional<EtcdKeyValue>> Etcd::Get(std::string_view key) {
  absl::StatusOr<json> answer = Call("/v3/kv/range", {{"key", Encode(key)}});
  if (!answer.ok()) return answer.status();
  const json kvs = answer->value("kvs", json::array());
  if (kvs.empty()) return std::optional<EtcdKeyValue>();
  absl::StatusOr<EtcdKeyValue> kv = ReadKeyValue(kvs[0]);
  if (!kv.ok()) return kv.status();
  return std::optional<EtcdKeyValue>(std::move(*kv));
}

absl::StatusOr<std::vector<EtcdKeyValue>> Etcd::List(std::string_view prefix) {
  absl::StatusOr<json> answer =
      Call("/v3/kv/range", {{"key", Encode(prefix)}, {"range_end", Encode(PrefixEnd(prefix))}});
  if (!answer.ok()) return answer.status();
  std::vector<EtcdKeyValue> out;
  for (const json& item : answer->value("kvs", json::array())) {
    absl::StatusOr<EtcdKeyValue> kv = ReadKeyValue(item);
    if (!kv.ok()) return kv.status();
    out.push_back(std::move(*kv));
  }
  return out;
}

absl::Status Etcd::Put(std::string_view key, std::string_view value, int64_t lease) {
  json body = {{"key", Encode(key)}, {"value", Encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  return Call("/v3/kv/put", body).status();
}

absl::Status Etcd::Delete(std::string_view key) {
  return Call("/v3/kv/deleterange", {{"key", Encode(key)}}).status();
}

absl::StatusOr<int64_t> Etcd::DeletePrefix(std::string_view prefix) {
  absl::StatusOr<json> answer = Call(
      "/v3/kv/deleterange", {{"key", Encode(prefix)}, {"range_end", Encode(PrefixEnd(prefix))}});
  if (!answer.ok()) return answer.status();
  return Number(*answer, "deleted");
}

absl::StatusOr<bool> Etcd::Transaction(json compare, json success) {
  absl::StatusOr<json> answer =
      Call("/v3/kv/txn", {{"compare", json::array({std::move(compare)})},
                          {"success", json::array({std::move(success)})}});
  if (!answer.ok()) return answer.status();
  return answer->value("succeeded", false);  // (a failed one comes without the field)
}

absl::StatusOr<bool> Etcd::Create(std::string_view key, std::string_view value, int64_t lease) {
  json put = {{"key", Encode(key)}, {"value", Encode(value)}};
  if (lease != 0) put["lease"] = std::to_string(lease);
  return Transaction({{"key", Encode(key)},
                      {"target", "CREATE"},
                      {"result", "EQUAL"},
                      {"create_revision", "0"}},
                     {{"request_put", std::move(put)}});
}

absl::StatusOr<bool> Etcd::Replace(std::string_view key, std::string_view expected,
                                   std::string_view value, int64_t lease) {
  json put = {{"key", Encode(key)}, {"value", Encode(value)}};
  if (lease != 0) put["lease"] = std::to_string(lease);
  return Transaction(
      {{"key", Encode(key)}, {"target", "VALUE"}, {"result", "EQUAL"}, {"value", Encode(expected)}},
      {{"request_put", std::move(put)}});
}

absl::StatusOr<bool> Etcd::DeleteIf(std::string_view key, std::string_view expected) {
  return Transaction(
      {{"key", Encode(key)}, {"target", "VALUE"}, {"result", "EQUAL"}, {"value", Encode(expected)}},
      {{"request_delete_range", {{"key", Encode(key)}}}});
}

}  // namespace pgflow::cluster
