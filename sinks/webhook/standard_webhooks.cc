#include "sinks/webhook/standard_webhooks.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "engine/str_cat.h"
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
  std::string message = Cat(id, ".", timestamp, ".");
  message.append(body);
  std::string signature;
  for (const std::string& key : keys) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
    if (!signature.empty()) signature.push_back(' ');
    signature.append("v1,");
    AppendBase64(std::string_view(reinterpret_cast<const char*>(digest), length), &signature);
  }
  return signature;
}

}  // namespace pgflow
