// An index rebuilt behind its name after a change its mapping cannot take in place: a new
// index filled by a backfill of the table, swapped in under the alias once complete.

#include "sinks/opensearch/opensearch_sink.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/postgres/postgres_origin.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "sources/postgres/backfill.h"

namespace pgflow {

using nlohmann::json;

absl::StatusOr<std::string> OpenSearchSink::StartRebuild(const std::string& index,
                                                         const TableSchemaPtr& table,
                                                         const std::string& why, Lsn lsn) {
  // What is buffered belongs to the index as it was.
  if (absl::Status s = SendAll(); !s.ok()) return s;
  const std::string target = absl::AsciiStrToLower(absl::StrCat(index, "-r", absl::Hex(lsn.value)));
  // The index first, marked with no backfill yet: a crash before the request is recorded in
  // its _meta asks again after the restart (RequestRebuildBackfill), never twice.
  const std::string meta = json{
      {"rebuilding", index},
      {"backfill", 0},
      {"schema", table->schema},
      {"table", table->name}}.dump();
  if (absl::Status s = LoadOrCreate(target, table, false, meta); !s.ok()) return s;
  absl::StatusOr<int64_t> backfill =
      RequestRebuildBackfill(index, target, table->schema, table->name);
  if (!backfill.ok()) {
    return absl::Status(
        backfill.status().code(),
        Cat("sink ", context_.sink, " (opensearch): ", why, "; ", backfill.status().message()));
  }
  rebuilds_[index] = Rebuild{target, *backfill};
  LogInfo(
      "sink %s (opensearch): %s: building %s from a copy of the table (backfill %d); it "
      "takes the name %s once complete",
      context_.sink, why, target, *backfill, index);
  return target;
}

absl::StatusOr<int64_t> OpenSearchSink::RequestRebuildBackfill(const std::string& index,
                                                               const std::string& target,
                                                               const std::string& schema,
                                                               const std::string& table) {
  absl::StatusOr<int64_t> backfill =
      RequestBackfill(context_.source.postgres->url, context_.pipeline, {TableRef{schema, table}});
  if (!backfill.ok()) {
    return absl::Status(backfill.status().code(),
                        Cat("asking the source for a copy of ", schema, ".", table, " to rebuild ",
                            index, ": ", backfill.status().message()));
  }
  const std::string meta = json{
      {"_meta",
       {{"pgflow",
         {{"loading", false},
          {"rebuilding", index},
          {"backfill", *backfill},
          {"schema", schema},
          {"table", table}}}}}}.dump();
  absl::StatusOr<HttpResponse> res = http_->Request("PUT", Cat("/", target, "/_mapping"), meta);
  if (!res.ok()) return res.status();
  if (res->status / 100 != 2) {
    return absl::UnavailableError(
        Cat("recording backfill ", *backfill, " in ", target, "'s mapping: HTTP ", res->status));
  }
  return backfill;
}

absl::Status OpenSearchSink::FindRebuilds() {
  if (context_.source.postgres == nullptr || shared_) return absl::OkStatus();
  absl::StatusOr<HttpResponse> res =
      http_->Request("GET", "/*-r*/_mapping?ignore_unavailable=true&allow_no_indices=true");
  if (!res.ok()) return res.status();
  json doc = res->status == 200 ? json::parse(res->body, nullptr, false) : json();
  if (!doc.is_object()) return absl::OkStatus();
  for (auto& [target, entry] : doc.items()) {
    if (!entry.is_object()) continue;
    const json meta = entry.value("mappings", json::object()).value("_meta", json::object());
    const json pgflow = meta.value("pgflow", json::object());
    const std::string index = pgflow.is_object() ? pgflow.value("rebuilding", "") : "";
    if (index.empty()) continue;
    int64_t backfill = pgflow.value("backfill", int64_t{0});
    if (backfill == 0) {
      // Cut short before its backfill was asked for: asked now.
      absl::StatusOr<int64_t> asked = RequestRebuildBackfill(
          index, target, pgflow.value("schema", ""), pgflow.value("table", ""));
      if (!asked.ok()) {
        return absl::Status(asked.status().code(),
                            Cat("sink ", context_.sink, " (opensearch): ", asked.status().message(),
                                " (or delete index ", target, " to start the rebuild over)"));
      }
      backfill = *asked;
    }
    rebuilds_[index] = Rebuild{target, backfill};
    LogInfo("sink %s (opensearch): %s is still being rebuilt into %s (backfill %d)", context_.sink,
            index, target, backfill);
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::CheckRebuilds() {
  const auto now = std::chrono::steady_clock::now();
  if (rebuilds_.empty() || now - rebuilds_checked_ < std::chrono::seconds(1)) {
    return absl::OkStatus();
  }
  rebuilds_checked_ = now;
  if (source_conn_ == nullptr || PQstatus(source_conn_.get()) != CONNECTION_OK) {
    absl::StatusOr<PgConnPtr> conn =
        Connect(context_.source.postgres->url, ConnectionKind::kRegular);
    if (!conn.ok()) return absl::OkStatus();  // the next look, when the source answers
    source_conn_ = *std::move(conn);
  }
  std::vector<std::string> done;
  for (const auto& [index, rebuild] : rebuilds_) {
    absl::StatusOr<BackfillStatus> status = GetBackfillStatus(source_conn_.get(), rebuild.backfill);
    if (!status.ok()) {
      if (absl::IsNotFound(status.status())) {
        return absl::FailedPreconditionError(Cat(
            "sink ", context_.sink, " (opensearch): rebuilding ", index, " into ", rebuild.target,
            ": backfill ", rebuild.backfill, " is gone from the source; delete index ",
            rebuild.target, " to start the rebuild over"));
      }
      source_conn_.reset();
      return absl::OkStatus();
    }
    if (!status->error.empty()) {
      return absl::FailedPreconditionError(
          Cat("sink ", context_.sink, " (opensearch): rebuilding ", index, " into ", rebuild.target,
              ": backfill ", rebuild.backfill, " failed: ", status->error, "; delete index ",
              rebuild.target, " to start the rebuild over"));
    }
    if (status->finished) done.push_back(index);
  }
  for (const std::string& index : done) {
    if (absl::Status s = Swap(index); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status OpenSearchSink::Swap(const std::string& index) {
  const Rebuild rebuild = rebuilds_[index];
  auto failed = [&](const char* what, const absl::StatusOr<HttpResponse>& res) {
    return res.ok() ? absl::UnavailableError(Cat("sink ", context_.sink, " (opensearch): ", what,
                                                 " ", index, " to ", rebuild.target, ": HTTP ",
                                                 res->status, ": ", res->body.substr(0, 300)))
                    : res.status();
  };
  // `index` is the first index (a name of its own) or, after an earlier rebuild, an alias.
  json actions = json::array({{{"add", {{"index", rebuild.target}, {"alias", index}}}}});
  absl::StatusOr<HttpResponse> res = http_->Request("GET", Cat("/_alias/", index));
  if (!res.ok()) return res.status();
  if (res->status == 200) {
    json doc = json::parse(res->body, nullptr, false);
    if (doc.is_object()) {
      for (auto& [concrete, unused] : doc.items()) {
        if (concrete != rebuild.target)
          actions.push_back({{"remove_index", {{"index", concrete}}}});
      }
    }
  } else {
    actions.push_back({{"remove_index", {{"index", index}}}});
  }
  res = http_->Request("POST", "/_aliases", json{{"actions", actions}}.dump());
  if (!res.ok() || res->status / 100 != 2) return failed("swapping", res);
  res = http_->Request("PUT", Cat("/", rebuild.target, "/_mapping"),
                       R"({"_meta":{"pgflow":{"loading":false,"rebuilding":""}}})");
  if (!res.ok() || res->status / 100 != 2) return failed("marking", res);
  rebuilds_.erase(index);
  ForgetIndex(index);
  LogInfo("sink %s (opensearch): %s rebuilt: the name now points at %s, the old index is removed",
          context_.sink, index, rebuild.target);
  return absl::OkStatus();
}

}  // namespace pgflow
