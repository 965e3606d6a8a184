#pragma once

// WebSocket frames (RFC 6455) as the pooler's http listener carries the PostgreSQL protocol in
// them: binary messages whose payloads, joined, are the protocol's bytes, whatever the message
// boundaries. Plain functions and a decoder over byte strings, no sockets: the gateway uses
// them during the login and the session's relay after it (pooler/gateway.h).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace pgflow::pooler {

inline constexpr uint8_t kWsContinuation = 0x0;
inline constexpr uint8_t kWsText = 0x1;
inline constexpr uint8_t kWsBinary = 0x2;
inline constexpr uint8_t kWsClose = 0x8;
inline constexpr uint8_t kWsPing = 0x9;
inline constexpr uint8_t kWsPong = 0xA;

// Appends a server's frame (unmasked, final) of `opcode` carrying `payload`.
void AppendWsFrame(std::string* out, uint8_t opcode, std::string_view payload);

// The Sec-WebSocket-Accept of a handshake whose Sec-WebSocket-Key is `key`.
std::string WsAcceptKey(std::string_view key);

// A client's frames, decoded as they come: data payloads are unmasked into the protocol's byte
// stream as soon as their bytes arrive (a large frame is never held whole), pings answered.
class WsDecoder {
 public:
  // `max_frame`: a larger data frame is an error (the pooler's max_message_size bounds it).
  explicit WsDecoder(uint64_t max_frame = uint64_t{1} << 30) : max_frame_(max_frame) {}

  // Takes what it can of `in` (the bytes consumed are erased): data to *data, the frames to
  // send back (pongs, the answer to a close) to *reply; *closed once the client sent a close.
  // An error names what broke the protocol: an unmasked frame, a text message, reserved bits,
  // an unknown opcode, a control frame fragmented or longer than 125 bytes, a frame too large.
  absl::Status Decode(std::string* in, std::string* data, std::string* reply, bool* closed);

 private:
  uint64_t max_frame_;
  uint64_t remaining_ = 0;  // payload bytes of the current data frame still to come
  uint8_t mask_[4] = {0, 0, 0, 0};
  size_t mask_pos_ = 0;
  bool in_frame_ = false;  // a data frame's header was read, its payload not wholly
};

}  // namespace pgflow::pooler
