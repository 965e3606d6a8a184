#pragma once

// Base64 as RFC 4648 defines it: the standard alphabet ('+', '/'), with '=' padding, no line
// breaks. This is how pgflow's JSON carries bytes (bytea values, binary values it cannot
// decode, a logical message's content), and the decoder reads back exactly what the encoder
// writes and nothing else.
//
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <string>
#include <string_view>

namespace pgflow {

// Appends the base64 of `bytes` to *out.
void AppendBase64(std::string_view bytes, std::string* out);

// Appends the base64 of the bytes that `hex` spells as pairs of hexadecimal digits (either
// case), decoding them on the way: "666f6f" appends "Zm9v".
// REQUIRES: hex.size() is even and every character of `hex` is a hexadecimal digit.
void AppendBase64OfHex(std::string_view hex, std::string* out);

// Decodes `text`, base64 in RFC 4648's canonical form (what AppendBase64 writes: a multiple of
// 4 characters, unused bits zero, no white space), appending the bytes to *out. Returns false,
// appending nothing, for anything else. (absl::Base64Unescape also takes unpadded and
// non-canonical text, which would read a bytea's escape-format text, kept as it was by the
// encoding, as base64.)
bool AppendBase64Decoded(std::string_view text, std::string* out);

}  // namespace pgflow
