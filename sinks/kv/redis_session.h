#pragma once

// The Redis protocol (RESP2 and RESP3, inline commands too) over the kv cache: the read
// commands of strings and hashes (GET, MGET, HGET, HGETALL, ...), SCAN and KEYS, keyspace
// notifications (SUBSCRIBE, PSUBSCRIBE), WAITLSN, and with write_through HSET and DEL, which
// write to PostgreSQL. Every other write is refused: the cache is read-only.
//
// A session belongs to one connection and is used from one thread at a time.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "sinks/kv/kv_protocols.h"
#include "sinks/kv/kv_store.h"

namespace pgflow {

enum class RedisCommand;  // the reads RedisSession::Read answers (redis_session.cc)

class RedisSession {
 public:
  using Args = std::vector<std::string_view>;  // a command's words, its name first
  // One command of the table Execute dispatches on (name, arity, flags, when it may run, its
  // handler); COMMAND shows the table (redis_session.cc).
  struct Command;

  // `service` must outlive the session.
  explicit RedisSession(KvService* service) : service_(service) {}

  // Appends `data` to the input and runs every complete command (pipelining), appending the
  // replies to *out. Stops early at a WAITLSN that must wait (kWait) or a QUIT (kClose).
  SessionStep Feed(std::string_view data, std::string* out);
  // Ends a kWait: `reached` says whether the LSN was applied in time. Continues with the
  // commands already received.
  SessionStep Resume(bool reached, std::string* out);
  // Ends a kWrite: answers an error at once, or asks to wait for the write's LSN (kWait).
  SessionStep FinishWrite(WriteResult result, std::string* out);

  // In subscribed mode, the notifications for one commit's keys that match a subscription.
  void Deliver(const std::vector<KeyEvent>& events, std::string* out) const;
  bool subscribed() const { return !channels_.empty() || !patterns_.empty(); }
  // True when Feed stopped at the output bound with commands still buffered: once the output
  // is written, call Feed("") to go on.
  bool more() const { return more_; }

 private:
  SessionStep Run(std::string* out);
  // Runs one command: looks it up in the table, checks authentication, subscribed mode, the
  // tables being loaded, write_through and the arity, then runs its handler or Read.
  SessionStep Execute(const Args& args, std::string* out);
  // The table, in COMMAND's order; the command named `upper` (upper case) in it, or null.
  static std::span<const Command> Commands();
  static const Command* FindCommand(std::string_view upper);
  // A handler member as the table holds it.
  template <SessionStep (RedisSession::*handler)(const Args&, std::string*)>
  static SessionStep Call(RedisSession& session, const Args& args, std::string* out);
  // The handlers; each is called with its arity checked.
  SessionStep Auth(const Args& args, std::string* out);
  SessionStep Hello(const Args& args, std::string* out);
  SessionStep Ping(const Args& args, std::string* out);
  SessionStep Select(const Args& args, std::string* out);
  SessionStep DescribeCommands(const Args& args, std::string* out);
  SessionStep Client(const Args& args, std::string* out);
  SessionStep WaitLsn(const Args& args, std::string* out);
  SessionStep WriteHash(const Args& args, std::string* out);
  SessionStep DeleteKeys(const Args& args, std::string* out);
  // True (and the session authenticated) when `password` is the configured one; else WRONGPASS
  // is appended.
  bool CheckPassword(std::string_view password, std::string* out);
  // The hash and string reads (GET, HGET, HGETALL, ...): `id` names one of them.
  void Read(RedisCommand id, const Args& args, std::string* out);
  void Subscribe(bool pattern, const std::vector<std::string_view>& args, std::string* out);
  void Unsubscribe(bool pattern, const std::vector<std::string_view>& args, std::string* out);
  void Scan(const std::vector<std::string_view>& args, std::string* out);
  void Keys(std::string_view pattern, std::string* out);
  // INFO [section ...]: Redis's sections, in its format.
  void Info(const std::vector<std::string_view>& args, std::string* out);
  void AppendHash(const KvRow& row, std::string* out) const;

  KvService* service_;
  std::string in_;
  size_t in_pos_ = 0;
  std::vector<std::string_view> args_;  // the command being run (views into in_)
  std::vector<KvRowPtr> rows_;          // MGET / EXISTS results, kept for their capacity
  KvStore::TableCache tables_;
  bool more_ = false;
  bool resp3_ = false;
  bool authed_ = false;
  std::string pending_reply_;  // a write-through reply, sent once its LSN is applied
  char write_reply_ = ':';     // how the running write-through answers: ":<count>" or "+OK"
  absl::flat_hash_set<std::string> channels_;
  absl::flat_hash_set<std::string> patterns_;
};

}  // namespace pgflow
