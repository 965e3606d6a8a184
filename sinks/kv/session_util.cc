#include "sinks/kv/session_util.h"

#include <charconv>

namespace pgflow::kv_session {

bool ParseInt(std::string_view s, int64_t* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

void Compact(std::string* in, size_t* pos) {
  if (*pos == 0) return;
  if (*pos >= in->size()) {
    in->clear();
  } else {
    in->erase(0, *pos);
  }
  *pos = 0;
}

}  // namespace pgflow::kv_session
