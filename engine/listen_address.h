#pragma once

// The address a server of pgflow's listens on (the admin endpoint, the kv cache's listeners):
// "127.0.0.1:9187", "0.0.0.0:6380", "[::1]:8080", "localhost:0". The one parser of them.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow {

struct ListenAddress {
  std::string host;   // an IP address literal: "127.0.0.1", "0.0.0.0", "::1"
  uint16_t port = 0;  // 0 asks for a free port
  // "127.0.0.1:9187", "[::1]:9187".
  std::string ToString() const;
  // The address a client on this machine reaches the listener at: `host`, or the loopback
  // address of a wildcard one (0.0.0.0: 127.0.0.1; ::, [::]: ::1).
  std::string LocalHost() const;
  friend bool operator==(const ListenAddress&, const ListenAddress&) = default;
};

// Parses host:port, where host is an IPv4 address, an IPv6 address in brackets, or
// `localhost` (127.0.0.1); a listener binds an address, so other host names are refused rather
// than resolved. No network. The error message says what is wrong, without position.
absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text);

// ParseListenAddress's verdict alone: the check of a configuration's listen option.
absl::Status CheckListenAddress(const std::string& text);

}  // namespace pgflow
