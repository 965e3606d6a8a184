#pragma once

// Which network addresses a webhook endpoint may resolve to: the Standard Webhooks advice
// against server-side request forgery is to refuse internal addresses for endpoints a user of
// the service may set. Plain functions over socket addresses.

#include <sys/socket.h>

#include <string>

namespace pgflow {

// True for addresses that are not on the public internet: loopback (127/8, ::1), private
// (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), shared
// (100.64/10), "this network" (0/8, ::), multicast and reserved (224/3), and IPv4 addresses
// mapped into IPv6 that are any of these.
bool IsInternalAddress(const sockaddr* address);

// True for a loopback address (127/8, ::1, ::ffff:127/104).
bool IsLoopbackAddress(const sockaddr* address);

// The address as text ("10.0.0.7", "fd00::1"), for messages.
std::string AddressText(const sockaddr* address);

}  // namespace pgflow
