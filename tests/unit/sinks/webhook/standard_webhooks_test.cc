#include "sinks/webhook/standard_webhooks.h"

#include <gtest/gtest.h>

namespace pgflow {
namespace {

// The specification's libraries' own test vector (standard-webhooks, "sign function works").
TEST(StandardWebhooksTest, SignsTheSpecificationsTestVector) {
  absl::StatusOr<std::string> key = WebhookSecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->size(), 24u);
  EXPECT_EQ(SignWebhook({*key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                        R"({"test": 2432232314})"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(StandardWebhooksTest, SeveralKeysSignWithEachSpaceSeparated) {
  const std::string a = *WebhookSecretKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  const std::string b = *WebhookSecretKey("C2FVsBQIhrscChlQIMV+b5sSYspob7oD");  // no prefix
  const std::string one = SignWebhook({a}, "id", "1", "{}");
  const std::string two = SignWebhook({b}, "id", "1", "{}");
  EXPECT_EQ(SignWebhook({a, b}, "id", "1", "{}"), one + " " + two);
  EXPECT_NE(one, two);
}

TEST(StandardWebhooksTest, ASecretThatIsNotBase64IsRefusedWithTheWayOut) {
  absl::StatusOr<std::string> key = WebhookSecretKey("whsec_not base64!");
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("openssl rand -base64 32"), std::string::npos);
  EXPECT_FALSE(WebhookSecretKey("whsec_").ok());
}

}  // namespace
}  // namespace pgflow
