#include "sinks/webhook/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>

namespace pgflow {
namespace {

// The IPv4 address of `address` (its mapped one for ::ffff:a.b.c.d), host order; false for
// other IPv6 addresses.
bool Ipv4Of(const sockaddr* address, uint32_t* ip) {
  if (address->sa_family == AF_INET) {
    *ip = ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr);
    return true;
  }
  if (address->sa_family != AF_INET6) return false;
  const in6_addr& a6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
  if (!IN6_IS_ADDR_V4MAPPED(&a6)) return false;
  *ip = (uint32_t{a6.s6_addr[12]} << 24) | (uint32_t{a6.s6_addr[13]} << 16) |
        (uint32_t{a6.s6_addr[14]} << 8) | a6.s6_addr[15];
  return true;
}

bool InNet(uint32_t ip, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (ip & mask) == (net & mask);
}

}  // namespace

bool IsLoopbackAddress(const sockaddr* address) {
  uint32_t ip = 0;
  if (Ipv4Of(address, &ip)) return InNet(ip, 0x7f000000, 8);
  if (address->sa_family != AF_INET6) return false;
  return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
}

bool IsInternalAddress(const sockaddr* address) {
  uint32_t ip = 0;
  if (Ipv4Of(address, &ip)) {
    return InNet(ip, 0x00000000, 8) || InNet(ip, 0x0a000000, 8) || InNet(ip, 0x64400000, 10) ||
           InNet(ip, 0x7f000000, 8) || InNet(ip, 0xa9fe0000, 16) || InNet(ip, 0xac100000, 12) ||
           InNet(ip, 0xc0a80000, 16) || InNet(ip, 0xe0000000, 3);
  }
  if (address->sa_family != AF_INET6) return true;  // not an internet address at all
  const in6_addr& a6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(&a6) || IN6_IS_ADDR_UNSPECIFIED(&a6) || IN6_IS_ADDR_LINKLOCAL(&a6) ||
         IN6_IS_ADDR_MULTICAST(&a6) || (a6.s6_addr[0] & 0xfe) == 0xfc;  // fc00::/7
}

std::string AddressText(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (address->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text,
              sizeof(text));
  } else if (address->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text,
              sizeof(text));
  }
  return text;
}

}  // namespace pgflow
