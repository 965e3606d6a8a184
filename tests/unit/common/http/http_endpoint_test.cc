#include "common/http/http_endpoint.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "yaml-cpp/yaml.h"

namespace pgflow {
namespace {

using std::chrono::milliseconds;

struct Sink {
  HttpEndpointOptions http = HttpEndpointOptions::WithTimeout(milliseconds(10000));
  int batch = 1;
};

const OptionTable<HttpEndpointOptions>& EndpointTable() {
  static const auto* table = MakeHttpEndpointTable(Sink{}.http, "endpoint").release();
  return *table;
}

const OptionTable<Sink>& SinkTable() {
  static const auto* table = new OptionTable<Sink>({
      EmbedOptions(&Sink::http, EndpointTable()),
      IntOption("batch", &Sink::batch).Help("b"),
  });
  return *table;
}

ConfigNode NodeOf(const std::string& yaml) {
  return ConfigNode(std::make_shared<const YAML::Node>(YAML::Load(yaml)), "s.yaml", "sink");
}

const OptionDoc* DocOf(std::string_view key) {
  for (const OptionDoc& doc : SinkTable().docs()) {
    if (doc.key == key) return &doc;
  }
  return nullptr;
}

TEST(HttpEndpointTableTest, ItsKeysAreTheEmbeddingSinksOwn) {
  absl::StatusOr<Sink> sink = SinkTable().Parse(
      NodeOf("{ca_file: /etc/ca.pem, client_cert: c.pem, client_key: k.pem, tls_verify: false, "
             "gzip: true, timeout: 2s, batch: 5}"));
  ASSERT_TRUE(sink.ok()) << sink.status();
  EXPECT_EQ(sink->http.ca_file, "/etc/ca.pem");
  EXPECT_EQ(sink->http.client_cert, "c.pem");
  EXPECT_EQ(sink->http.client_key, "k.pem");
  EXPECT_FALSE(sink->http.tls_verify);
  EXPECT_TRUE(sink->http.gzip);
  EXPECT_EQ(sink->http.timeout, milliseconds(2000));
  EXPECT_EQ(sink->batch, 5);
}

TEST(HttpEndpointTableTest, TheEmbeddingSinksDefaultsStandAndAreShown) {
  absl::StatusOr<Sink> sink = SinkTable().Parse(NodeOf("{batch: 2}"));
  ASSERT_TRUE(sink.ok()) << sink.status();
  EXPECT_EQ(sink->http.timeout, milliseconds(10000));
  EXPECT_TRUE(sink->http.tls_verify);
  EXPECT_FALSE(sink->http.gzip);
  ASSERT_NE(DocOf("timeout"), nullptr);
  EXPECT_EQ(DocOf("timeout")->default_text, "10s");
  EXPECT_EQ(DocOf("tls_verify")->default_text, "true");
  EXPECT_EQ(DocOf("gzip")->default_text, "false");
  EXPECT_EQ(DocOf("ca_file")->default_text, "the system's");
  EXPECT_NE(DocOf("tls_verify")->help.find("https endpoint's"), std::string::npos);
}

TEST(HttpEndpointTableTest, AWrongValueIsPlaced) {
  absl::StatusOr<Sink> sink = SinkTable().Parse(NodeOf("{tls_verify: maybe}"));
  ASSERT_FALSE(sink.ok());
  EXPECT_NE(sink.status().message().find("s.yaml:1:"), std::string::npos) << sink.status();
  EXPECT_FALSE(SinkTable().Parse(NodeOf("{timeouts: 1s}")).ok());  // unknown keys refused
}

}  // namespace
}  // namespace pgflow
