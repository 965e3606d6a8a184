#pragma once

// PostgreSQL's frontend/backend protocol, version 3, as the pooler needs it: framing, the
// startup packet, and the messages it reads, writes or rewrites. Plain functions over byte
// strings, no sockets, no state: unit-tested and fuzzed apart from the network code.
//
// A message is a type byte and a big-endian int32 length that counts itself and the body but
// not the type byte; the startup packet (and SSLRequest, GSSENCRequest, CancelRequest) has no
// type byte.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow::pooler {

inline constexpr int32_t kProtocolVersion3 = 196608;  // 3.0
inline constexpr int32_t kCancelRequestCode = 80877102;
inline constexpr int32_t kSslRequestCode = 80877103;
inline constexpr int32_t kGssEncRequestCode = 80877104;
// PostgreSQL's own bound on a startup packet (MAX_STARTUP_PACKET_LENGTH).
inline constexpr size_t kMaxStartupPacket = 10000;

// The request codes of an Authentication message ('R', its first Int32), as PostgreSQL numbers
// them (AUTH_REQ_* in its pqcomm.h). The pooler asks clients for md5 and SCRAM, and answers a
// server's cleartext, md5 and SCRAM requests; the others are named for the messages that
// refuse them.
inline constexpr int32_t kAuthenticationOk = 0;
inline constexpr int32_t kAuthenticationKerberosV5 = 2;
inline constexpr int32_t kAuthenticationCleartextPassword = 3;
inline constexpr int32_t kAuthenticationMd5Password = 5;
inline constexpr int32_t kAuthenticationGss = 7;
inline constexpr int32_t kAuthenticationGssContinue = 8;
inline constexpr int32_t kAuthenticationSspi = 9;
inline constexpr int32_t kAuthenticationSasl = 10;
inline constexpr int32_t kAuthenticationSaslContinue = 11;
inline constexpr int32_t kAuthenticationSaslFinal = 12;

// Big-endian integers.
int32_t ReadInt32(const char* p);
int16_t ReadInt16(const char* p);
void AppendInt32(std::string* out, int32_t v);
void AppendInt16(std::string* out, int16_t v);

// What a startup-phase packet asks for.
struct StartupPacket {
  enum class Kind { kStartup, kSslRequest, kGssEncRequest, kCancel };
  Kind kind = Kind::kStartup;
  int32_t version = 0;
  // kStartup: the parameters in order (user, database, options, application_name, GUCs...).
  std::vector<std::pair<std::string, std::string>> parameters;
  // kCancel: the backend key the client was given.
  int32_t cancel_pid = 0;
  int32_t cancel_key = 0;

  // The value of `name`, or empty.
  std::string Get(std::string_view name) const;
};

// The total length a startup packet declares from its first four bytes, or an error (a length
// below 8 or above kMaxStartupPacket) naming it.
absl::StatusOr<size_t> StartupPacketLength(std::string_view first_four);
// Parses a whole startup packet (length word included). Errors name what is wrong: an
// unsupported protocol version, a parameter without a value or terminator, no user.
absl::StatusOr<StartupPacket> ParseStartupPacket(std::string_view packet);

// A message's header: its type and its total size on the wire (type byte included).
struct MessageHeader {
  char type = 0;
  size_t size = 0;
  size_t body_size() const { return size - 5; }
};
// The header at the start of `data` if at least five bytes are there (nullopt: not yet), or an
// error when its length word is below 4 or the message would exceed `max_size` bytes.
absl::StatusOr<std::optional<MessageHeader>> ReadMessageHeader(std::string_view data,
                                                               size_t max_size);

// A cursor over a message body for reading its fields; every read checks the bounds.
class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  // A NUL-terminated string; nullopt if no terminator remains.
  std::optional<std::string_view> CString();
  std::optional<int32_t> Int32();
  std::optional<int16_t> Int16();
  std::optional<char> Byte();
  std::optional<std::string_view> Bytes(size_t n);
  std::string_view rest() const { return body_.substr(pos_); }
  bool done() const { return pos_ == body_.size(); }

 private:
  std::string_view body_;
  size_t pos_ = 0;
};

// Appends a whole message of `type` with `body`.
void AppendMessage(std::string* out, char type, std::string_view body);

// Backend messages.
void AppendAuthentication(std::string* out, int32_t code, std::string_view extra = {});
void AppendParameterStatus(std::string* out, std::string_view name, std::string_view value);
void AppendBackendKeyData(std::string* out, int32_t pid, int32_t key);
void AppendReadyForQuery(std::string* out, char status);
// An ErrorResponse (or NoticeResponse with type 'N'): severity (ERROR, FATAL, WARNING...),
// SQLSTATE and message.
void AppendError(std::string* out, std::string_view severity, std::string_view sqlstate,
                 std::string_view message, char type = 'E');
// The ErrorResponse PostgreSQL sends when a prepared statement's result changed shape since
// it was prepared (plancache.c's RevalidateCachedQuery), fields as PostgreSQL fills them, so
// that drivers that prepare again on it (the JDBC driver, by its routine) do.
void AppendCachedPlanChanged(std::string* out);
void AppendRowDescription(std::string* out, const std::vector<std::string>& columns);
// A DataRow of text values; nullopt is NULL.
void AppendDataRow(std::string* out, const std::vector<std::optional<std::string>>& values);
void AppendCommandComplete(std::string* out, std::string_view tag);

// Frontend messages.
void AppendStartup(std::string* out,
                   const std::vector<std::pair<std::string, std::string>>& parameters);
void AppendCancelRequest(std::string* out, int32_t pid, int32_t key);
void AppendQuery(std::string* out, std::string_view sql);
void AppendPassword(std::string* out, std::string_view password);
void AppendSaslInitialResponse(std::string* out, std::string_view mechanism,
                               std::string_view data);
void AppendSaslResponse(std::string* out, std::string_view data);
void AppendTerminate(std::string* out);

// The fields of an ErrorResponse or NoticeResponse body, by field code ('S', 'V', 'C', 'M'...).
struct ErrorFields {
  std::string severity;  // 'V' (never localized), else 'S'
  std::string sqlstate;  // 'C'
  std::string message;   // 'M'
  std::string detail;    // 'D'
};
ErrorFields ParseErrorFields(std::string_view body);

// The shape of a prepared statement, from the answer to a Describe of it: the bodies of its
// ParameterDescription and of its RowDescription (empty for NoData). Two statements of the
// same shape take the same Bind (parameter types, result columns' count, names, types and
// type modifiers: what PostgreSQL compares when it revalidates a plan); never 0. nullopt for
// a malformed message.
std::optional<uint64_t> StatementShape(std::string_view parameter_description,
                                       std::string_view row_description);

// The extended protocol's messages that name a prepared statement, split around the name so
// that it can be replaced (transaction pooling prepares statements under names of its own).
//   Parse (P):    name, then the query and parameter types (`rest`)
//   Bind (B):     portal, name, then parameters and formats (`rest`)
//   Describe (D) and Close (C): 'S' or 'P', then name
struct ParseMessage {
  std::string_view name;
  std::string_view query;
  std::string_view rest;  // the query, its terminator and the parameter types: all after name
};
std::optional<ParseMessage> SplitParse(std::string_view body);
struct BindMessage {
  std::string_view portal;
  std::string_view statement;
  std::string_view rest;  // all after the statement name's terminator
};
std::optional<BindMessage> SplitBind(std::string_view body);
struct TargetMessage {  // Describe, Close
  char kind = 0;        // 'S' statement, 'P' portal
  std::string_view name;
};
std::optional<TargetMessage> SplitTarget(std::string_view body);

void AppendParse(std::string* out, std::string_view name, std::string_view rest);
void AppendBind(std::string* out, std::string_view portal, std::string_view statement,
                std::string_view rest);
void AppendTarget(std::string* out, char type, char kind, std::string_view name);

// Quotes `value` as a SQL string literal ('...', quotes doubled; E'' never needed because
// standard_conforming_strings is on in every supported PostgreSQL).
std::string QuoteLiteral(std::string_view value);
// Quotes `name` as a SQL identifier.
std::string QuoteIdentifier(std::string_view name);

}  // namespace pgflow::pooler
