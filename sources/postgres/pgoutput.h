#pragma once

// Decoder for the messages of PostgreSQL's logical replication protocol as the pgoutput
// plugin sends them (protocol version 1, with `messages 'true'`), and for the replication
// stream's framing (XLogData 'w' and primary keepalive 'k'), plus the encoder for the
// standby status update 'r' that the client sends back.
//
// Reference: PostgreSQL 15 documentation, "Logical Replication Message Formats" and
// "Streaming Replication Protocol". Every function here is pure: bytes in, structs out. Input
// comes from the network and is never trusted: a truncated or malformed message returns an
// InvalidArgument status naming the message kind and the byte offset, never a crash.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/change.h"
#include "engine/lsn.h"

namespace pgflow::pgoutput {

// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
inline constexpr int64_t kPostgresEpochOffsetUs = 946'684'800'000'000;

// One column of a TupleData: kind 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary.
struct TupleColumn {
  char kind = 'n';
  std::string data;  // for 't' and 'b'
};
using TupleData = std::vector<TupleColumn>;

struct BeginMessage {          // 'B'
  Lsn final_lsn;               // the commit record's LSN
  int64_t commit_time_us = 0;  // since the Unix epoch (converted from PostgreSQL's epoch)
  uint32_t xid = 0;
};
struct CommitMessage {  // 'C'
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;
  int64_t commit_time_us = 0;  // since the Unix epoch
};
struct OriginMessage {  // 'O'
  Lsn origin_lsn;
  std::string name;
};
struct RelationColumn {
  uint8_t flags = 0;  // 1 = part of the key
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
};
struct RelationMessage {  // 'R'
  uint32_t relation_id = 0;
  std::string schema;  // pgoutput sends "" for pg_catalog; the decoder reports "pg_catalog"
  std::string name;
  char replica_identity = 'd';
  std::vector<RelationColumn> columns;
};
struct TypeMessage {  // 'Y'
  uint32_t type_oid = 0;
  std::string schema;  // "" means pg_catalog, reported as "pg_catalog"
  std::string name;
};
struct InsertMessage {  // 'I'
  uint32_t relation_id = 0;
  TupleData new_tuple;
};
struct UpdateMessage {  // 'U'
  uint32_t relation_id = 0;
  char old_kind = 0;  // 0 when absent, 'K' (old key) or 'O' (old row)
  TupleData old_tuple;
  TupleData new_tuple;
};
struct DeleteMessage {  // 'D'
  uint32_t relation_id = 0;
  char old_kind = 'K';  // 'K' or 'O'
  TupleData old_tuple;
};
struct TruncateMessage {          // 'T'
  bool cascade = false;           // option bit 1
  bool restart_identity = false;  // option bit 2
  std::vector<uint32_t> relation_ids;
};
struct LogicalMessage {        // 'M'
  bool transactional = false;  // flag bit 1
  Lsn lsn;
  std::string prefix;
  std::string content;
};

using Message =
    std::variant<BeginMessage, CommitMessage, OriginMessage, RelationMessage, TypeMessage,
                 InsertMessage, UpdateMessage, DeleteMessage, TruncateMessage, LogicalMessage>;

// Decodes one pgoutput message (the payload of an XLogData frame).
absl::StatusOr<Message> DecodeMessage(std::string_view bytes);

// Replication stream framing, inside CopyData.
struct XLogData {  // 'w'
  Lsn wal_start;
  Lsn wal_end;
  int64_t send_time_us = 0;  // since the Unix epoch
  std::string_view payload;  // points into the input: valid only while the input lives
};
struct Keepalive {  // 'k'
  Lsn wal_end;
  int64_t send_time_us = 0;  // since the Unix epoch
  bool reply_requested = false;
};
using StreamFrame = std::variant<XLogData, Keepalive>;

// Decodes one CopyData message of a logical replication stream.
absl::StatusOr<StreamFrame> DecodeFrame(std::string_view bytes);

// Encodes a standby status update 'r' with write = flush = apply = `confirmed`, so that only
// durable positions are ever reported. PostgreSQL reads these as "last byte + 1": pass a
// commit's end_lsn as it is, never +1. `now_us` is microseconds since the Unix epoch.
std::string EncodeStandbyStatus(Lsn confirmed, int64_t now_us, bool reply_requested);

}  // namespace pgflow::pgoutput
