// WebSocket frames as the pooler's http listener reads and writes them: a client's masked
// frames decoded whatever the pieces they arrive in, control frames answered, protocol errors
// named, and random input never crashing the decoder.

#include "pooler/websocket_frames.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

// A client's frame: masked with `mask`.
std::string ClientFrame(uint8_t opcode, const std::string& payload, bool final = true,
                        std::string mask = "\x37\xfa\x21\x3d") {
  std::string frame;
  AppendWsFrame(&frame, opcode, payload);
  if (!final) frame[0] = static_cast<char>(frame[0] & 0x7f);
  const size_t header = frame.size() - payload.size();
  frame[1] = static_cast<char>(frame[1] | 0x80);
  std::string masked = frame.substr(0, header) + mask;
  for (size_t i = 0; i < payload.size(); ++i) masked.push_back(payload[i] ^ mask[i % 4]);
  return masked;
}

TEST(WebSocketFramesTest, TheHandshakeKeyIsRfc6455s) {
  // RFC 6455, section 1.3's example.
  EXPECT_EQ(WsAcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocketFramesTest, ServerFramesCarryEachLengthForm) {
  for (size_t n : {size_t{0}, size_t{125}, size_t{126}, size_t{65535}, size_t{65536}}) {
    std::string frame;
    AppendWsFrame(&frame, kWsBinary, std::string(n, 'x'));
    EXPECT_EQ(static_cast<uint8_t>(frame[0]), 0x82);
    const size_t header = n < 126 ? 2 : n < 65536 ? 4 : 10;
    EXPECT_EQ(frame.size(), header + n) << n;
  }
}

TEST(WebSocketFramesTest, DataIsDecodedWhateverPiecesItArrivesIn) {
  const std::string first(70000, 'a');
  const std::string input = ClientFrame(kWsBinary, first, false) +
                            ClientFrame(kWsContinuation, "tail") + ClientFrame(kWsBinary, "") +
                            ClientFrame(kWsBinary, "next", true, std::string("\0\0\0\0", 4));
  for (size_t piece : {size_t{1}, size_t{3}, size_t{7}, size_t{4096}, input.size()}) {
    WsDecoder decoder;
    std::string in, data, reply;
    bool closed = false;
    for (size_t at = 0; at < input.size(); at += piece) {
      in += input.substr(at, piece);
      ASSERT_TRUE(decoder.Decode(&in, &data, &reply, &closed).ok());
    }
    EXPECT_EQ(data, first + "tail" + "next") << piece;
    EXPECT_TRUE(in.empty());
    EXPECT_TRUE(reply.empty());
    EXPECT_FALSE(closed);
  }
}

TEST(WebSocketFramesTest, PingsAreAnsweredAndACloseEndsTheStream) {
  WsDecoder decoder;
  std::string in = ClientFrame(kWsBinary, "ab") + ClientFrame(kWsPing, "hello") +
                   ClientFrame(kWsPong, "x") + ClientFrame(kWsClose, "\x03\xe8" "bye") +
                   ClientFrame(kWsBinary, "after");
  std::string data, reply;
  bool closed = false;
  ASSERT_TRUE(decoder.Decode(&in, &data, &reply, &closed).ok());
  EXPECT_EQ(data, "ab");
  std::string expected;
  AppendWsFrame(&expected, kWsPong, "hello");
  AppendWsFrame(&expected, kWsClose, "\x03\xe8");
  EXPECT_EQ(reply, expected);
  EXPECT_TRUE(closed);
}

TEST(WebSocketFramesTest, ProtocolErrorsAreNamed) {
  struct Case {
    std::string input;
    std::string error;
  };
  std::string unmasked;
  AppendWsFrame(&unmasked, kWsBinary, "x");
  std::string reserved = ClientFrame(kWsBinary, "x");
  reserved[0] = static_cast<char>(reserved[0] | 0x40);
  for (const Case& c : {Case{unmasked, "unmasked"}, Case{ClientFrame(kWsText, "x"), "text"},
                        Case{reserved, "reserved bits"},
                        Case{ClientFrame(kWsPing, std::string(126, 'p')), "125 bytes"},
                        Case{ClientFrame(kWsPing, "p", false), "fragmented"},
                        Case{ClientFrame(0x3, "x"), "unknown WebSocket opcode 3"},
                        Case{ClientFrame(kWsBinary, std::string(200, 'x')), "above the limit"}}) {
    WsDecoder decoder(100);
    std::string in = c.input, data, reply;
    bool closed = false;
    absl::Status s = decoder.Decode(&in, &data, &reply, &closed);
    EXPECT_FALSE(s.ok()) << c.error;
    EXPECT_NE(s.message().find(c.error), std::string::npos) << s.message();
  }
}

TEST(WebSocketFramesTest, FuzzedInputNeverCrashes) {
  std::mt19937 random(47);
  const std::string seed = ClientFrame(kWsBinary, std::string(300, 'q')) +
                           ClientFrame(kWsPing, "p") + ClientFrame(kWsBinary, "z");
  for (int i = 0; i < 20000; ++i) {
    std::string input = seed;
    for (int e = 0; e < 1 + static_cast<int>(random() % 6); ++e) {
      input[random() % input.size()] = static_cast<char>(random());
    }
    WsDecoder decoder(1 << 20);
    std::string in, data, reply;
    bool closed = false;
    for (size_t at = 0, piece = 0; at < input.size() && !closed; at += piece) {
      piece = 1 + random() % 64;
      in += input.substr(at, piece);
      if (!decoder.Decode(&in, &data, &reply, &closed).ok()) break;
    }
    EXPECT_LE(data.size(), input.size());
  }
}

}  // namespace
}  // namespace pgflow::pooler
