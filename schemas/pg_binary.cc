#include "schemas/pg_binary.h"

#include "schemas/ascii.h"

namespace pgflow {
namespace {

// PostgreSQL's MAXDIM: binary arrays carry their dimension count, and more is malformed.
constexpr int kMaxArrayDims = 6;

}  // namespace

bool AppendNumericText(std::string_view data, std::string* out) {
  if (data.size() < 8) return false;
  const int16_t ndigits = ReadBigEndian<int16_t>(data.data());
  const int16_t weight = ReadBigEndian<int16_t>(data.data() + 2);
  const uint16_t sign = ReadBigEndian<uint16_t>(data.data() + 4);
  const uint16_t dscale = ReadBigEndian<uint16_t>(data.data() + 6);
  if (ndigits < 0 || data.size() != 8 + 2 * static_cast<size_t>(ndigits)) return false;
  if (sign == 0xC000) {
    out->append("NaN");
    return true;
  }
  if (sign == 0xD000) {
    out->append("Infinity");
    return true;
  }
  if (sign == 0xF000) {
    out->append("-Infinity");
    return true;
  }
  if ((sign != 0x0000 && sign != 0x4000) || dscale > 0x3FFF) return false;
  const char* const digits = data.data() + 8;
  for (int i = 0; i < ndigits; ++i) {
    if (ReadBigEndian<uint16_t>(digits + 2 * i) > 9999) return false;
  }
  // value = sum(digit[i] * 10000^(weight - i)), printed with dscale fractional digits.
  auto digit = [&](int64_t k) -> int {
    return k >= 0 && k < ndigits ? ReadBigEndian<uint16_t>(digits + 2 * k) : 0;
  };
  if (sign == 0x4000) out->push_back('-');
  // Integer part: base-10000 groups 0..weight, without leading zeros.
  bool started = false;
  for (int64_t k = 0; k <= weight; ++k) {
    const int d = digit(k);
    if (started) {
      AppendZeroPadded(d, 4, out);
    } else if (d != 0) {
      AppendZeroPadded(d, 0, out);
      started = true;
    }
  }
  if (!started) out->push_back('0');
  // Fractional part: decimal digit i after the point is in group weight + 1 + i / 4.
  if (dscale > 0) {
    out->push_back('.');
    static constexpr int kPow10[] = {1000, 100, 10, 1};
    for (int i = 0; i < dscale; ++i) {
      const int d = digit(int64_t{weight} + 1 + i / 4);
      out->push_back(static_cast<char>('0' + d / kPow10[i % 4] % 10));
    }
  }
  return true;
}

bool AppendUuidText(std::string_view data, std::string* out) {
  if (data.size() != 16) return false;
  // 8-4-4-4-12 digits.
  AppendLowerHex(data.substr(0, 4), out);
  for (size_t at : {4, 6, 8}) {
    out->push_back('-');
    AppendLowerHex(data.substr(at, 2), out);
  }
  out->push_back('-');
  AppendLowerHex(data.substr(10), out);
  return true;
}

bool AppendArraySendAsJson(
    std::string_view data, uint32_t element_oid,
    absl::FunctionRef<bool(std::string_view element, std::string* out)> append_element,
    std::string* out) {
  const size_t start = out->size();
  size_t pos = 0;
  auto read32 = [&](int32_t* v) {
    if (data.size() - pos < 4) return false;
    *v = ReadBigEndian<int32_t>(data.data() + pos);
    pos += 4;
    return true;
  };
  int32_t ndim;
  int32_t flags;
  int32_t element_type;
  if (!read32(&ndim) || !read32(&flags) || !read32(&element_type)) return false;
  if (ndim < 0 || ndim > kMaxArrayDims || (flags != 0 && flags != 1) ||
      static_cast<uint32_t>(element_type) != element_oid) {
    return false;
  }
  int32_t dims[kMaxArrayDims];
  bool empty = ndim == 0;
  for (int d = 0; d < ndim; ++d) {
    int32_t lower_bound;
    if (!read32(&dims[d]) || !read32(&lower_bound) || dims[d] < 0) return false;
    if (dims[d] == 0) empty = true;
  }
  if (empty) {
    if (pos != data.size()) return false;
    out->append("[]");
    return true;
  }
  // Every element takes at least its 4-byte length: the element count must fit the bytes
  // there are, checked before anything is written (and before the product could overflow).
  const uint64_t max_items = (data.size() - pos) / 4;
  uint64_t nitems = 1;
  for (int d = 0; d < ndim; ++d) {
    if (nitems > max_items / static_cast<uint64_t>(dims[d])) return false;
    nitems *= static_cast<uint64_t>(dims[d]);
  }
  int32_t index[kMaxArrayDims] = {};
  out->append(static_cast<size_t>(ndim), '[');
  for (uint64_t k = 0; k < nitems; ++k) {
    int32_t length;
    if (!read32(&length)) break;
    if (length == -1) {
      out->append("null");
    } else {
      if (length < 0 || static_cast<size_t>(length) > data.size() - pos) break;
      if (!append_element(data.substr(pos, length), out)) break;
      pos += static_cast<size_t>(length);
    }
    // Close the dimensions this element completes; open them again if more follow.
    size_t closed = 0;
    for (int d = ndim - 1; d >= 0 && ++index[d] == dims[d]; --d) {
      index[d] = 0;
      ++closed;
    }
    out->append(closed, ']');
    if (k + 1 < nitems) {
      out->push_back(',');
      out->append(closed, '[');
    } else if (pos == data.size()) {
      return true;
    }
  }
  out->resize(start);
  return false;
}

}  // namespace pgflow
