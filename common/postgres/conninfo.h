#pragma once

// Checking and showing libpq connection strings (URIs and key=value conninfo) without ever
// showing a password.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgflow {

// Checks `conninfo` with libpq's own parser, and that every port is a number 1..65535.
// InvalidArgument with a message that never contains the password (a malformed password is
// reported as such, without echoing it). No network.
absl::Status CheckConninfo(const std::string& conninfo);

// A copy of `conninfo` with every password replaced by '*' (same length), so that libpq's
// error messages, which quote parts of the string, can be shown.
std::string MaskPasswords(std::string_view conninfo);

// `conninfo` for a child process (pg_dump): the same connection as key=value pairs without the
// password, fit for a command line that `ps` shows, and the password (empty: none), to hand
// over in PGPASSWORD.
struct ConninfoForTool {
  std::string conninfo;
  std::string password;
};
absl::StatusOr<ConninfoForTool> WithoutPassword(const std::string& conninfo);

// The same connection as key=value pairs (the password kept), to one server: `host` and
// `port`, whatever hosts, host addresses and ports `conninfo` named.
absl::StatusOr<std::string> WithHost(const std::string& conninfo, std::string_view host,
                                     int port);

// "user@host:port/dbname" (the parts `conninfo` gives) for a message: never the password.
std::string DescribeConninfo(const std::string& conninfo);

// The value `conninfo` gives `keyword` ("user", "dbname"); empty when it gives none.
std::string ConninfoValue(const std::string& conninfo, std::string_view keyword);

}  // namespace pgflow
