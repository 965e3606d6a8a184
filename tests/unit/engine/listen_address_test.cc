#include "engine/listen_address.h"

#include <string>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

std::string ErrorOf(std::string_view text) {
  absl::StatusOr<ListenAddress> address = ParseListenAddress(text);
  EXPECT_FALSE(address.ok()) << text;
  return address.ok() ? "" : std::string(address.status().message());
}

TEST(ListenAddressTest, AddressesAListenerCanBind) {
  EXPECT_EQ(*ParseListenAddress("127.0.0.1:9187"), (ListenAddress{"127.0.0.1", 9187}));
  EXPECT_EQ(*ParseListenAddress("0.0.0.0:0"), (ListenAddress{"0.0.0.0", 0}));
  EXPECT_EQ(*ParseListenAddress("[::1]:6380"), (ListenAddress{"::1", 6380}));
  EXPECT_EQ(*ParseListenAddress("localhost:8080"), (ListenAddress{"127.0.0.1", 8080}));
  EXPECT_EQ(ParseListenAddress("[::1]:6380")->ToString(), "[::1]:6380");
  EXPECT_EQ(ParseListenAddress("127.0.0.1:1")->ToString(), "127.0.0.1:1");
}

// What a client on the same machine connects to (`pgflow pooler status`).
TEST(ListenAddressTest, AWildcardIsReachedAtLoopback) {
  EXPECT_EQ(ParseListenAddress("0.0.0.0:6432")->LocalHost(), "127.0.0.1");
  EXPECT_EQ(ParseListenAddress("[::]:6432")->LocalHost(), "::1");
  EXPECT_EQ(ParseListenAddress("[0:0::0]:6432")->LocalHost(), "::1");
  EXPECT_EQ(ParseListenAddress("10.1.2.3:6432")->LocalHost(), "10.1.2.3");
  EXPECT_EQ(ParseListenAddress("[::1]:6432")->LocalHost(), "::1");
}

TEST(ListenAddressTest, EverythingElseIsRefusedWithTheReason) {
  EXPECT_EQ(ErrorOf("localhost"),
            "missing port; expected host:port, like 127.0.0.1:9187 or [::1]:9187");
  EXPECT_EQ(ErrorOf(":9187"), "missing host (write 0.0.0.0:<port> to listen on every interface)");
  EXPECT_EQ(ErrorOf("::1:9187"), "an IPv6 address must be in brackets, like [::1]:9187");
  EXPECT_EQ(ErrorOf("127.0.0.1:70000"), "invalid port '70000': expected a number 0..65535");
  EXPECT_EQ(ErrorOf("127.0.0.1:x"), "invalid port 'x': expected a number 0..65535");
  EXPECT_EQ(ErrorOf("[::1]"), "expected host:port, like 127.0.0.1:9187 or [::1]:9187");
  // A host name would have to be resolved: `validate` refuses what `run` could not bind.
  EXPECT_EQ(ErrorOf("cache.example:6380"),
            "'cache.example' is not an IP address (IPv6 goes in brackets): a listener binds an "
            "address, like 127.0.0.1, 0.0.0.0 or [::1], or localhost");
  EXPECT_EQ(ErrorOf("[nope]:1"),
            "'nope' is not an IP address: a listener binds an address, like 127.0.0.1, 0.0.0.0 "
            "or [::1], or localhost");
}

}  // namespace
}  // namespace pgflow
