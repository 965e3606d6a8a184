// Documents as _bulk actions, and their sending: spread over requests sent at once, the items
// pushed back sent again after a backoff, the items refused for good set aside or fatal.

#include "sinks/opensearch/opensearch_sink.h"

#include <algorithm>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/hash/hash.h"
#include "absl/strings/str_replace.h"
#include "common/digest.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "schemas/json_text.h"

namespace pgflow {

namespace {

using nlohmann::json;

// A document id longer than this is hashed (OpenSearch refuses ids over 512 bytes).
constexpr size_t kMaxIdBytes = 512;
// The backoff between rounds of a flush that are pushed back (without a Retry-After).
constexpr std::chrono::milliseconds kFirstRetry(100);
constexpr std::chrono::milliseconds kLongestRetry(10000);

}  // namespace

std::string OpenSearchSink::DocumentId(std::string id) {
  return id.size() > kMaxIdBytes ? "sha256:" + Sha256Hex(id) : id;
}

absl::StatusOr<OpenSearchSink::Action> OpenSearchSink::MakeAction(const Change& change) {
  const TableSchema& table = *change.table;
  const std::vector<size_t> key = table.RowKeyColumns();
  if (key.empty()) {
    return absl::FailedPreconditionError(
        Cat("sink ", context_.sink, " (opensearch): table ", table.QualifiedName(),
            " has no key, and a document needs an id: give it a primary key (or leave it out of "
            "this sink with a filter transform)"));
  }
  absl::StatusOr<std::string> index = IndexFor(change);
  if (!index.ok()) return index.status();
  if (!shared_) {
    // (By relation: a table renamed keeps its index.)
    const std::string name = table.QualifiedName();
    auto [it, first] = index_table_.emplace(*index, std::make_pair(table.relation_id, name));
    if (!first && it->second.first != table.relation_id) {
      return absl::FailedPreconditionError(
          Cat("sink ", context_.sink, " (opensearch): tables ", it->second.second, " and ", name,
              " both go to index ", *index,
              ", where their ids would collide: give each its own "
              "index (\"{schema}.{table}\"), or set `shared: true`"));
    }
  }
  absl::StatusOr<std::string> target = EnsureMapping(
      *index, change.table, change.op == Op::kRead && !in_txn(), change.txn.commit_lsn);
  if (!target.ok()) return target.status();

  const bool is_delete = change.op == Op::kDelete;
  const Row& row = is_delete ? change.before : change.after;
  Action action;
  action.index = *target;
  action.is_delete = is_delete;
  // The id: one key column's text, or several as a JSON array.
  std::string id;
  if (key.size() == 1) {
    scratch_.clear();
    AppendJsonValue(row[key[0]], table.columns[key[0]].type_name, JsonOptions{}, &scratch_);
    json v = json::parse(scratch_, nullptr, false);
    id = v.is_string() ? v.get<std::string>() : scratch_;
  } else {
    id = "[";
    for (size_t i = 0; i < key.size(); ++i) {
      if (i > 0) id += ",";
      AppendJsonValue(row[key[i]], table.columns[key[i]].type_name, JsonOptions{}, &id);
    }
    id += "]";
  }
  if (shared_) id = Cat(table.QualifiedName(), "/", id);
  id = DocumentId(std::move(id));
  action.id = id;

  bool partial = false;
  for (const Value& v : change.after) partial = partial || v.is_unchanged_toast();
  // While the index is rebuilt, the document may not be in the new index yet (the backfill
  // copies it later, or leaves it to the stream): a partial update there would find nothing.
  // The unchanged values are read from the old index instead, and the whole row written.
  std::string merged;
  if (partial && !is_delete && *target != *index) {
    absl::StatusOr<HttpResponse> old = http_->Request(
        "GET",
        Cat("/", *index, "/_doc/",
            absl::StrReplaceAll(
                id, {{"%", "%25"}, {"/", "%2F"}, {"?", "%3F"}, {"#", "%23"}, {" ", "%20"}})));
    if (!old.ok()) return old.status();
    json found = json::parse(old->body, nullptr, false);
    if (old->status == 200 && found.is_object() && found.value("found", false)) {
      scratch_.clear();
      AppendRowObject(table, change.after, false, JsonOptions{}, &scratch_);
      json doc = json::parse(scratch_, nullptr, false);
      const json& source = found["_source"];
      for (size_t i = 0; i < table.columns.size(); ++i) {
        const std::string& name = table.columns[i].name;
        if (change.after[i].is_unchanged_toast() && source.contains(name)) doc[name] = source[name];
      }
      merged = doc.dump();
      partial = false;
    }
  }
  std::string& out = action.lines;
  out += is_delete ? "{\"delete\":{" : partial ? "{\"update\":{" : "{\"index\":{";
  out += "\"_index\":";
  AppendJsonString(*target, &out);
  out += ",\"_id\":";
  AppendJsonString(id, &out);
  if (!partial) {
    // external_gte: a transaction that truncates the table and writes it again writes under
    // the version its TRUNCATE deleted with (the same commit LSN).
    out += Cat(",\"version\":", change.txn.commit_lsn.value, ",\"version_type\":\"external_gte\"");
  }
  out += "}}\n";
  if (!is_delete) {
    if (partial) out += "{\"doc\":";
    if (merged.empty()) {
      AppendRowObject(table, change.after, false, JsonOptions{}, &out);
    } else {
      out += merged;
    }
    if (shared_) {
      out.pop_back();  // the row object's '}'
      out += Cat(out.back() == '{' ? "\"" : ",\"", kTableField, "\":");
      AppendJsonString(table.QualifiedName(), &out);
      out += "}";
    }
    if (partial) out += "}";
    out += "\n";
  }
  return action;
}

absl::Status OpenSearchSink::DeleteDocuments(const std::string& index, const std::string& table,
                                             Lsn version, const std::string& why) {
  // Every document of the table is deleted under `version`: read by a scroll and deleted in
  // bulk (_delete_by_query is a module some distributions lack, and would not carry the
  // version). In an index tables share, only the table's.
  auto failed = [&](const char* what, const absl::StatusOr<HttpResponse>& res) {
    return res.ok() ? absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", what,
                                                 " ", index, " after ", why, ": HTTP ", res->status,
                                                 ": ", res->body.substr(0, 300)))
                    : res.status();
  };
  absl::StatusOr<HttpResponse> res = http_->Request("POST", Cat("/", index, "/_refresh"));
  if (res.ok() && res->status == 404) return absl::OkStatus();  // no index: nothing to empty
  if (!res.ok() || res->status / 100 != 2) return failed("refreshing", res);
  json query = {{"size", 1000}, {"_source", false}, {"sort", {"_doc"}}};
  if (shared_) query["query"] = {{"term", {{kTableField, table}}}};
  res = http_->Request("POST", Cat("/", index, "/_search?scroll=1m"), query.dump());
  uint64_t deleted = 0;
  std::string scroll_id;
  while (true) {
    if (!res.ok() || res->status / 100 != 2) return failed("reading", res);
    json page = json::parse(res->body, nullptr, false);
    if (!page.is_object() || !page.contains("hits")) return failed("reading", res);
    scroll_id = page.value("_scroll_id", "");
    const json& hits = page["hits"]["hits"];
    if (!hits.is_array() || hits.empty()) break;
    for (const json& hit : hits) {
      Action action;
      action.index = index;
      action.id = hit.value("_id", "");
      action.is_delete = true;
      action.lines = "{\"delete\":{\"_index\":";
      AppendJsonString(action.index, &action.lines);
      action.lines += ",\"_id\":";
      AppendJsonString(action.id, &action.lines);
      action.lines += Cat(",\"version\":", version.value, ",\"version_type\":\"external_gte\"}}\n");
      pending_bytes_ += action.lines.size();
      pending_.push_back(std::move(action));
      ++deleted;
    }
    if (absl::Status s = SendAll(); !s.ok()) return s;
    res = http_->Request("POST", "/_search/scroll",
                         json{{"scroll", "1m"}, {"scroll_id", scroll_id}}.dump());
  }
  if (!scroll_id.empty()) {
    http_->Request("DELETE", "/_search/scroll", json{{"scroll_id", scroll_id}}.dump())
        .IgnoreError();
  }
  LogInfo("sink %s (opensearch): deleted the %d documents of %s in %s (%s)", context_.sink, deleted,
          table, index, why);
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Judge(const absl::StatusOr<HttpResponse>& res,
                                   std::vector<Action>& sent, std::vector<Action>* again,
                                   std::string* reason, int* wait_seconds) {
  if (!res.ok()) {
    *reason = std::string(res.status().message());
    for (Action& a : sent) again->push_back(std::move(a));
    return absl::OkStatus();
  }
  const HttpDisposition disposition = Classify(res->status, /*curl_code=*/0);
  if (IsRetry(disposition)) {
    *reason = Cat("HTTP ", res->status);
    *wait_seconds = std::max(*wait_seconds, res->retry_after_seconds);
    for (Action& a : sent) again->push_back(std::move(a));
    return absl::OkStatus();
  }
  if (disposition != HttpDisposition::kAccepted) {
    return absl::FailedPreconditionError(Cat("sink ", context_.sink,
                                             " (opensearch): _bulk refused: HTTP ", res->status,
                                             ": ", res->body.substr(0, 500)));
  }
  // A 2xx answer may still carry item failures ("errors": true): each item has its status.
  // The flag comes first in the answer: read without parsing the rest when it is false.
  if (size_t at = res->body.find("\"errors\""); at != std::string::npos && at < 200) {
    at += 8;
    while (at < res->body.size() && (res->body[at] == ' ' || res->body[at] == ':')) ++at;
    if (res->body.compare(at, 5, "false") == 0) return absl::OkStatus();
  }
  json doc = json::parse(res->body, nullptr, false);
  if (!doc.is_object() || !doc.contains("items") || !doc["items"].is_array() ||
      doc["items"].size() != sent.size()) {
    return absl::InternalError(Cat(
        "sink ", context_.sink,
        " (opensearch): a _bulk response without one item per action: ", res->body.substr(0, 300)));
  }
  const json& items = doc["items"];
  for (size_t i = 0; i < sent.size(); ++i) {
    const json& item = items[i].begin().value();
    const int status = item.value("status", 0);
    if (status / 100 == 2 || status == 409 || (status == 404 && sent[i].is_delete)) continue;
    const std::string error = item.contains("error") ? item["error"].dump() : "";
    // Pushed back, or blocked for a while (a write block, the disk's flood stage): again later.
    if (IsRetry(Classify(status, /*curl_code=*/0)) ||
        error.find("cluster_block_exception") != std::string::npos) {
      *reason = Cat("HTTP ", status, " ", error.substr(0, 200));
      again->push_back(std::move(sent[i]));
      continue;
    }
    const std::string refusal = Cat("document ", sent[i].id, " of index ", sent[i].index,
                                    " refused (HTTP ", status, "): ", error.substr(0, 500));
    // Only a 400 is the document's own fault (a value its mapping cannot take): set aside
    // with `dead_letter:`. Anything else (401, 403, 413, ...) is the sink's setup: it stops.
    if (status != 400 || dead_letters_ == nullptr || sent[i].change == nullptr) {
      return absl::FailedPreconditionError(Cat("sink ", context_.sink, " (opensearch): ", refusal));
    }
    DeadLetter letter =
        MakeDeadLetter(context_.pipeline, context_.sink, *sent[i].change,
                       Cat(sent[i].index, "/", sent[i].id), refusal, std::to_string(status));
    if (absl::Status s = dead_letters_->Record(letter); !s.ok()) {
      return absl::Status(s.code(), Cat("sink ", context_.sink, " (opensearch): ", refusal,
                                        "; and it could not be set aside: ", s.message()));
    }
    ++dead_lettered_;
    LogWarning("sink %s (opensearch): set aside in %s as #%d: %s", context_.sink,
               dead_letters_->Describe(), letter.id, refusal);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::SendAll() {
  std::vector<Action> todo = std::move(pending_);
  pending_.clear();
  pending_bytes_ = 0;
  const auto give_up = std::chrono::steady_clock::now() + options_->retry_for;
  const Backoff backoff(kFirstRetry, kLongestRetry);
  int round = 0;
  while (!todo.empty()) {
    // Lanes, one request each, sent at once: a document is always in the same lane, so its
    // writes keep their order (its versions would restore it anyway).
    const size_t connections = static_cast<size_t>(options_->connections);
    if (lanes_ == 0) lanes_ = connections;
    const size_t n = std::min(lanes_, todo.size());
    std::vector<std::vector<Action>> lanes(n);
    for (Action& a : todo) {
      const size_t lane = absl::HashOf(a.index, a.id) % n;
      lanes[lane].push_back(std::move(a));
    }
    lanes.erase(std::remove_if(lanes.begin(), lanes.end(),
                               [](const std::vector<Action>& l) { return l.empty(); }),
                lanes.end());
    std::vector<std::string> bodies;
    for (const std::vector<Action>& lane : lanes) {
      std::string body;
      for (const Action& a : lane) body += a.lines;
      bodies.push_back(std::move(body));
    }
    std::vector<absl::StatusOr<HttpResponse>> results =
        http_->PostMany("/_bulk", bodies, "application/x-ndjson");
    std::vector<Action> again;
    std::string reason;
    int wait_seconds = 0;
    for (size_t k = 0; k < lanes.size(); ++k) {
      if (absl::Status s = Judge(results[k], lanes[k], &again, &reason, &wait_seconds); !s.ok()) {
        return s;
      }
    }
    todo = std::move(again);
    if (todo.empty()) {
      lanes_ = std::min(lanes_ + 1, connections);  // taken in full: a little more at once
      break;
    }
    // Pushed back: fewer requests at once until the node takes them again.
    if (lanes_ > 1) {
      lanes_ = std::max<size_t>(1, lanes_ / 2);
      LogInfo("sink %s (opensearch): pushed back, %d request(s) at once for now", context_.sink,
              lanes_);
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      return absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", todo.size(),
                                        " document(s) still refused after ",
                                        options_->retry_for.count() / 1000, "s: ", reason));
    }
    const std::chrono::milliseconds wait =
        backoff.Next(++round, std::chrono::seconds(wait_seconds));
    LogWarning("sink %s (opensearch): %d document(s) to send again in %dms: %s", context_.sink,
               todo.size(), wait.count(), reason);
    std::this_thread::sleep_for(wait);
  }
  return absl::OkStatus();
}

}  // namespace pgflow
