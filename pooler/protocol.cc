#include "pooler/protocol.h"

#include <algorithm>
#include <cstring>

#include "engine/str_cat.h"

namespace pgflow::pooler {

int32_t ReadInt32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<int32_t>((uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) |
                              (uint32_t{u[2]} << 8) | uint32_t{u[3]});
}

int16_t ReadInt16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<int16_t>((u[0] << 8) | u[1]);
}

void AppendInt32(std::string* out, int32_t v) {
  auto u = static_cast<uint32_t>(v);
  char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16), static_cast<char>(u >> 8),
               static_cast<char>(u)};
  out->append(b, 4);
}

void AppendInt16(std::string* out, int16_t v) {
  auto u = static_cast<uint16_t>(v);
  char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
  out->append(b, 2);
}

std::string StartupPacket::Get(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return value;
  }
  return "";
}

absl::StatusOr<size_t> StartupPacketLength(std::string_view first_four) {
  int32_t length = ReadInt32(first_four.data());
  if (length < 8 || static_cast<size_t>(length) > kMaxStartupPacket) {
    return absl::InvalidArgumentError(
        Cat("invalid startup packet length ", length, " (expected 8 to ", kMaxStartupPacket,
            " bytes): not a PostgreSQL client?"));
  }
  return static_cast<size_t>(length);
}

absl::StatusOr<StartupPacket> ParseStartupPacket(std::string_view packet) {
  if (packet.size() < 8) return absl::InvalidArgumentError("startup packet too short");
  StartupPacket result;
  int32_t code = ReadInt32(packet.data() + 4);
  result.version = code;
  switch (code) {
    case kSslRequestCode:
      result.kind = StartupPacket::Kind::kSslRequest;
      return result;
    case kGssEncRequestCode:
      result.kind = StartupPacket::Kind::kGssEncRequest;
      return result;
    case kCancelRequestCode:
      if (packet.size() != 16) {
        return absl::InvalidArgumentError(
            Cat("invalid cancel request length ", packet.size(), " (expected 16)"));
      }
      result.kind = StartupPacket::Kind::kCancel;
      result.cancel_pid = ReadInt32(packet.data() + 8);
      result.cancel_key = ReadInt32(packet.data() + 12);
      return result;
    default:
      break;
  }
  if ((code >> 16) != 3) {
    return absl::InvalidArgumentError(Cat("unsupported frontend protocol ", code >> 16, ".",
                                          code & 0xffff, ": the pooler speaks 3.0"));
  }
  // Minor versions above 0 are answered with NegotiateProtocolVersion by PostgreSQL; the
  // pooler, like pgbouncer, simply speaks 3.0 (no 3.x feature exists that it would pass on).
  BodyReader reader(packet.substr(8));
  while (true) {
    std::optional<std::string_view> name = reader.CString();
    if (!name.has_value()) {
      return absl::InvalidArgumentError("startup packet: parameters not terminated");
    }
    if (name->empty()) break;
    std::optional<std::string_view> value = reader.CString();
    if (!value.has_value()) {
      return absl::InvalidArgumentError(Cat("startup packet: parameter '", *name,
                                            "' has no value"));
    }
    result.parameters.emplace_back(std::string(*name), std::string(*value));
  }
  if (!reader.done()) return absl::InvalidArgumentError("startup packet: bytes after the end");
  if (result.Get("user").empty()) {
    return absl::InvalidArgumentError("no PostgreSQL user name specified in startup packet");
  }
  return result;
}

absl::StatusOr<std::optional<MessageHeader>> ReadMessageHeader(std::string_view data,
                                                               size_t max_size) {
  if (data.size() < 5) return std::nullopt;
  int32_t length = ReadInt32(data.data() + 1);
  if (length < 4) {
    return absl::InvalidArgumentError(
        Cat("invalid message length ", length, " for message type '",
            std::string(1, data[0]), "'"));
  }
  size_t size = static_cast<size_t>(length) + 1;
  if (size > max_size) {
    return absl::InvalidArgumentError(Cat("message of type '", std::string(1, data[0]),
                                          "' is ", size, " bytes, more than the limit of ",
                                          max_size));
  }
  return MessageHeader{.type = data[0], .size = size};
}

std::optional<std::string_view> BodyReader::CString() {
  size_t end = body_.find('\0', pos_);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view s = body_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return s;
}

std::optional<int32_t> BodyReader::Int32() {
  if (body_.size() - pos_ < 4) return std::nullopt;
  int32_t v = ReadInt32(body_.data() + pos_);
  pos_ += 4;
  return v;
}

std::optional<int16_t> BodyReader::Int16() {
  if (body_.size() - pos_ < 2) return std::nullopt;
  int16_t v = ReadInt16(body_.data() + pos_);
  pos_ += 2;
  return v;
}

std::optional<char> BodyReader::Byte() {
  if (pos_ >= body_.size()) return std::nullopt;
  return body_[pos_++];
}

std::optional<std::string_view> BodyReader::Bytes(size_t n) {
  if (body_.size() - pos_ < n) return std::nullopt;
  std::string_view s = body_.substr(pos_, n);
  pos_ += n;
  return s;
}

void AppendMessage(std::string* out, char type, std::string_view body) {
  out->push_back(type);
  AppendInt32(out, static_cast<int32_t>(body.size() + 4));
  out->append(body);
}

namespace {

// Appends a message whose body is written by `fill`, its length set afterwards.
template <typename Fill>
void AppendBuilt(std::string* out, char type, Fill fill) {
  out->push_back(type);
  size_t at = out->size();
  out->append(4, '\0');
  fill(out);
  auto length = static_cast<uint32_t>(out->size() - at);
  (*out)[at] = static_cast<char>(length >> 24);
  (*out)[at + 1] = static_cast<char>(length >> 16);
  (*out)[at + 2] = static_cast<char>(length >> 8);
  (*out)[at + 3] = static_cast<char>(length);
}

void AppendCString(std::string* out, std::string_view s) {
  out->append(s);
  out->push_back('\0');
}

}  // namespace

void AppendAuthentication(std::string* out, int32_t code, std::string_view extra) {
  AppendBuilt(out, 'R', [&](std::string* o) {
    AppendInt32(o, code);
    o->append(extra);
  });
}

void AppendParameterStatus(std::string* out, std::string_view name, std::string_view value) {
  AppendBuilt(out, 'S', [&](std::string* o) {
    AppendCString(o, name);
    AppendCString(o, value);
  });
}

void AppendBackendKeyData(std::string* out, int32_t pid, int32_t key) {
  AppendBuilt(out, 'K', [&](std::string* o) {
    AppendInt32(o, pid);
    AppendInt32(o, key);
  });
}

void AppendReadyForQuery(std::string* out, char status) {
  AppendMessage(out, 'Z', std::string_view(&status, 1));
}

void AppendCachedPlanChanged(std::string* out) {
  AppendBuilt(out, 'E', [&](std::string* o) {
    for (auto [code, value] : {std::pair<char, std::string_view>{'S', "ERROR"},
                               {'V', "ERROR"},
                               {'C', "0A000"},
                               {'M', "cached plan must not change result type"},
                               {'F', "plancache.c"},
                               {'R', "RevalidateCachedQuery"}}) {
      o->push_back(code);
      AppendCString(o, value);
    }
    o->push_back('\0');
  });
}

void AppendError(std::string* out, std::string_view severity, std::string_view sqlstate,
                 std::string_view message, char type) {
  AppendBuilt(out, type, [&](std::string* o) {
    o->push_back('S');
    AppendCString(o, severity);
    o->push_back('V');
    AppendCString(o, severity);
    o->push_back('C');
    AppendCString(o, sqlstate);
    o->push_back('M');
    // A NUL would end the field early; PostgreSQL never sends one.
    std::string clean(message);
    std::replace(clean.begin(), clean.end(), '\0', ' ');
    AppendCString(o, clean);
    o->push_back('\0');
  });
}

void AppendRowDescription(std::string* out, const std::vector<std::string>& columns) {
  AppendBuilt(out, 'T', [&](std::string* o) {
    AppendInt16(o, static_cast<int16_t>(columns.size()));
    for (const std::string& column : columns) {
      AppendCString(o, column);
      AppendInt32(o, 0);    // table oid
      AppendInt16(o, 0);    // column number
      AppendInt32(o, 25);   // text
      AppendInt16(o, -1);   // variable size
      AppendInt32(o, -1);   // no modifier
      AppendInt16(o, 0);    // text format
    }
  });
}

void AppendDataRow(std::string* out, const std::vector<std::optional<std::string>>& values) {
  AppendBuilt(out, 'D', [&](std::string* o) {
    AppendInt16(o, static_cast<int16_t>(values.size()));
    for (const std::optional<std::string>& value : values) {
      if (!value.has_value()) {
        AppendInt32(o, -1);
        continue;
      }
      AppendInt32(o, static_cast<int32_t>(value->size()));
      o->append(*value);
    }
  });
}

void AppendCommandComplete(std::string* out, std::string_view tag) {
  AppendBuilt(out, 'C', [&](std::string* o) { AppendCString(o, tag); });
}

void AppendStartup(std::string* out,
                   const std::vector<std::pair<std::string, std::string>>& parameters) {
  size_t at = out->size();
  out->append(4, '\0');
  AppendInt32(out, kProtocolVersion3);
  for (const auto& [name, value] : parameters) {
    AppendCString(out, name);
    AppendCString(out, value);
  }
  out->push_back('\0');
  auto length = static_cast<uint32_t>(out->size() - at);
  std::string word;
  AppendInt32(&word, static_cast<int32_t>(length));
  out->replace(at, 4, word);
}

void AppendCancelRequest(std::string* out, int32_t pid, int32_t key) {
  AppendInt32(out, 16);
  AppendInt32(out, kCancelRequestCode);
  AppendInt32(out, pid);
  AppendInt32(out, key);
}

void AppendQuery(std::string* out, std::string_view sql) {
  AppendBuilt(out, 'Q', [&](std::string* o) { AppendCString(o, sql); });
}

void AppendPassword(std::string* out, std::string_view password) {
  AppendBuilt(out, 'p', [&](std::string* o) { AppendCString(o, password); });
}

void AppendSaslInitialResponse(std::string* out, std::string_view mechanism,
                               std::string_view data) {
  AppendBuilt(out, 'p', [&](std::string* o) {
    AppendCString(o, mechanism);
    AppendInt32(o, static_cast<int32_t>(data.size()));
    o->append(data);
  });
}

void AppendSaslResponse(std::string* out, std::string_view data) {
  AppendMessage(out, 'p', data);
}

void AppendTerminate(std::string* out) { AppendMessage(out, 'X', {}); }

ErrorFields ParseErrorFields(std::string_view body) {
  ErrorFields fields;
  BodyReader reader(body);
  while (std::optional<char> code = reader.Byte()) {
    if (*code == '\0') break;
    std::optional<std::string_view> value = reader.CString();
    if (!value.has_value()) break;
    switch (*code) {
      case 'S':
        if (fields.severity.empty()) fields.severity = *value;
        break;
      case 'V':
        fields.severity = *value;
        break;
      case 'C':
        fields.sqlstate = *value;
        break;
      case 'M':
        fields.message = *value;
        break;
      case 'D':
        fields.detail = *value;
        break;
      default:
        break;
    }
  }
  return fields;
}

std::optional<uint64_t> StatementShape(std::string_view parameter_description,
                                       std::string_view row_description) {
  // FNV-1a over what a Bind and the rows depend on.
  uint64_t hash = 14695981039346656037ull;
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  };
  mix(parameter_description);
  mix(std::string_view("\xff", 1));  // (where one ends)
  if (!row_description.empty()) {
    BodyReader reader(row_description);
    std::optional<int16_t> count = reader.Int16();
    if (!count.has_value() || *count < 0) return std::nullopt;
    mix(row_description.substr(0, 2));
    for (int16_t i = 0; i < *count; ++i) {
      std::optional<std::string_view> name = reader.CString();
      std::optional<std::string_view> table_and_column = reader.Bytes(6);
      std::optional<std::string_view> type = reader.Bytes(4);
      std::optional<std::string_view> length = reader.Bytes(2);
      std::optional<std::string_view> modifier = reader.Bytes(4);
      std::optional<std::string_view> format = reader.Bytes(2);
      if (!name || !table_and_column || !type || !length || !modifier || !format) {
        return std::nullopt;
      }
      // (The source table and column are left out: a table dropped and created again with
      // the same columns gives the same rows, as PostgreSQL sees it.)
      mix(*name);
      mix(std::string_view("", 1));
      mix(*type);
      mix(*modifier);
    }
  }
  return hash == 0 ? 1 : hash;
}

std::optional<ParseMessage> SplitParse(std::string_view body) {
  BodyReader reader(body);
  std::optional<std::string_view> name = reader.CString();
  if (!name.has_value()) return std::nullopt;
  std::string_view rest = reader.rest();
  std::optional<std::string_view> query = reader.CString();
  std::optional<int16_t> count = reader.Int16();
  if (!query.has_value() || !count.has_value() || *count < 0 ||
      reader.rest().size() != static_cast<size_t>(*count) * 4) {
    return std::nullopt;
  }
  return ParseMessage{.name = *name, .query = *query, .rest = rest};
}

std::optional<BindMessage> SplitBind(std::string_view body) {
  BodyReader reader(body);
  std::optional<std::string_view> portal = reader.CString();
  std::optional<std::string_view> statement =
      portal.has_value() ? reader.CString() : std::nullopt;
  if (!statement.has_value()) return std::nullopt;
  return BindMessage{.portal = *portal, .statement = *statement, .rest = reader.rest()};
}

std::optional<TargetMessage> SplitTarget(std::string_view body) {
  BodyReader reader(body);
  std::optional<char> kind = reader.Byte();
  if (!kind.has_value() || (*kind != 'S' && *kind != 'P')) return std::nullopt;
  std::optional<std::string_view> name = reader.CString();
  if (!name.has_value() || !reader.done()) return std::nullopt;
  return TargetMessage{.kind = *kind, .name = *name};
}

void AppendParse(std::string* out, std::string_view name, std::string_view rest) {
  AppendBuilt(out, 'P', [&](std::string* o) {
    AppendCString(o, name);
    o->append(rest);
  });
}

void AppendBind(std::string* out, std::string_view portal, std::string_view statement,
                std::string_view rest) {
  AppendBuilt(out, 'B', [&](std::string* o) {
    AppendCString(o, portal);
    AppendCString(o, statement);
    o->append(rest);
  });
}

void AppendTarget(std::string* out, char type, char kind, std::string_view name) {
  AppendBuilt(out, type, [&](std::string* o) {
    o->push_back(kind);
    AppendCString(o, name);
  });
}

std::string QuoteLiteral(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string QuoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace pgflow::pooler
