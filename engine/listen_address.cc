#include "engine/listen_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <iterator>

#include "absl/status/status.h"
#include "engine/str_cat.h"

namespace pgflow {
namespace {

constexpr std::string_view kForm = "expected host:port, like 127.0.0.1:9187 or [::1]:9187";

bool IsIpAddress(const std::string& host, int family) {
  unsigned char buffer[16];
  return inet_pton(family, host.c_str(), buffer) == 1;
}

}  // namespace

std::string ListenAddress::ToString() const {
  if (host.find(':') != std::string::npos) return Cat("[", host, "]:", port);
  return Cat(host, ":", port);
}

std::string ListenAddress::LocalHost() const {
  const bool v6 = host.find(':') != std::string::npos;
  unsigned char bytes[16] = {};
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), bytes) != 1) return host;
  const bool wildcard =
      std::all_of(std::begin(bytes), std::end(bytes), [](unsigned char b) { return b == 0; });
  if (!wildcard) return host;
  return v6 ? "::1" : "127.0.0.1";
}

absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text) {
  std::string_view host;
  std::string_view port;
  bool bracketed = text.starts_with("[");
  if (bracketed) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(Cat(kForm));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(Cat("missing port; ", kForm));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          "missing host (write 0.0.0.0:<port> to listen on every interface)");
    }
    if (host.find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError("an IPv6 address must be in brackets, like [::1]:9187");
    }
  }
  uint32_t number = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || number > 65535) {
    return absl::InvalidArgumentError(Cat("invalid port '", port, "': expected a number 0..65535"));
  }
  ListenAddress address;
  address.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  address.port = static_cast<uint16_t>(number);
  if (bracketed ? !IsIpAddress(address.host, AF_INET6) : !IsIpAddress(address.host, AF_INET)) {
    return absl::InvalidArgumentError(
        Cat("'", host, "' is not an IP address", bracketed ? "" : " (IPv6 goes in brackets)",
            ": a listener binds an address, like 127.0.0.1, 0.0.0.0 or [::1], or localhost"));
  }
  return address;
}

absl::Status CheckListenAddress(const std::string& text) {
  return ParseListenAddress(text).status();
}

}  // namespace pgflow
