#include "schemas/base64.h"

#include <cstdint>

#include "schemas/ascii.h"

namespace pgflow {
namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Appends the base64 of the `n` bytes get(0) .. get(n - 1).
template <typename GetByte>
void AppendBase64Of(size_t n, GetByte get, std::string* out) {
  const size_t start = out->size();
  out->resize(start + (n + 2) / 3 * 4);
  char* w = out->data() + start;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const uint32_t v = (uint32_t{get(i)} << 16) | (uint32_t{get(i + 1)} << 8) | get(i + 2);
    w[0] = kBase64Alphabet[(v >> 18) & 63];
    w[1] = kBase64Alphabet[(v >> 12) & 63];
    w[2] = kBase64Alphabet[(v >> 6) & 63];
    w[3] = kBase64Alphabet[v & 63];
    w += 4;
  }
  if (i + 1 == n) {
    const uint32_t v = uint32_t{get(i)} << 16;
    w[0] = kBase64Alphabet[(v >> 18) & 63];
    w[1] = kBase64Alphabet[(v >> 12) & 63];
    w[2] = '=';
    w[3] = '=';
  } else if (i + 2 == n) {
    const uint32_t v = (uint32_t{get(i)} << 16) | (uint32_t{get(i + 1)} << 8);
    w[0] = kBase64Alphabet[(v >> 18) & 63];
    w[1] = kBase64Alphabet[(v >> 12) & 63];
    w[2] = kBase64Alphabet[(v >> 6) & 63];
    w[3] = '=';
  }
}

}  // namespace

void AppendBase64(std::string_view bytes, std::string* out) {
  AppendBase64Of(
      bytes.size(), [bytes](size_t i) { return static_cast<uint8_t>(bytes[i]); }, out);
}

void AppendBase64OfHex(std::string_view hex, std::string* out) {
  AppendBase64Of(
      hex.size() / 2,
      [hex](size_t i) {
        return static_cast<uint8_t>((HexDigitValue(hex[2 * i]) << 4) |
                                    HexDigitValue(hex[2 * i + 1]));
      },
      out);
}

bool AppendBase64Decoded(std::string_view text, std::string* out) {
  if (text.size() % 4 != 0) return false;
  size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  for (size_t i = 0; i < text.size() - padding; ++i) {
    if (Base64Value(text[i]) < 0) return false;
  }
  const size_t start = out->size();
  uint32_t bits = 0;
  int nbits = 0;
  for (size_t i = 0; i < text.size() - padding; ++i) {
    bits = (bits << 6) | static_cast<uint32_t>(Base64Value(text[i]));
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out->push_back(static_cast<char>((bits >> nbits) & 0xFF));
    }
  }
  // The bits left over must be zero (RFC 4648's canonical encoding, which AppendBase64 writes).
  if ((bits & ((1u << nbits) - 1)) != 0) {
    out->resize(start);
    return false;
  }
  return true;
}

}  // namespace pgflow
