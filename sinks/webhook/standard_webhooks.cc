#include "sinks/webhook/standard_webhooks.h"

#include "common/digest.h"
#include "schemas/base64.h"

namespace pgflow {

absl::StatusOr<std::string> WebhookSecretKey(std::string_view secret) {
  std::string_view text = secret;
  if (text.substr(0, 6) == "whsec_") text.remove_prefix(6);
  std::string key;
  if (text.empty() || !AppendBase64Decoded(text, &key) || key.empty()) {
    return absl::InvalidArgumentError(
        "a webhook secret is \"whsec_\" followed by the base64 of its key (at least 24 bytes "
        "are advised): generate one with `echo whsec_$(openssl rand -base64 32)`");
  }
  return key;
}

std::string SignWebhook(const std::vector<std::string>& keys, std::string_view id,
                        std::string_view timestamp, std::string_view body) {
  std::string signature;
  for (const std::string& key : keys) {
    // The signed content is "id.timestamp.body", digested in parts: the body is not copied.
    const std::string digest = HmacSha256(key, {id, ".", timestamp, ".", body});
    if (!signature.empty()) signature.push_back(' ');
    signature.append("v1,");
    AppendBase64(digest, &signature);
  }
  return signature;
}

}  // namespace pgflow
