#include "engine/lsn.h"

#include <charconv>

namespace pgflow {

void AppendLsn(Lsn lsn, std::string* out) {
  char buf[32];
  auto hi = std::to_chars(buf, buf + 16, static_cast<uint32_t>(lsn.value >> 32), 16);
  *hi.ptr++ = '/';
  auto lo = std::to_chars(hi.ptr, buf + sizeof(buf), static_cast<uint32_t>(lsn.value), 16);
  for (char* p = buf; p < lo.ptr; ++p) {
    if (*p >= 'a' && *p <= 'f') *p = static_cast<char>(*p - 'a' + 'A');
  }
  out->append(buf, lo.ptr);
}

std::string Lsn::ToString() const {
  std::string s;
  AppendLsn(*this, &s);
  return s;
}

std::optional<Lsn> Lsn::Parse(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size()) {
    return std::nullopt;
  }
  uint32_t hi = 0;
  uint32_t lo = 0;
  auto parse = [](std::string_view part, uint32_t* v) {
    if (part.size() > 8) return false;
    auto r = std::from_chars(part.data(), part.data() + part.size(), *v, 16);
    return r.ec == std::errc() && r.ptr == part.data() + part.size();
  };
  if (!parse(text.substr(0, slash), &hi) || !parse(text.substr(slash + 1), &lo)) {
    return std::nullopt;
  }
  return Lsn((static_cast<uint64_t>(hi) << 32) | lo);
}

}  // namespace pgflow
