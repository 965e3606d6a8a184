#include "sources/postgres/pgoutput.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"

namespace pgflow::pgoutput {
namespace {

// Converts a PostgreSQL timestamp (µs since 2000-01-01) to µs since the Unix epoch. Returns
// false when the result does not fit in an int64 (only garbage input gets there).
bool PostgresToUnixUs(int64_t pg_us, int64_t* unix_us) {
  if (pg_us > std::numeric_limits<int64_t>::max() - kPostgresEpochOffsetUs) return false;
  *unix_us = pg_us + kPostgresEpochOffsetUs;
  return true;
}

std::string DescribeByte(uint8_t b) {
  if (b >= 0x20 && b < 0x7f) return absl::StrFormat("'%c' (0x%02x)", b, b);
  return absl::StrFormat("0x%02x", b);
}

// A bounds-checked big-endian cursor over one message. Every Read* returns false on failure
// after recording an error that names the message, the field, and the byte offset; the first
// error recorded is the one status() reports. Offsets count from the message's first byte.
class Reader {
 public:
  // `what` names the message in errors ("pgoutput Update message"); it must outlive the
  // Reader. Reading starts at `start`.
  Reader(std::string_view bytes, const char* what, size_t start)
      : data_(bytes), what_(what), pos_(start) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  std::string_view Rest() const { return data_.substr(pos_); }

  // Errors raised while this is set mention e.g. "(new tuple, column 3)".
  void SetContext(const char* section, int index) {
    section_ = section;
    index_ = index;
  }
  void ClearContext() { section_ = nullptr; }

  bool ReadU8(const char* field, uint8_t* out) {
    if (!Need(field, 1)) return false;
    *out = Byte(pos_);
    pos_ += 1;
    return true;
  }
  bool ReadU16(const char* field, uint16_t* out) {
    if (!Need(field, 2)) return false;
    *out = static_cast<uint16_t>((Byte(pos_) << 8) | Byte(pos_ + 1));
    pos_ += 2;
    return true;
  }
  bool ReadU32(const char* field, uint32_t* out) {
    if (!Need(field, 4)) return false;
    *out = (uint32_t{Byte(pos_)} << 24) | (uint32_t{Byte(pos_ + 1)} << 16) |
           (uint32_t{Byte(pos_ + 2)} << 8) | uint32_t{Byte(pos_ + 3)};
    pos_ += 4;
    return true;
  }
  bool ReadU64(const char* field, uint64_t* out) {
    if (!Need(field, 8)) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < 8; ++i) v = (v << 8) | Byte(pos_ + i);
    *out = v;
    pos_ += 8;
    return true;
  }
  bool ReadI16(const char* field, int16_t* out) {
    uint16_t v;
    if (!ReadU16(field, &v)) return false;
    *out = static_cast<int16_t>(v);
    return true;
  }
  bool ReadI32(const char* field, int32_t* out) {
    uint32_t v;
    if (!ReadU32(field, &v)) return false;
    *out = static_cast<int32_t>(v);
    return true;
  }
  bool ReadLsn(const char* field, Lsn* out) {
    uint64_t v;
    if (!ReadU64(field, &v)) return false;
    *out = Lsn(v);
    return true;
  }
  // Reads a PostgreSQL timestamp and converts it to µs since the Unix epoch.
  bool ReadTimestamp(const char* field, int64_t* unix_us) {
    const size_t start = pos_;
    uint64_t v;
    if (!ReadU64(field, &v)) return false;
    const int64_t pg_us = static_cast<int64_t>(v);
    if (!PostgresToUnixUs(pg_us, unix_us)) {
      return Fail(start, absl::StrFormat("%s %d is out of range", field, pg_us));
    }
    return true;
  }
  // A null-terminated string; *out excludes the terminator and points into the input.
  bool ReadCString(const char* field, std::string_view* out) {
    const char* begin = data_.data() + pos_;
    const void* nul = std::memchr(begin, '\0', remaining());
    if (nul == nullptr) {
      return Fail(
          pos_, absl::StrFormat("%s has no null terminator (%d bytes remain)", field, remaining()));
    }
    const size_t len = static_cast<size_t>(static_cast<const char*>(nul) - begin);
    *out = std::string_view(begin, len);
    pos_ += len + 1;
    return true;
  }
  bool ReadCString(const char* field, std::string* out) {
    std::string_view v;
    if (!ReadCString(field, &v)) return false;
    out->assign(v.data(), v.size());
    return true;
  }
  // An Int32 length (rejected when negative or longer than the rest) followed by that many
  // bytes, copied into *out.
  bool ReadLengthPrefixed(const char* field, std::string* out) {
    const size_t start = pos_;
    int32_t len;
    if (!ReadI32(field, &len)) return false;
    if (len < 0) return Fail(start, absl::StrFormat("%s has negative length %d", field, len));
    if (static_cast<size_t>(len) > remaining()) {
      return Fail(start, absl::StrFormat("%s length %d runs past the end (%d bytes remain)", field,
                                         len, remaining()));
    }
    out->assign(data_.data() + pos_, static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return true;
  }
  // Rejects a count that `remaining()` bytes cannot hold at `min_bytes_each` bytes per item,
  // so that callers may reserve `count` items without trusting the input.
  bool CheckCount(const char* field, size_t at, int64_t count, size_t min_bytes_each) {
    if (count < 0) return Fail(at, absl::StrFormat("%s %d is negative", field, count));
    if (static_cast<uint64_t>(count) > remaining() / min_bytes_each) {
      return Fail(at, absl::StrFormat("%s %d needs at least %d bytes, only %d remain", field, count,
                                      static_cast<uint64_t>(count) * min_bytes_each, remaining()));
    }
    return true;
  }
  bool ExpectEnd() {
    if (pos_ == data_.size()) return true;
    return Fail(pos_, absl::StrFormat("%d unexpected trailing bytes after a complete message",
                                      remaining()));
  }

  // Records `message` as having happened at byte `at` (unless an error is already recorded)
  // and returns false.
  bool Fail(size_t at, std::string message) {
    if (!failed_) {
      failed_ = true;
      std::string context;
      if (section_ != nullptr) context = absl::StrFormat(" (%s, column %d)", section_, index_);
      error_ = absl::StrFormat("%s at byte offset %d%s: %s", what_, at, context, message);
    }
    return false;
  }
  absl::Status status() const {
    if (!failed_) return absl::OkStatus();
    return absl::InvalidArgumentError(error_);
  }

 private:
  uint8_t Byte(size_t i) const { return static_cast<uint8_t>(data_[i]); }
  bool Need(const char* field, size_t n) {
    if (n <= remaining()) return true;
    return Fail(pos_,
                absl::StrFormat("truncated: %s needs %d bytes, %d remain", field, n, remaining()));
  }

  std::string_view data_;
  const char* what_;
  size_t pos_;
  const char* section_ = nullptr;
  int index_ = 0;
  bool failed_ = false;
  std::string error_;
};

bool ReadTuple(Reader& r, const char* section, TupleData* out) {
  const size_t at = r.offset();
  int16_t ncols;
  if (!r.ReadI16("tuple column count", &ncols)) return false;
  // Every column takes at least its kind byte.
  if (!r.CheckCount("tuple column count", at, ncols, 1)) return false;
  out->clear();
  out->reserve(static_cast<size_t>(ncols));
  for (int i = 0; i < ncols; ++i) {
    r.SetContext(section, i);
    const size_t kind_at = r.offset();
    uint8_t kind;
    if (!r.ReadU8("column kind", &kind)) return false;
    TupleColumn& col = out->emplace_back();
    col.kind = static_cast<char>(kind);
    switch (kind) {
      case 'n':
      case 'u':
        break;
      case 't':
      case 'b':
        if (!r.ReadLengthPrefixed("column value", &col.data)) return false;
        break;
      default:
        return r.Fail(kind_at, "unknown column kind " + DescribeByte(kind) +
                                   " (expected 'n', 'u', 't' or 'b')");
    }
  }
  r.ClearContext();
  return true;
}

bool DecodeBegin(Reader& r, BeginMessage* m) {
  return r.ReadLsn("final LSN", &m->final_lsn) &&
         r.ReadTimestamp("commit timestamp", &m->commit_time_us) && r.ReadU32("xid", &m->xid);
}

bool DecodeCommit(Reader& r, CommitMessage* m) {
  return r.ReadU8("flags", &m->flags) && r.ReadLsn("commit LSN", &m->commit_lsn) &&
         r.ReadLsn("end LSN", &m->end_lsn) &&
         r.ReadTimestamp("commit timestamp", &m->commit_time_us);
}

bool DecodeOrigin(Reader& r, OriginMessage* m) {
  return r.ReadLsn("origin commit LSN", &m->origin_lsn) && r.ReadCString("origin name", &m->name);
}

// pgoutput sends "" for pg_catalog.
bool ReadNamespace(Reader& r, std::string* out) {
  std::string_view ns;
  if (!r.ReadCString("namespace", &ns)) return false;
  if (ns.empty()) ns = "pg_catalog";
  out->assign(ns.data(), ns.size());
  return true;
}

bool DecodeRelation(Reader& r, RelationMessage* m) {
  uint8_t replica_identity;
  if (!r.ReadU32("relation OID", &m->relation_id) || !ReadNamespace(r, &m->schema) ||
      !r.ReadCString("relation name", &m->name) ||
      !r.ReadU8("replica identity", &replica_identity)) {
    return false;
  }
  m->replica_identity = static_cast<char>(replica_identity);
  const size_t at = r.offset();
  int16_t ncols;
  if (!r.ReadI16("column count", &ncols)) return false;
  // Flags (1) + empty name (1) + type OID (4) + type modifier (4).
  constexpr size_t kMinColumnBytes = 10;
  if (!r.CheckCount("column count", at, ncols, kMinColumnBytes)) return false;
  m->columns.reserve(static_cast<size_t>(ncols));
  for (int i = 0; i < ncols; ++i) {
    r.SetContext("relation", i);
    RelationColumn& col = m->columns.emplace_back();
    if (!r.ReadU8("column flags", &col.flags) || !r.ReadCString("column name", &col.name) ||
        !r.ReadU32("column type OID", &col.type_oid) ||
        !r.ReadI32("column type modifier", &col.type_modifier)) {
      return false;
    }
  }
  r.ClearContext();
  return true;
}

bool DecodeType(Reader& r, TypeMessage* m) {
  return r.ReadU32("type OID", &m->type_oid) && ReadNamespace(r, &m->schema) &&
         r.ReadCString("type name", &m->name);
}

// Reads the Byte1 that introduces a TupleData and checks that it is one of `allowed`.
bool ReadTupleTag(Reader& r, std::string_view allowed, const char* expected, uint8_t* tag) {
  const size_t at = r.offset();
  if (!r.ReadU8("tuple tag", tag)) return false;
  if (allowed.find(static_cast<char>(*tag)) == std::string_view::npos) {
    return r.Fail(
        at, absl::StrFormat("unexpected tuple tag %s (expected %s)", DescribeByte(*tag), expected));
  }
  return true;
}

bool DecodeInsert(Reader& r, InsertMessage* m) {
  uint8_t tag;
  return r.ReadU32("relation OID", &m->relation_id) && ReadTupleTag(r, "N", "'N'", &tag) &&
         ReadTuple(r, "new tuple", &m->new_tuple);
}

bool DecodeUpdate(Reader& r, UpdateMessage* m) {
  uint8_t tag;
  if (!r.ReadU32("relation OID", &m->relation_id) ||
      !ReadTupleTag(r, "KON", "'K', 'O' or 'N'", &tag)) {
    return false;
  }
  if (tag != 'N') {
    m->old_kind = static_cast<char>(tag);
    if (!ReadTuple(r, "old tuple", &m->old_tuple) || !ReadTupleTag(r, "N", "'N'", &tag)) {
      return false;
    }
  }
  return ReadTuple(r, "new tuple", &m->new_tuple);
}

bool DecodeDelete(Reader& r, DeleteMessage* m) {
  uint8_t tag;
  if (!r.ReadU32("relation OID", &m->relation_id) || !ReadTupleTag(r, "KO", "'K' or 'O'", &tag)) {
    return false;
  }
  m->old_kind = static_cast<char>(tag);
  return ReadTuple(r, "old tuple", &m->old_tuple);
}

bool DecodeTruncate(Reader& r, TruncateMessage* m) {
  int32_t count;
  uint8_t options;
  if (!r.ReadI32("relation count", &count) || !r.ReadU8("option bits", &options)) return false;
  m->cascade = (options & 1) != 0;
  m->restart_identity = (options & 2) != 0;
  // The count precedes the option byte; report it at its own offset.
  if (!r.CheckCount("relation count", r.offset() - 5, count, 4)) return false;
  m->relation_ids.reserve(static_cast<size_t>(count));
  for (int32_t i = 0; i < count; ++i) {
    uint32_t id;
    if (!r.ReadU32("relation OID", &id)) return false;
    m->relation_ids.push_back(id);
  }
  return true;
}

bool DecodeLogical(Reader& r, LogicalMessage* m) {
  uint8_t flags;
  if (!r.ReadU8("flags", &flags)) return false;
  m->transactional = (flags & 1) != 0;
  return r.ReadLsn("message LSN", &m->lsn) && r.ReadCString("prefix", &m->prefix) &&
         r.ReadLengthPrefixed("content", &m->content);
}

// Decodes the body of one message of type T in place, then insists on the end of the input.
template <typename T>
absl::StatusOr<Message> DecodeAs(Reader& r, bool (*decode)(Reader&, T*)) {
  Message out(std::in_place_type<T>);
  if (!decode(r, &std::get<T>(out)) || !r.ExpectEnd()) return r.status();
  return out;
}

}  // namespace

absl::StatusOr<Message> DecodeMessage(std::string_view bytes) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError("pgoutput message at byte offset 0: empty message");
  }
  const uint8_t kind = static_cast<uint8_t>(bytes[0]);
  switch (kind) {
    case 'B': {
      Reader r(bytes, "pgoutput Begin message", 1);
      return DecodeAs(r, DecodeBegin);
    }
    case 'C': {
      Reader r(bytes, "pgoutput Commit message", 1);
      return DecodeAs(r, DecodeCommit);
    }
    case 'O': {
      Reader r(bytes, "pgoutput Origin message", 1);
      return DecodeAs(r, DecodeOrigin);
    }
    case 'R': {
      Reader r(bytes, "pgoutput Relation message", 1);
      return DecodeAs(r, DecodeRelation);
    }
    case 'Y': {
      Reader r(bytes, "pgoutput Type message", 1);
      return DecodeAs(r, DecodeType);
    }
    case 'I': {
      Reader r(bytes, "pgoutput Insert message", 1);
      return DecodeAs(r, DecodeInsert);
    }
    case 'U': {
      Reader r(bytes, "pgoutput Update message", 1);
      return DecodeAs(r, DecodeUpdate);
    }
    case 'D': {
      Reader r(bytes, "pgoutput Delete message", 1);
      return DecodeAs(r, DecodeDelete);
    }
    case 'T': {
      Reader r(bytes, "pgoutput Truncate message", 1);
      return DecodeAs(r, DecodeTruncate);
    }
    case 'M': {
      Reader r(bytes, "pgoutput logical decoding Message", 1);
      return DecodeAs(r, DecodeLogical);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("pgoutput message at byte offset 0: unknown message kind %s (%d bytes)",
                      DescribeByte(kind), bytes.size()));
}

absl::StatusOr<StreamFrame> DecodeFrame(std::string_view bytes) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError("replication stream frame at byte offset 0: empty frame");
  }
  const uint8_t kind = static_cast<uint8_t>(bytes[0]);
  if (kind == 'w') {
    Reader r(bytes, "replication XLogData frame", 1);
    XLogData x;
    if (!r.ReadLsn("WAL start", &x.wal_start) || !r.ReadLsn("WAL end", &x.wal_end) ||
        !r.ReadTimestamp("send time", &x.send_time_us)) {
      return r.status();
    }
    x.payload = r.Rest();
    return x;
  }
  if (kind == 'k') {
    Reader r(bytes, "replication keepalive frame", 1);
    Keepalive k;
    uint8_t reply;
    if (!r.ReadLsn("WAL end", &k.wal_end) || !r.ReadTimestamp("send time", &k.send_time_us) ||
        !r.ReadU8("reply requested", &reply) || !r.ExpectEnd()) {
      return r.status();
    }
    k.reply_requested = reply != 0;
    return k;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("replication stream frame at byte offset 0: unknown frame kind %s (%d bytes)",
                      DescribeByte(kind), bytes.size()));
}

std::string EncodeStandbyStatus(Lsn confirmed, int64_t now_us, bool reply_requested) {
  // Unsigned arithmetic: wraps instead of overflowing for absurd clocks.
  const uint64_t pg_now =
      static_cast<uint64_t>(now_us) - static_cast<uint64_t>(kPostgresEpochOffsetUs);
  std::string out(34, '\0');
  char* p = out.data();
  *p++ = 'r';
  auto put64 = [&p](uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) *p++ = static_cast<char>((v >> shift) & 0xff);
  };
  put64(confirmed.value);  // written
  put64(confirmed.value);  // flushed
  put64(confirmed.value);  // applied
  put64(pg_now);
  *p = reply_requested ? 1 : 0;
  return out;
}

}  // namespace pgflow::pgoutput
