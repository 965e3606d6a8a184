#pragma once

// Signing as the Standard Webhooks specification says (github.com/standard-webhooks, used by
// Svix and Debezium Server), so that receivers verify pgflow's requests with the libraries
// they already have:
//
//   webhook-id:        an id that stays the same for the same message, whatever the attempt
//   webhook-timestamp: seconds since the epoch, of this attempt
//   webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>
//
// A secret is written "whsec_" and the base64 of its key (the prefix is optional). Several
// secrets sign with each, their signatures separated by spaces: a receiver that knows any of
// them accepts the request, which lets secrets be rotated without a gap.

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgflow {

// The key of `secret` ("whsec_MfKQ9r8G..."); InvalidArgument when it is not base64 or empty.
absl::StatusOr<std::string> WebhookSecretKey(std::string_view secret);

// The `webhook-signature` value of a message: one "v1,<base64>" per key, space-separated.
std::string SignWebhook(const std::vector<std::string>& keys, std::string_view id,
                        std::string_view timestamp, std::string_view body);

}  // namespace pgflow
