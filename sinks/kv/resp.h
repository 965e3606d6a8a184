#pragma once

// RESP (the Redis serialization protocol, versions 2 and 3): the request parser and the reply
// writers the Redis listener uses. Plain functions over bytes, with no sockets, so that they
// can be tested and fuzzed alone. Glob matching (KEYS, SCAN MATCH, PSUBSCRIBE) lives here too.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgflow::resp {

enum class ParseStatus { kComplete, kIncomplete, kError };

struct ParseLimits {
  size_t max_request_bytes = 1 << 20;  // one whole command, framing included
  size_t max_args = 1 << 16;
};

// Parses one command at the start of `input`: a RESP array of bulk strings ("*2\r\n$3\r\nGET
// \r\n$1\r\nk\r\n"), or an inline command (words separated by spaces, ending in "\n").
// kComplete: *args views into `input`, *consumed is the command's length (an empty inline
// line gives no args). kIncomplete: more bytes are needed, unless `input` is already longer
// than the limit, which is kError. kError: *error holds the message for "-ERR Protocol
// error: ...", and the connection must be closed (the framing is lost).
ParseStatus ParseCommand(std::string_view input, const ParseLimits& limits,
                         std::vector<std::string_view>* args, size_t* consumed, std::string* error);

// Reply writers. `resp3` selects RESP3 forms where they differ (null, map, push, double).
void AppendSimple(std::string_view s, std::string* out);  // +OK
void AppendError(std::string_view s, std::string* out);   // -ERR ... (CR/LF replaced)
void AppendInteger(int64_t n, std::string* out);
void AppendBulk(std::string_view s, std::string* out);
void AppendBulkHeader(size_t n, std::string* out);  // "$<n>\r\n": n bytes and "\r\n" follow
void AppendNull(bool resp3, std::string* out);  // $-1 or _
void AppendArrayHeader(size_t n, std::string* out);
void AppendMapHeader(size_t pairs, bool resp3, std::string* out);  // %n, or *2n in RESP2
void AppendPushHeader(size_t n, bool resp3, std::string* out);     // >n, or *n in RESP2

// Redis's glob: * ? [abc] [^a-z] and \x escapes. Runs in O(|pattern| * |text|) at worst.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace pgflow::resp
