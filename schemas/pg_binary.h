#pragma once

// PostgreSQL's binary send formats, as binary COPY and binary query results carry them:
// reading their big-endian numbers, and turning the values with more structure than a number
// (numeric, uuid, arrays) into text. The send formats of the other types pgflow decodes are
// plain numbers (bool, integers, floats: schemas/pg_float.h; dates and timestamps:
// schemas/pg_datetime.h) or the text itself (text, varchar, json, ...).
//
// The bytes come from a server or a file and are not trusted: every function checks the
// length and form of what it reads and fails, appending nothing, rather than read past the end.
// Thread-safety: plain functions of their arguments; any thread may call any of them.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/functional/function_ref.h"

namespace pgflow {

// The big-endian integer of sizeof(T) bytes at `p`.
// REQUIRES: `p` points at sizeof(T) readable bytes.
template <typename T>
inline T ReadBigEndian(const char* p) {
  using U = std::make_unsigned_t<T>;
  U v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<U>((v << 8) | static_cast<uint8_t>(p[i]));
  return static_cast<T>(v);
}

// Appends numeric_out's text of the numeric_send value `data` (int16 ndigits, int16 weight,
// uint16 sign, uint16 dscale, then ndigits base-10000 digits): "12345.678", "-0.001", "0.00",
// "NaN", "Infinity", "-Infinity". Returns false, appending nothing, when `data` is not of that
// form (lengths that disagree, a digit above 9999, an unknown sign, dscale above 0x3FFF).
bool AppendNumericText(std::string_view data, std::string* out);

// Appends uuid_out's text of the uuid_send value `data`:
// "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11". Returns false, appending nothing, unless `data` is
// 16 bytes.
bool AppendUuidText(std::string_view data, std::string* out);

// Appends the array_send value `data` as JSON arrays: int32 ndim, int32 flags (1: has NULLs),
// uint32 element type, int32 length and lower bound per dimension, then every element in
// row-major order as int32 length (-1: NULL) and that many bytes. Each dimension becomes a JSON
// array, a NULL element `null`, and every other element what `append_element` appends for its
// bytes (it returns false when they are not of the element type's form). Lower bounds are
// dropped, and an array without elements is [] whatever its dimensions (as array_recv makes
// it). Returns false, leaving *out as it was, when `data` is not of that form (more than 6
// dimensions, an element type other than `element_oid`, counts or lengths that do not fit the
// bytes, bytes left over) or `append_element` refuses an element.
bool AppendArraySendAsJson(
    std::string_view data, uint32_t element_oid,
    absl::FunctionRef<bool(std::string_view element, std::string* out)> append_element,
    std::string* out);

}  // namespace pgflow
