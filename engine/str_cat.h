#pragma once

// String concatenation over std::string_view. Debian's Abseil has an absl::string_view of its
// own, which absl::StrCat and absl::StrJoin require; Cat and Join take std::string_view,
// absl::string_view, std::string, C strings and integers alike.

#include <concepts>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"

namespace pgflow {
namespace str_cat_internal {

inline void Append(std::string* out, std::string_view piece) { out->append(piece); }
inline void Append(std::string* out, const std::string& piece) { out->append(piece); }
inline void Append(std::string* out, const char* piece) { out->append(piece); }
inline void Append(std::string* out, char piece) { out->push_back(piece); }
inline void Append(std::string* out, absl::string_view piece) {
  out->append(piece.data(), piece.size());
}
template <typename T>
requires std::integral<T> &&(!std::same_as<T, char>)void Append(std::string* out, T number) {
  out->append(std::to_string(number));
}

}  // namespace str_cat_internal

// An absl::string_view (absl::Status::message()) as a std::string_view.
inline std::string_view Sv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

template <typename... Pieces>
std::string Cat(const Pieces&... pieces) {
  std::string out;
  (str_cat_internal::Append(&out, pieces), ...);
  return out;
}

// `pieces` with `separator` between each two.
template <typename Piece>
std::string Join(std::span<const Piece> pieces, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (i > 0) out.append(separator);
    str_cat_internal::Append(&out, pieces[i]);
  }
  return out;
}
template <typename Piece>
std::string Join(const std::vector<Piece>& pieces, std::string_view separator) {
  return Join(std::span<const Piece>(pieces), separator);
}

}  // namespace pgflow
