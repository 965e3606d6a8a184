#include "pooler/websocket_frames.h"

#include <openssl/sha.h>

#include "absl/strings/escaping.h"
#include "engine/str_cat.h"

namespace pgflow::pooler {

void AppendWsFrame(std::string* out, uint8_t opcode, std::string_view payload) {
  out->push_back(static_cast<char>(0x80 | opcode));
  const uint64_t n = payload.size();
  if (n < 126) {
    out->push_back(static_cast<char>(n));
  } else if (n < 65536) {
    out->push_back(static_cast<char>(126));
    out->push_back(static_cast<char>(n >> 8));
    out->push_back(static_cast<char>(n & 0xff));
  } else {
    out->push_back(static_cast<char>(127));
    for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(n >> shift));
  }
  out->append(payload);
}

std::string WsAcceptKey(std::string_view key) {
  const std::string text = Cat(key, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(digest), SHA_DIGEST_LENGTH));
}

absl::Status WsDecoder::Decode(std::string* in, std::string* data, std::string* reply,
                               bool* closed) {
  size_t pos = 0;
  const auto* bytes = reinterpret_cast<const uint8_t*>(in->data());
  absl::Status status;
  while (pos < in->size() && !*closed) {
    if (in_frame_) {
      const size_t take = static_cast<size_t>(
          std::min<uint64_t>(remaining_, in->size() - pos));
      const size_t start = data->size();
      data->append(in->data() + pos, take);
      char* p = data->data() + start;
      for (size_t i = 0; i < take; ++i) p[i] ^= static_cast<char>(mask_[(mask_pos_ + i) & 3]);
      mask_pos_ = (mask_pos_ + take) & 3;
      remaining_ -= take;
      pos += take;
      if (remaining_ == 0) in_frame_ = false;
      continue;
    }
    const size_t avail = in->size() - pos;
    if (avail < 2) break;
    const uint8_t b0 = bytes[pos];
    const uint8_t b1 = bytes[pos + 1];
    const uint8_t opcode = b0 & 0x0f;
    const bool final = b0 & 0x80;
    if (b0 & 0x70) {
      status = absl::InvalidArgumentError("a WebSocket frame with reserved bits set");
      break;
    }
    if (!(b1 & 0x80)) {
      status = absl::InvalidArgumentError("an unmasked WebSocket frame from a client");
      break;
    }
    uint64_t length = b1 & 0x7f;
    size_t header = 2;
    if (length == 126) {
      if (avail < 4) break;
      length = (uint64_t{bytes[pos + 2]} << 8) | bytes[pos + 3];
      header = 4;
    } else if (length == 127) {
      if (avail < 10) break;
      length = 0;
      for (int i = 0; i < 8; ++i) length = (length << 8) | bytes[pos + 2 + i];
      header = 10;
    }
    if (avail < header + 4) break;
    const bool control = opcode & 0x8;
    if (control) {
      if (!final || length > 125) {
        status = absl::InvalidArgumentError(
            "a WebSocket control frame fragmented or longer than 125 bytes");
        break;
      }
      if (avail < header + 4 + length) break;  // (control frames are taken whole)
      std::string payload(in->data() + pos + header + 4, length);
      for (size_t i = 0; i < payload.size(); ++i) payload[i] ^= in->data()[pos + header + (i & 3)];
      pos += header + 4 + length;
      if (opcode == kWsPing) {
        AppendWsFrame(reply, kWsPong, payload);
      } else if (opcode == kWsClose) {
        AppendWsFrame(reply, kWsClose, payload.substr(0, std::min<size_t>(2, payload.size())));
        *closed = true;
      } else if (opcode != kWsPong) {
        status = absl::InvalidArgumentError(Cat("an unknown WebSocket opcode ", opcode));
        break;
      }
      continue;
    }
    if (opcode == kWsText) {
      status = absl::InvalidArgumentError(
          "a text WebSocket message: the PostgreSQL protocol travels in binary messages");
      break;
    }
    if (opcode != kWsBinary && opcode != kWsContinuation) {
      status = absl::InvalidArgumentError(Cat("an unknown WebSocket opcode ", opcode));
      break;
    }
    if (length > max_frame_) {
      status = absl::InvalidArgumentError(
          Cat("a WebSocket frame of ", length, " bytes, above the limit of ", max_frame_));
      break;
    }
    for (int i = 0; i < 4; ++i) mask_[i] = bytes[pos + header + i];
    mask_pos_ = 0;
    remaining_ = length;
    in_frame_ = length > 0;
    pos += header + 4;
  }
  in->erase(0, pos);
  return status;
}

}  // namespace pgflow::pooler
