#include "pooler/auth.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "schemas/base64.h"

namespace pgflow::pooler {
namespace {

// RFC 7677, section 3: user "user", password "pencil".
constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kRfcSaltBase64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kRfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view kRfcClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kRfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// The secret behind the vector, and its ClientKey, computed apart from this code (Python's
// hashlib.pbkdf2_hmac and hmac).
constexpr std::string_view kRfcSecret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
constexpr std::string_view kRfcClientKeyBase64 = "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos=";

// What PostgreSQL 15 stored for CREATE ROLE pencil_user PASSWORD 'pencil', and for the
// password a,b=c"d (pg_authid.rolpassword).
constexpr std::string_view kPostgresPencilSecret =
    "SCRAM-SHA-256$4096:4U1MMgaFou6N3CYoXe+5lg==$OIZ0xLaqTqW87TSnJeiVMl3T8ZOz9zjL3LzWgNSz1Eo=:"
    "sSGElFUk89S6+JHo0rNCB5BMWGdEWXvsf8PgrBwhLSg=";
constexpr std::string_view kPostgresPunctuationSecret =
    "SCRAM-SHA-256$4096:rhWjfg9CQOXUnjT4eRrVHw==$rZtWJzkNmXLP1drbzhv04/YeZM7osRcT6jfgjdciZTQ=:"
    "EvgMkARBTV8lb2YMTKXUaI8BLuzZGfaDxOYycoCFlBI=";

std::string Unbase64(std::string_view text) {
  std::string out;
  EXPECT_TRUE(AppendBase64Decoded(text, &out)) << text;
  return out;
}

ScramSecret RfcSecret() {
  std::optional<ScramSecret> secret = ParseScramSecret(kRfcSecret);
  EXPECT_TRUE(secret.has_value());
  return secret.value_or(ScramSecret{});
}

// A client and a server run one whole exchange; the server's or the client's error, or OK.
absl::Status Exchange(ScramClient& client, ScramServer& server) {
  absl::StatusOr<std::string> server_first = server.ClientFirst(client.ClientFirst());
  if (!server_first.ok()) return server_first.status();
  absl::StatusOr<std::string> client_final = client.ServerFirst(*server_first);
  if (!client_final.ok()) return client_final.status();
  absl::StatusOr<std::string> server_final = server.ClientFinal(*client_final);
  if (!server_final.ok()) return server_final.status();
  return client.ServerFinal(*server_final);
}

// ---- The RFC 7677 vector ----

TEST(ScramSecretTest, MakeScramSecretGivesTheRfcVectorsKeys) {
  const ScramSecret made = MakeScramSecret("pencil", Unbase64(kRfcSaltBase64), 4096);
  EXPECT_EQ(FormatScramSecret(made), kRfcSecret);
  std::optional<ScramSecret> parsed = ParseScramSecret(kRfcSecret);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt, made.salt);
  EXPECT_EQ(parsed->stored_key, made.stored_key);
  EXPECT_EQ(parsed->server_key, made.server_key);
}

TEST(ScramServerTest, ReproducesRfc7677) {
  ScramServer server(RfcSecret(), kRfcServerNonce);
  absl::StatusOr<std::string> server_first = server.ClientFirst(kRfcClientFirst);
  ASSERT_TRUE(server_first.ok()) << server_first.status();
  EXPECT_EQ(*server_first, kRfcServerFirst);
  absl::StatusOr<std::string> server_final = server.ClientFinal(kRfcClientFinal);
  ASSERT_TRUE(server_final.ok()) << server_final.status();
  EXPECT_EQ(*server_final, kRfcServerFinal);
  EXPECT_EQ(server.client_key(), Unbase64(kRfcClientKeyBase64));
}

TEST(ScramClientTest, ReproducesRfc7677) {
  ScramClient client = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  EXPECT_EQ(client.ClientFirst(), kRfcClientFirst);
  EXPECT_EQ(client.ClientFirst(), kRfcClientFirst);  // the same on every call
  absl::StatusOr<std::string> client_final = client.ServerFirst(kRfcServerFirst);
  ASSERT_TRUE(client_final.ok()) << client_final.status();
  EXPECT_EQ(*client_final, kRfcClientFinal);
  EXPECT_TRUE(client.ServerFinal(kRfcServerFinal).ok());
}

TEST(ScramClientTest, ReproducesRfc7677FromKeys) {
  ScramClient client = ScramClient::FromKeys(Unbase64(kRfcClientKeyBase64), RfcSecret().server_key,
                                             kRfcClientNonce, "user");
  EXPECT_EQ(client.ClientFirst(), kRfcClientFirst);
  absl::StatusOr<std::string> client_final = client.ServerFirst(kRfcServerFirst);
  ASSERT_TRUE(client_final.ok()) << client_final.status();
  EXPECT_EQ(*client_final, kRfcClientFinal);
  EXPECT_TRUE(client.ServerFinal(kRfcServerFinal).ok());
}

TEST(ScramClientTest, SendsNoUserNameLikeLibpq) {
  // The same password, salt and nonces as the RFC with libpq's empty user name; the expected
  // messages computed with Python's hashlib and hmac.
  ScramClient client = ScramClient::FromPassword("pencil", kRfcClientNonce);
  EXPECT_EQ(client.ClientFirst(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
  absl::StatusOr<std::string> client_final = client.ServerFirst(kRfcServerFirst);
  ASSERT_TRUE(client_final.ok()) << client_final.status();
  EXPECT_EQ(*client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=");
  EXPECT_TRUE(client.ServerFinal("v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=").ok());
}

TEST(ScramClientTest, EscapesCommaAndEqualsInTheUserName) {
  ScramClient client = ScramClient::FromPassword("pencil", "abc", "a,b=c");
  EXPECT_EQ(client.ClientFirst(), "n,,n=a=2Cb=3Dc,r=abc");
}

TEST(ScramNonceTest, NonPrintableBytesAreSentAsBase64) {
  std::string bytes;
  for (int i = 0; i < 18; ++i) bytes.push_back(static_cast<char>(i));
  ScramClient client = ScramClient::FromPassword("pencil", bytes);
  EXPECT_EQ(client.ClientFirst(), "n,,n=,r=AAECAwQFBgcICQoLDA0ODxAR");
  // A comma is not printable in a nonce, nor a space.
  EXPECT_EQ(ScramClient::FromPassword("x", "a,b").ClientFirst(), "n,,n=,r=YSxi");
  EXPECT_EQ(ScramClient::FromPassword("x", "a b").ClientFirst(), "n,,n=,r=YSBi");

  ScramServer server(RfcSecret(), std::string("\xff\x00\x01", 3));
  absl::StatusOr<std::string> server_first = server.ClientFirst("n,,n=,r=abc");
  ASSERT_TRUE(server_first.ok()) << server_first.status();
  EXPECT_EQ(*server_first, "r=abc/wAB,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
}

// ---- Secrets PostgreSQL made ----

TEST(ScramSecretTest, MatchesSecretsPostgresStored) {
  for (auto [password, text] :
       {std::pair{std::string_view("pencil"), kPostgresPencilSecret},
        std::pair{std::string_view("a,b=c\"d"), kPostgresPunctuationSecret}}) {
    std::optional<ScramSecret> stored = ParseScramSecret(text);
    ASSERT_TRUE(stored.has_value()) << text;
    const ScramSecret made = MakeScramSecret(password, stored->salt, stored->iterations);
    EXPECT_EQ(FormatScramSecret(made), text);
    EXPECT_EQ(FormatScramSecret(*stored), text);
  }
}

TEST(ScramSecretTest, RejectsWhatIsNotASecret) {
  for (
      std::string_view text : {
          "",
          "pencil",
          "SCRAM-SHA-256$",
          "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          // iterations zero, negative, not a number, beyond an int
          "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuL"
          "mtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          // empty salt, salt not base64
          "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          "SCRAM-SHA-256$4096:W22Z*J0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          // a key of 31 bytes, a missing key, a missing separator
          "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g=="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
          "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
          "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
          "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
          "SCRAM-SHA-256$4096W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
          ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
      }) {
    EXPECT_FALSE(ParseScramSecret(text).has_value()) << text;
  }
}

// ---- Client and server together ----

TEST(ScramExchangeTest, RightPasswordLogsInAndRecoversTheClientKey) {
  const ScramSecret secret = MakeScramSecret("correct horse", "0123456789abcdef", 4096);
  ScramServer server(secret, "server-random");
  ScramClient client = ScramClient::FromPassword("correct horse", "client-random");
  ASSERT_TRUE(Exchange(client, server).ok());
  EXPECT_EQ(server.client_key().size(), 32u);
}

TEST(ScramExchangeTest, WrongPasswordIsPermissionDenied) {
  const ScramSecret secret = MakeScramSecret("correct horse", "0123456789abcdef", 4096);
  ScramServer server(secret, "server-random");
  ScramClient client = ScramClient::FromPassword("wrong horse", "client-random");
  absl::Status s = Exchange(client, server);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_TRUE(server.client_key().empty());
  // The exchange is over.
  EXPECT_EQ(server.ClientFinal("c=biws,r=x,p=AAAA").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ScramExchangeTest, DerivedSecretsLogInPlainPasswordsOnly) {
  absl::StatusOr<UserList> users = ParseUserList(
      "\"alice\" \"correct horse\"\n\"bob\" \"md5" + std::string(32, 'a') + "\"\n\"eve\" \"\"\n",
      "users.txt");
  ASSERT_TRUE(users.ok()) << users.status();
  DeriveScramSecrets(&*users);
  const ScramSecret& alice = users->at("alice").scram;
  EXPECT_EQ(alice.iterations, kDefaultScramIterations);
  EXPECT_EQ(alice.salt.size(), 16u);
  EXPECT_TRUE(users->at("bob").scram.salt.empty());  // an md5 hash has no SCRAM secret
  EXPECT_TRUE(users->at("eve").scram.salt.empty());  // an empty secret logs in no one
  ScramServer right(alice, "server-random");
  ScramClient client = ScramClient::FromPassword("correct horse", "client-random");
  EXPECT_TRUE(Exchange(client, right).ok());
  ScramServer wrong(alice, "server-random");
  ScramClient guess = ScramClient::FromPassword("correct house", "client-random");
  EXPECT_EQ(Exchange(guess, wrong).code(), absl::StatusCode::kPermissionDenied);
}

TEST(ScramExchangeTest, AMockSecretIsStablePerUserAndLogsInNoOne) {
  const std::string key(32, 'k');
  const ScramSecret mallory = MockScramSecret("mallory", key);
  // Asked twice, the same salt: a prober cannot tell a mock from a real user by it.
  EXPECT_EQ(MockScramSecret("mallory", key).salt, mallory.salt);
  EXPECT_NE(MockScramSecret("trudy", key).salt, mallory.salt);
  EXPECT_NE(MockScramSecret("mallory", std::string(32, 'j')).salt, mallory.salt);
  EXPECT_EQ(mallory.salt.size(), 16u);
  EXPECT_EQ(mallory.iterations, kDefaultScramIterations);
  for (const char* password : {"", "mallory", "password"}) {
    ScramServer server(mallory, "server-random");
    ScramClient client = ScramClient::FromPassword(password, "client-random");
    EXPECT_EQ(Exchange(client, server).code(), absl::StatusCode::kPermissionDenied) << password;
  }
}

TEST(ScramExchangeTest, LogsInToPostgresStoredSecret) {
  std::optional<ScramSecret> secret = ParseScramSecret(kPostgresPencilSecret);
  ASSERT_TRUE(secret.has_value());
  ScramServer good(*secret, "s1");
  ScramClient right = ScramClient::FromPassword("pencil", "c1");
  EXPECT_TRUE(Exchange(right, good).ok());
  ScramServer other(*secret, "s2");
  ScramClient wrong = ScramClient::FromPassword("Pencil", "c2");
  EXPECT_EQ(Exchange(wrong, other).code(), absl::StatusCode::kPermissionDenied);
}

TEST(ScramExchangeTest, FromKeysLogsInWithTheKeyAServerRecovered) {
  std::optional<ScramSecret> secret = ParseScramSecret(kPostgresPencilSecret);
  ASSERT_TRUE(secret.has_value());
  // A client logs in to the pooler with its password...
  ScramServer pooler(*secret, "pooler-nonce");
  ScramClient app = ScramClient::FromPassword("pencil", "app-nonce");
  ASSERT_TRUE(Exchange(app, pooler).ok());
  // ... and the pooler logs in to the server, which holds the same secret, with the key alone.
  ScramServer postgres(*secret, "postgres-nonce");
  ScramClient as_app = ScramClient::FromKeys(pooler.client_key(), secret->server_key, "pooler");
  EXPECT_TRUE(Exchange(as_app, postgres).ok());

  // The wrong ServerKey: the server's proof is refused.
  ScramServer postgres2(*secret, "postgres-nonce-2");
  ScramClient wrong_server_key =
      ScramClient::FromKeys(pooler.client_key(), std::string(32, 'x'), "pooler-2");
  EXPECT_EQ(Exchange(wrong_server_key, postgres2).code(), absl::StatusCode::kPermissionDenied);

  // A server holding another secret (another salt) refuses the key.
  ScramServer elsewhere(MakeScramSecret("pencil", "another salt", 4096), "n");
  ScramClient stale = ScramClient::FromKeys(pooler.client_key(), secret->server_key, "pooler-3");
  EXPECT_EQ(Exchange(stale, elsewhere).code(), absl::StatusCode::kPermissionDenied);
}

TEST(ScramExchangeTest, ClientRefusesAServerThatDoesNotKnowThePassword) {
  // An impostor with a secret for another password: it cannot check the proof (the client
  // receives a server-final it made up) and its signature is wrong.
  ScramServer impostor(MakeScramSecret("guess", "salt", 4096), "impostor");
  ScramClient client = ScramClient::FromPassword("pencil", "client");
  absl::StatusOr<std::string> server_first = impostor.ClientFirst(client.ClientFirst());
  ASSERT_TRUE(server_first.ok());
  ASSERT_TRUE(client.ServerFirst(*server_first).ok());
  EXPECT_EQ(client.ServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dOoAesNE/PDVqe4=").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ScramExchangeTest, ServerAcceptsTheYFlagOfAClientThatCouldBind) {
  ScramServer server(RfcSecret(), kRfcServerNonce);
  ASSERT_TRUE(server.ClientFirst("y,,n=,r=abc").ok());
  // c= must repeat "y,," (eSws), not "n,," (biws).
  absl::Status s = server
                       .ClientFinal(std::string("c=biws,r=abc") + std::string(kRfcServerNonce) +
                                    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("channel binding"), std::string_view::npos) << s;
}

// ---- Malformed SCRAM messages ----

absl::Status ServerFirstError(std::string_view client_first) {
  ScramServer server(RfcSecret(), kRfcServerNonce);
  return server.ClientFirst(client_first).status();
}

TEST(ScramServerTest, RefusesMalformedClientFirst) {
  for (std::string_view message : {
           "", "n,,",
           "n,,n=user",               // no nonce
           "n,,r=abc",                // no user name
           "n,,n=user,r=",            // empty nonce
           "n,,n=user,x=abc",         // not a nonce
           "x,,n=user,r=abc",         // bad flag
           "n,a=admin,n=user,r=abc",  // authorization identity
           "n,junk,n=user,r=abc",     // junk where the authzid goes
           "n,,m=ext,n=user,r=abc",   // mandatory extension
           "n,,n=user,r=abc,1",       // an extension that is not one
           "n,,n=user,r=a\x01",       // a control character in the nonce
           "n,,n=user,r=a\x80",       // not ASCII
       }) {
    absl::Status s = ServerFirstError(message);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << message;
  }
  absl::Status binding = ServerFirstError("p=tls-server-end-point,,n=user,r=abc");
  EXPECT_EQ(binding.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(binding.message().find("channel binding"), std::string_view::npos) << binding;
  // Longer than any SCRAM message.
  EXPECT_EQ(ServerFirstError(std::string("n,,n=") + std::string(5000, 'u') + ",r=abc").code(),
            absl::StatusCode::kInvalidArgument);
  // Extensions after the nonce are allowed and ignored.
  EXPECT_TRUE(ServerFirstError("n,,n=user,r=abc,x=ext").ok());
}

absl::Status ClientFinalError(std::string_view client_final) {
  ScramServer server(RfcSecret(), kRfcServerNonce);
  EXPECT_TRUE(server.ClientFirst(kRfcClientFirst).ok());
  return server.ClientFinal(client_final).status();
}

TEST(ScramServerTest, RefusesMalformedClientFinal) {
  constexpr std::string_view kNonce = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  constexpr std::string_view kProof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const std::string nonce(kNonce), proof(kProof);
  for (const std::string& message : {
           std::string(),
           "c=biws," + nonce,                         // no proof
           "c=biws," + proof,                         // no nonce
           nonce + "," + proof,                       // no channel binding
           "c=biws,r=rOprNGfwEbeRWgbNEkqO," + proof,  // the client's nonce only
           "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1," + proof,  // wrong
           "c=eSws," + nonce + "," + proof,                  // y,, while n,, was sent
           "c=cD10bHMtdW5pcXVlLCw=," + nonce + "," + proof,  // p=tls-unique,,
           "c=bi@s," + nonce + "," + proof,                  // binding not base64
           "c=biws," + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  // unpadded
           "c=biws," + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7An",     // 30 bytes
           "c=biws," + nonce + ",p=!!!!",                 // proof not base64
           "c=biws," + nonce + "," + proof + ",x=after",  // proof not last
           "c=biws," + nonce + ",junk," + proof,          // extension not one
       }) {
    absl::Status s = ClientFinalError(message);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << message << ": " << s;
  }
  // An extension before the proof does not fit the RFC's proof (it is part of the signed
  // message), but parses.
  EXPECT_EQ(ClientFinalError("c=biws," + nonce + ",x=ext," + proof).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ClientFinalError("c=biws," + nonce + ",p=" + std::string(43, 'A') + "=").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(ScramServerTest, CallsOutOfTurnAreFailedPrecondition) {
  ScramServer server(RfcSecret(), kRfcServerNonce);
  EXPECT_EQ(server.ClientFinal(kRfcClientFinal).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ScramServer twice(RfcSecret(), kRfcServerNonce);
  ASSERT_TRUE(twice.ClientFirst(kRfcClientFirst).ok());
  EXPECT_EQ(twice.ClientFirst(kRfcClientFirst).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ScramServer after_error(RfcSecret(), kRfcServerNonce);
  ASSERT_FALSE(after_error.ClientFirst("garbage").ok());
  EXPECT_EQ(after_error.ClientFinal(kRfcClientFinal).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

absl::Status ClientFinalOf(std::string_view server_first) {
  ScramClient client = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  client.ClientFirst();
  return client.ServerFirst(server_first).status();
}

TEST(ScramClientTest, RefusesMalformedServerFirst) {
  for (std::string_view message : {
           "",
           "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",  // no salt
           "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==",
           "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                             // no nonce
           "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",      // nothing added
           "r=xOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // not ours
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22Z*J0SNY7soEsUEjb6gQ==,i=4096",  // salt not base64
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=,i=4096",                          // empty salt
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096",
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",  // absurd
           "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999",
           "r=rOprNGfwEbeRWgbNEkqO%hvY,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",  // out of order
           "m=ext,r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
           "e=other-error",
       }) {
    absl::Status s = ClientFinalOf(message);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << message << ": " << s;
  }
  absl::Status refused = ClientFinalOf("e=unknown-user");
  EXPECT_NE(refused.message().find("unknown-user"), std::string_view::npos) << refused;
}

absl::Status ServerFinalOf(std::string_view server_final) {
  ScramClient client = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  client.ClientFirst();
  EXPECT_TRUE(client.ServerFirst(kRfcServerFirst).ok());
  return client.ServerFinal(server_final);
}

TEST(ScramClientTest, RefusesMalformedOrWrongServerFinal) {
  const struct {
    std::string_view message;
    absl::StatusCode code;
  } cases[] = {
      {"", absl::StatusCode::kInvalidArgument},
      {"x=abc", absl::StatusCode::kInvalidArgument},
      {"v=!!!!", absl::StatusCode::kInvalidArgument},  // not base64
      {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", absl::StatusCode::kInvalidArgument},
      {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,1", absl::StatusCode::kInvalidArgument},
      {"v=", absl::StatusCode::kPermissionDenied},
      // The RFC's signature with its last 16 characters changed.
      {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dOoAesNE/PDVqe4=", absl::StatusCode::kPermissionDenied},
  };
  for (const auto& c : cases) {
    absl::Status s = ServerFinalOf(c.message);
    EXPECT_EQ(s.code(), c.code) << c.message << ": " << s;
  }
  absl::Status error = ServerFinalOf("e=invalid-proof");
  EXPECT_EQ(error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(error.message().find("invalid-proof"), std::string_view::npos) << error;
  // The right signature with an extension after it.
  EXPECT_TRUE(ServerFinalOf(std::string(kRfcServerFinal) + ",x=ext").ok());
}

TEST(ScramClientTest, CallsOutOfTurnAreFailedPrecondition) {
  ScramClient before_first = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  EXPECT_EQ(before_first.ServerFirst(kRfcServerFirst).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ScramClient early = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  early.ClientFirst();
  EXPECT_EQ(early.ServerFinal(kRfcServerFinal).code(), absl::StatusCode::kFailedPrecondition);
  ScramClient twice = ScramClient::FromPassword("pencil", kRfcClientNonce, "user");
  twice.ClientFirst();
  ASSERT_TRUE(twice.ServerFirst(kRfcServerFirst).ok());
  EXPECT_EQ(twice.ServerFirst(kRfcServerFirst).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(twice.ServerFinal(kRfcServerFinal).ok());
  EXPECT_EQ(twice.ServerFinal(kRfcServerFinal).code(), absl::StatusCode::kFailedPrecondition);
}

// Every prefix of the RFC's messages, and each byte of them replaced by a delimiter, a NUL or
// a high byte: each call answers (OK or an error) and nothing crashes (run under ASan to see).
TEST(ScramRobustnessTest, TruncatedAndCorruptedMessagesGetAnAnswer) {
  const std::string client_key = Unbase64(kRfcClientKeyBase64);
  const std::string server_key = RfcSecret().server_key;
  auto variants = [](std::string_view message) {
    std::vector<std::string> out;
    for (size_t n = 0; n <= message.size(); ++n) out.emplace_back(message.substr(0, n));
    for (size_t i = 0; i < message.size(); ++i) {
      for (char c : {',', '=', '\0', '\xff', 'x'}) {
        std::string m(message);
        m[i] = c;
        out.push_back(std::move(m));
      }
    }
    return out;
  };
  int accepted = 0;
  for (const std::string& m : variants(kRfcClientFirst)) {
    ScramServer server(RfcSecret(), kRfcServerNonce);
    accepted += server.ClientFirst(m).ok();
  }
  for (const std::string& m : variants(kRfcClientFinal)) {
    ScramServer server(RfcSecret(), kRfcServerNonce);
    ASSERT_TRUE(server.ClientFirst(kRfcClientFirst).ok());
    accepted += server.ClientFinal(m).ok();
  }
  for (const std::string& m : variants(kRfcServerFirst)) {
    ScramClient client = ScramClient::FromKeys(client_key, server_key, kRfcClientNonce, "user");
    client.ClientFirst();
    accepted += client.ServerFirst(m).ok();
  }
  for (const std::string& m : variants(kRfcServerFinal)) {
    ScramClient client = ScramClient::FromKeys(client_key, server_key, kRfcClientNonce, "user");
    client.ClientFirst();
    ASSERT_TRUE(client.ServerFirst(kRfcServerFirst).ok());
    accepted += client.ServerFinal(m).ok();
  }
  EXPECT_GT(accepted, 0);  // the whole messages, at least
}

// ---- md5 ----

// Expected values from Python's hashlib; md50098e7fab7b4d8d091067152a80b3f12 is what
// PostgreSQL 15 stored for CREATE ROLE md5user PASSWORD 'pencil' (password_encryption md5).
TEST(Md5Test, HashAndResponse) {
  EXPECT_EQ(Md5PasswordHash("user", "pencil"), "md520c46e3762c864548e296b33c3406aa9");
  EXPECT_EQ(Md5PasswordHash("md5user", "pencil"), "md50098e7fab7b4d8d091067152a80b3f12");
  const std::string hash = Md5PasswordHash("user", "pencil");
  EXPECT_EQ(Md5Response(hash, std::string("\x01\x02\x03\x04", 4)),
            "md54376eb6913b38f9aaff38dc7cf19ca76");
  EXPECT_EQ(Md5Response(hash, std::string("\x00\xff\x80\x7f", 4)),
            "md5eae0e450d83aa572d21c2055c47ea9be");
}

// ---- The users file ----

TEST(UserListTest, ReadsQuotesCommentsAndBlankLines) {
  const std::string text = std::string(
                               "; pgbouncer's comment\n"
                               "# another comment\n"
                               "\n"
                               "   \t\n"
                               "\"alice\" \"secret one\"\n"
                               "  \"bob\"\t\"md520c46e3762c864548e296b33c3406aa9\"  \r\n"
                               "\"say \"\"hi\"\"\" \"pass\"\"word\"\n"
                               "\"carol\" \"") +
                           std::string(kPostgresPencilSecret) +
                           "\"\n"
                           "\"dave\" \"md5 not a hash\"\n"
                           "\"erin\" \"MD520C46E3762C864548E296B33C3406AA9\"";  // no newline
  absl::StatusOr<UserList> users = ParseUserList(text, "users.txt");
  ASSERT_TRUE(users.ok()) << users.status();
  EXPECT_EQ(users->size(), 6u);
  EXPECT_EQ(users->at("alice").kind, UserSecret::Kind::kPlain);
  EXPECT_EQ(users->at("alice").text, "secret one");
  EXPECT_EQ(users->at("bob").kind, UserSecret::Kind::kMd5);
  EXPECT_EQ(users->at("bob").text, "md520c46e3762c864548e296b33c3406aa9");
  EXPECT_EQ(users->at("say \"hi\"").text, "pass\"word");
  EXPECT_EQ(users->at("carol").kind, UserSecret::Kind::kScram);
  EXPECT_EQ(FormatScramSecret(users->at("carol").scram), kPostgresPencilSecret);
  EXPECT_EQ(users->at("dave").kind, UserSecret::Kind::kPlain);
  // PostgreSQL's md5 hashes are lower case: anything else is a password.
  EXPECT_EQ(users->at("erin").kind, UserSecret::Kind::kPlain);

  absl::StatusOr<UserList> empty = ParseUserList("", "users.txt");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  // pgbouncer's way of listing a user for trust: an empty secret (no password matches it).
  absl::StatusOr<UserList> trusted = ParseUserList("\"postgres\" \"\"\n", "users.txt");
  ASSERT_TRUE(trusted.ok()) << trusted.status();
  EXPECT_EQ(trusted->at("postgres").kind, UserSecret::Kind::kPlain);
  EXPECT_TRUE(trusted->at("postgres").text.empty());
}

std::string UserListError(std::string_view text) {
  absl::StatusOr<UserList> users = ParseUserList(text, "users.txt");
  EXPECT_FALSE(users.ok()) << text;
  if (users.ok()) return "";
  EXPECT_EQ(users.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(users.status().message());
}

TEST(UserListTest, ErrorsNameTheFileLineAndProblem) {
  const struct {
    std::string_view text;
    std::string_view expected;
  } cases[] = {
      {"\"alice\" \"pw\"\n\"bob\" \"pw\n",
       "users.txt:2:7: the secret of user \"bob\" has no "
       "closing quote"},
      {"\"alice \"pw\"", "users.txt:1:9: expected a space and the quoted secret"},
      {"\n\"alice\n", "users.txt:2:1: the user name has no closing quote"},
      {"\"alice\"\n", "users.txt:1:8: user \"alice\" has no secret"},
      {"\"alice\"   \n", "users.txt:1:11: user \"alice\" has no secret"},
      {"\"alice\" \"pw\" junk\n", "users.txt:1:14: unexpected text after the secret of user"},
      {"\"alice\" \"pw\" \"more\"\n", "users.txt:1:14: unexpected text"},
      {"\"alice\"\"pw\"\n", "users.txt:1:12: user \"alice\"pw\" has no secret"},  // "" is a quote
      {"\"alice\"x\"pw\"\n", "users.txt:1:8: expected a space and the quoted secret"},
      {"alice pw\n", "users.txt:1:1: expected a quoted user name"},
      {"\"\" \"pw\"\n", "users.txt:1:1: empty user name"},
      {"\"alice\" \"a\"\n\"alice\" \"b\"\n",
       "users.txt:2:1: user \"alice\" is already named at line 1"},
      {"\"alice\" \"SCRAM-SHA-256$4096:abc\"\n",
       "users.txt:1:9: the secret of user \"alice\" is not a valid SCRAM secret"},
  };
  for (const auto& c : cases) {
    const std::string message = UserListError(c.text);
    EXPECT_TRUE(message.starts_with(c.expected)) << c.text << "\n  got: " << message;
  }
}

TEST(UserListTest, ReportsEveryBadLineAndNeverQuotesASecret) {
  const std::string message = UserListError(
      "\"alice\" \"hunter2\" tail-of-hunter2\n"
      "\"ok\" \"fine\"\n"
      "\"bob\" \"SCRAM-SHA-256$hunter3\"\n"
      "\"carol\" \"hunter4\n");
  EXPECT_NE(message.find("users.txt:1:"), std::string::npos) << message;
  EXPECT_NE(message.find("users.txt:3:"), std::string::npos) << message;
  EXPECT_NE(message.find("users.txt:4:"), std::string::npos) << message;
  EXPECT_EQ(message.find("users.txt:2:"), std::string::npos) << message;
  EXPECT_EQ(message.find("hunter"), std::string::npos) << message;
}

}  // namespace
}  // namespace pgflow::pooler
