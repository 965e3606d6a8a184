#include "engine/asio_support.h"

#include "absl/strings/str_cat.h"
#include "engine/listen_address.h"

namespace pgflow::asio_support {

absl::StatusOr<tcp::endpoint> ParseEndpoint(const std::string& address) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': ", parsed.status().message()));
  }
  boost::system::error_code ec;
  asio::ip::address ip = asio::ip::make_address(parsed->host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': '", parsed->host, "' is not an IP address"));
  }
  return tcp::endpoint(ip, parsed->port);
}

}  // namespace pgflow::asio_support
