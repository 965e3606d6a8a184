#include "sources/postgres/copy_binary.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pgflow {
namespace {

// "PGCOPY\n\377\r\n\0".
constexpr char kSignature[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
constexpr size_t kHeaderSize = sizeof(kSignature) + 4 + 4;  // + flags + extension length
constexpr uint32_t kOidsFlag = 1u << 16;
constexpr uint32_t kCriticalFlags = 0xFFFF;  // bits 0-15: a reader must refuse unknown ones

int16_t ReadInt16(const char* p) {
  return static_cast<int16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
}

int32_t ReadInt32(const char* p) {
  return static_cast<int32_t>(
      (uint32_t{static_cast<uint8_t>(p[0])} << 24) | (uint32_t{static_cast<uint8_t>(p[1])} << 16) |
      (uint32_t{static_cast<uint8_t>(p[2])} << 8) | uint32_t{static_cast<uint8_t>(p[3])});
}

}  // namespace

BinaryCopyParser::BinaryCopyParser(size_t expected_columns)
    : expected_columns_(expected_columns), fields_(expected_columns) {}

absl::Status BinaryCopyParser::Fail(size_t at, const std::string& problem) {
  state_ = State::kFailed;
  return absl::InvalidArgumentError(
      absl::StrCat("binary COPY data, byte ", stream_offset_ + at, ": ", problem));
}

absl::Status BinaryCopyParser::ParseHeader(std::string_view message, size_t* pos) {
  const char* const p = message.data();
  const size_t n = message.size();
  const size_t signature_bytes = std::min(n, sizeof(kSignature));
  if (std::memcmp(p, kSignature, signature_bytes) != 0) {
    return Fail(0, "not PostgreSQL's binary COPY signature (expected \"PGCOPY\\n\\377\\r\\n\\0\")");
  }
  if (n < kHeaderSize) {
    return Fail(n, absl::StrCat("the message ends inside the ", kHeaderSize, "-byte header"));
  }
  const auto flags = static_cast<uint32_t>(ReadInt32(p + sizeof(kSignature)));
  if ((flags & kOidsFlag) != 0) {
    return Fail(sizeof(kSignature), "the data includes OIDs (header flag bit 16), not supported");
  }
  if ((flags & kCriticalFlags) != 0) {
    return Fail(sizeof(kSignature),
                absl::StrFormat("unknown critical header flags 0x%04x", flags & kCriticalFlags));
  }
  const int32_t extension_length = ReadInt32(p + sizeof(kSignature) + 4);
  if (extension_length < 0) {
    return Fail(sizeof(kSignature) + 4,
                absl::StrCat("negative header extension length ", extension_length));
  }
  if (static_cast<size_t>(extension_length) > n - kHeaderSize) {
    return Fail(sizeof(kSignature) + 4, absl::StrCat("the header extension of ", extension_length,
                                                     " bytes goes past the end of the message (",
                                                     n - kHeaderSize, " bytes left)"));
  }
  *pos = kHeaderSize + static_cast<size_t>(extension_length);
  return absl::OkStatus();
}

absl::Status BinaryCopyParser::Next(std::string_view message, size_t* pos, bool* got_row) {
  const size_t n = message.size();
  switch (state_) {
    case State::kFailed:
      return absl::FailedPreconditionError(
          "binary COPY data: parsing already failed on malformed data");
    case State::kHeader: {
      if (n == 0) return absl::OkStatus();
      absl::Status status = ParseHeader(message, pos);
      if (!status.ok()) return status;
      state_ = State::kTuples;
      break;
    }
    case State::kTuples:
      break;
    case State::kFinished:
      if (*pos < n) return Fail(*pos, "data after the trailer");
      stream_offset_ += n;
      return absl::OkStatus();
  }
  size_t i = *pos;
  if (i == n) {
    stream_offset_ += n;
    return absl::OkStatus();
  }
  const char* const p = message.data();
  if (n - i < 2) return Fail(i, "the message ends inside a tuple's field count");
  const int16_t count = ReadInt16(p + i);
  if (count == -1) {
    state_ = State::kFinished;
    *pos = i + 2;
    if (*pos < n) return Fail(*pos, "data after the trailer");
    stream_offset_ += n;
    return absl::OkStatus();
  }
  if (count < 0 || static_cast<size_t>(count) != expected_columns_) {
    return Fail(i, absl::StrCat("a tuple has ", count, " fields, expected ", expected_columns_));
  }
  i += 2;
  for (size_t f = 0; f < expected_columns_; ++f) {
    if (n - i < 4) {
      return Fail(i, absl::StrCat("the message ends inside the length of field ", f + 1));
    }
    const int32_t length = ReadInt32(p + i);
    if (length == -1) {
      fields_[f] = Field{true, {}};
      i += 4;
      continue;
    }
    if (length < 0) return Fail(i, absl::StrCat("field ", f + 1, " has length ", length));
    if (static_cast<size_t>(length) > n - i - 4) {
      return Fail(
          i, absl::StrCat("field ", f + 1, " of ", length,
                          " bytes goes past the end of the message (", n - i - 4, " bytes left)"));
    }
    i += 4;
    fields_[f] = Field{false, message.substr(i, static_cast<size_t>(length))};
    i += static_cast<size_t>(length);
  }
  *pos = i;
  *got_row = true;
  return absl::OkStatus();
}

}  // namespace pgflow
