#include "cli/dlq_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "cli/pipeline_file.h"
#include "engine/dead_letter.h"
#include "engine/log.h"
#include "engine/str_cat.h"
#include "nlohmann/json.hpp"
#include "sources/kafka/kafka_message.h"

namespace pgflow {
namespace {

// How long `replay` waits for an asynchronous sink to confirm one event.
constexpr std::chrono::seconds kReplayWait(60);

// The records of one sink, in its store.
struct SinkRecords {
  const SinkConfig* sink = nullptr;
  std::unique_ptr<DeadLetterStore> store;
  std::vector<DeadLetter> letters;
};

absl::StatusOr<std::vector<SinkRecords>> ReadRecords(const PipelineConfig& config,
                                                     const DlqRequest& request) {
  std::vector<SinkRecords> out;
  bool named = false;
  for (const SinkConfig& sink : config.sinks) {
    if (!request.sink.empty() && sink.name != request.sink) continue;
    named = true;
    if (!sink.common.dead_letter.enabled()) {
      if (request.sink.empty()) continue;
      return absl::InvalidArgumentError(
          Cat("sink ", sink.name, " has no dead_letter: it stops on a refused event instead"));
    }
    absl::StatusOr<std::unique_ptr<DeadLetterStore>> store =
        OpenDeadLetterStore(sink.common.dead_letter,
                            DeadLetterFallbackUrl(*sink.factory, *sink.options,
                                                  ContextFor(config, sink).source),
                            Cat("sinks.", sink.name, ".dead_letter"));
    if (!store.ok()) return store.status();
    absl::StatusOr<std::vector<DeadLetter>> letters = (*store)->List(config.name, sink.name);
    if (!letters.ok()) return letters.status();
    SinkRecords records{&sink, *std::move(store), {}};
    const absl::flat_hash_set<uint64_t> ids(request.ids.begin(), request.ids.end());
    for (DeadLetter& l : *letters) {
      if (ids.empty() || ids.contains(l.id)) records.letters.push_back(std::move(l));
    }
    out.push_back(std::move(records));
  }
  if (!named) {
    return absl::InvalidArgumentError(Cat("pipeline ", config.name, " has no sink named ",
                                          request.sink));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        Cat("no sink of pipeline ", config.name, " has a dead_letter: path or table"));
  }
  return out;
}

std::string OneLine(std::string_view text, size_t max) {
  std::string out(text.substr(0, max));
  std::replace(out.begin(), out.end(), '\n', ' ');
  if (text.size() > max) out += "...";
  return out;
}

std::string List(const std::vector<SinkRecords>& all) {
  std::string out;
  size_t total = 0;
  for (const SinkRecords& r : all) {
    out += Cat("sink ", r.sink->name, " (", r.store->Describe(), "): ", r.letters.size(),
               r.letters.size() == 1 ? " record\n" : " records\n");
    for (const DeadLetter& l : r.letters) {
      out += absl::StrFormat("  #%-5d %s  %s  %s %s %s  %s  %s\n", l.id, l.recorded_at,
                             l.event_id, l.operation, l.table, OneLine(l.key, 60), l.code,
                             OneLine(l.reason, 160));
    }
    total += r.letters.size();
  }
  if (all.size() > 1) out += Cat(total, " records in all\n");
  return out;
}

std::string Show(const std::vector<SinkRecords>& all) {
  std::string out;
  for (const SinkRecords& r : all) {
    for (const DeadLetter& l : r.letters) {
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(DeadLetterJson(l), nullptr, false);
      out += j.is_discarded() ? DeadLetterJson(l) : j.dump(2);
      out += "\n";
    }
  }
  return out;
}

// One record's event sent to a fresh sink: OK once the sink made it durable.
absl::Status ReplayOne(const PipelineConfig& config, const SinkConfig& sink_config,
                       const DeadLetter& letter) {
  if (letter.change.empty() || letter.schema.empty()) {
    return absl::InvalidArgumentError("the record holds no row change to send");
  }
  KafkaMessageDecoder decoder;
  absl::StatusOr<std::optional<DecodedMessage>> decoded =
      decoder.Decode(letter.change, letter.schema);
  if (!decoded.ok()) return decoded.status();
  if (!decoded->has_value()) return absl::InvalidArgumentError("the record holds no event");
  Change change = std::move((*decoded)->change);
  change.destination = letter.destination;
  for (const Value& v : change.after) {
    if (v.is_unchanged_toast()) {
      // Sent again, it would be a partial update without a version: it could undo a newer one.
      return absl::FailedPreconditionError(
          "an update without its unchanged TOASTed values is not sent again (it could overwrite "
          "a newer state): apply it by hand if it still holds");
    }
  }
  // A snapshot row goes again as the insert it stands for.
  if (change.op == Op::kRead) change.op = Op::kInsert;
  change.txn.end_lsn = change.txn.commit_lsn;

  // Built as the pipeline builds it, but applying by key (no transaction is skipped as
  // applied before) and without a dead-letter path of its own: a refusal is reported here.
  SinkContext context = ContextFor(config, sink_config);
  context.source.positions = SourcePositions::kSourceSequence;
  context.dead_letter = DeadLetterConfig{};
  std::unique_ptr<Sink> sink = sink_config.factory->Create(context, sink_config.options);
  absl::Status s = sink->Open();
  if (s.ok()) {
    Event begin;
    begin.kind = EventKind::kBegin;
    begin.txn = change.txn;
    s = sink->Write(begin);
  }
  if (s.ok()) {
    Event event;
    event.kind = EventKind::kChange;
    event.txn = change.txn;
    event.change = change;
    s = sink->Write(event);
  }
  if (s.ok()) {
    Event commit;
    commit.kind = EventKind::kCommit;
    commit.txn = change.txn;
    s = sink->Write(commit);
  }
  if (s.ok()) s = sink->Flush();
  // An asynchronous sink (a webhook's requests, Kafka's deliveries) holds it once it says so.
  const auto give_up = std::chrono::steady_clock::now() + kReplayWait;
  while (s.ok() && sink->DurableThrough().has_value() &&
         *sink->DurableThrough() < change.txn.end_lsn) {
    if (std::chrono::steady_clock::now() >= give_up) {
      s = absl::DeadlineExceededError(
          Cat("not confirmed within ", kReplayWait.count(), "s"));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    s = sink->Flush();
  }
  absl::Status closed = sink->Close();
  return s.ok() ? closed : s;
}

absl::StatusOr<std::string> Replay(const PipelineConfig& config, std::vector<SinkRecords>& all) {
  std::string out;
  size_t failed = 0;
  for (SinkRecords& r : all) {
    std::vector<uint64_t> done;
    for (const DeadLetter& l : r.letters) {
      absl::Status s = ReplayOne(config, *r.sink, l);
      if (s.ok()) {
        done.push_back(l.id);
        out += Cat("sink ", r.sink->name, ": #", l.id, " (", l.operation, " ", l.table, " ",
                   l.key, ") delivered\n");
      } else {
        ++failed;
        out += Cat("sink ", r.sink->name, ": #", l.id, " (", l.operation, " ", l.table, " ",
                   l.key, ") not delivered: ", s.message(), "\n");
      }
    }
    if (!done.empty()) {
      absl::StatusOr<size_t> removed = r.store->Remove(config.name, done);
      if (!removed.ok()) {
        return absl::Status(removed.status().code(),
                            Cat(out, "sink ", r.sink->name, ": the delivered records could not be "
                                     "removed (a replay sends them again, harmlessly): ",
                                removed.status().message()));
      }
    }
  }
  if (failed > 0) {
    return absl::FailedPreconditionError(
        Cat(out, failed, failed == 1 ? " record" : " records", " not delivered: kept"));
  }
  return out;
}

}  // namespace

absl::StatusOr<nlohmann::json> DeadLettersJson(const PipelineConfig& config) {
  nlohmann::json out = nlohmann::json::array();
  const bool any = std::any_of(config.sinks.begin(), config.sinks.end(), [](const SinkConfig& s) {
    return s.common.dead_letter.enabled();
  });
  if (!any) return out;
  absl::StatusOr<std::vector<SinkRecords>> all = ReadRecords(config, DlqRequest{});
  if (!all.ok()) return all.status();
  for (const SinkRecords& r : *all) {
    for (const DeadLetter& l : r.letters) {
      nlohmann::json j = nlohmann::json::parse(DeadLetterJson(l), nullptr, false);
      if (j.is_discarded()) continue;
      j.erase("schema");  // the table version: `pgflow dlq show` has it
      out.push_back(std::move(j));
    }
  }
  return out;
}

absl::StatusOr<std::string> RunDlq(const PipelineConfig& config, const DlqRequest& request) {
  if (request.action == "purge" && request.ids.empty() && !request.all) {
    return absl::InvalidArgumentError(
        "purge: name the records with --id, or say --all to remove every one");
  }
  absl::StatusOr<std::vector<SinkRecords>> all = ReadRecords(config, request);
  if (!all.ok()) return all.status();
  if (request.action == "list") return List(*all);
  if (request.action == "show") return Show(*all);
  if (request.action == "replay") return Replay(config, *all);
  if (request.action == "purge") {
    std::string out;
    for (SinkRecords& r : *all) {
      std::vector<uint64_t> ids;
      for (const DeadLetter& l : r.letters) ids.push_back(l.id);
      absl::StatusOr<size_t> removed =
          ids.empty() ? absl::StatusOr<size_t>(0) : r.store->Remove(config.name, ids);
      if (!removed.ok()) return removed.status();
      out += Cat("sink ", r.sink->name, ": ", *removed, " records removed\n");
    }
    return out;
  }
  return absl::InvalidArgumentError(
      Cat("unknown dlq action '", request.action, "': list, show, replay or purge"));
}

}  // namespace pgflow

namespace pgflow {
namespace {

struct DlqArgs {
  std::string path;
  DlqRequest request;
};

int Dlq(const DlqArgs& args) {
  return PrintFromPipeline(
      args.path, [&](const PipelineConfig& config) { return RunDlq(config, args.request); },
      [](const absl::Status& s) { return absl::IsInvalidArgument(s); });
}

}  // namespace

Command AddDlqCommand(CLI::App& app) {
  auto args = std::make_shared<DlqArgs>();
  CLI::App* dlq = AddCommand(
      app, "dlq", "List, show, replay or purge the events the sinks set aside",
      "The events the sinks set aside (`dead_letter:`): list, show, replay (send them to "
      "their sink again; those delivered are removed) or purge.");
  dlq->add_option("action", args->request.action, "list, show, replay or purge")
      ->required()
      ->check(CLI::IsMember({"list", "show", "replay", "purge"}));
  AddPipelineFile(dlq, &args->path);
  dlq->add_option("--sink", args->request.sink, "only this sink's records");
  dlq->add_option("--id", args->request.ids, "only these records (repeatable)");
  dlq->add_flag("--all", args->request.all, "purge: every record of the sinks chosen");
  return {dlq, [args] { return Dlq(*args); }};
}

}  // namespace pgflow
