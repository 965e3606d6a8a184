#pragma once

// Small text helpers that the Redis, memcached and HTTP sessions (redis_session.h,
// memcached_session.h, http_session.h) share. Plain functions; any thread may call them.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace pgflow::kv_session {

// `s` as an absl::string_view, for absl's string functions (Debian's abseil has a string_view
// of its own).
inline absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Parses all of `s` as a decimal int64_t: an optional '-', then digits, nothing else (no '+',
// no spaces). Returns false, *out unspecified, for anything else, an overflow included.
bool ParseInt(std::string_view s, int64_t* out);

// Drops the first *pos bytes of *in, those a session has consumed (all of it when *pos is at
// or past its end), and sets *pos to 0.
void Compact(std::string* in, size_t* pos);

}  // namespace pgflow::kv_session
