#pragma once

// Checking and showing libpq connection strings (URIs and key=value conninfo) without ever
// showing a password.

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace pgflow {

// Checks `conninfo` with libpq's own parser, and that every port is a number 1..65535.
// InvalidArgument with a message that never contains the password (a malformed password is
// reported as such, without echoing it). No network.
absl::Status CheckConninfo(const std::string& conninfo);

// A copy of `conninfo` with every password replaced by '*' (same length), so that libpq's
// error messages, which quote parts of the string, can be shown.
std::string MaskPasswords(std::string_view conninfo);

}  // namespace pgflow
