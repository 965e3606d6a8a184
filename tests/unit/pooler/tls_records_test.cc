// pgflow's TLS 1.3 record layer (pooler/tls_records.h) against OpenSSL's own client, over a
// socketpair: the handshake by OpenSSL on both sides, then the server's records taken over.

#include "pooler/tls_records.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>

namespace pgflow::pooler {
namespace {

struct CtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

// A server context as the pooler's (no tickets, secrets caught) with a self-signed P-256
// certificate made here.
CtxPtr ServerContext() {
  CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("pgflow-test"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  SSL_CTX_use_certificate(ctx.get(), cert);
  SSL_CTX_use_PrivateKey(ctx.get(), key);
  X509_free(cert);
  EVP_PKEY_free(key);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  Tls13Records::CatchSecrets(ctx.get());
  return ctx;
}

// Runs both sides' handshake, in turns, over their non-blocking sockets: whether both ended.
bool Handshake(SSL* client, SSL* server) {
  bool client_done = false;
  bool server_done = false;
  for (int turn = 0; turn < 100 && !(client_done && server_done); ++turn) {
    if (!client_done) client_done = SSL_do_handshake(client) == 1;
    if (!server_done) server_done = SSL_do_handshake(server) == 1;
  }
  return client_done && server_done;
}

class TlsRecordsTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_fd_ = fds[0];
    server_fd_ = fds[1];
    for (int fd : fds) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    server_ctx_ = ServerContext();
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(client_ctx_.get(), TLS1_3_VERSION);
    ASSERT_EQ(SSL_CTX_set_ciphersuites(client_ctx_.get(), GetParam()), 1);
    client_.reset(SSL_new(client_ctx_.get()));
    server_.reset(SSL_new(server_ctx_.get()));
    SSL_set_fd(client_.get(), client_fd_);
    SSL_set_fd(server_.get(), server_fd_);
    SSL_set_connect_state(client_.get());
    SSL_set_accept_state(server_.get());
    ASSERT_TRUE(Handshake(client_.get(), server_.get()));
    records_ = Tls13Records::Take(server_.get());
    ASSERT_NE(records_, nullptr);
    server_.reset();  // (the connection goes on without OpenSSL's session)
  }
  void TearDown() override {
    ::close(client_fd_);
    ::close(server_fd_);
  }

  // Reads what the records give till `want` bytes came (or the stream ended or failed).
  std::string ReadServer(size_t want, size_t cap = 16384) {
    std::string plain;
    std::string scratch(cap, '\0');
    for (int turn = 0; turn < 10000 && plain.size() < want; ++turn) {
      bool drained = false;
      bool wants_write = false;
      if (records_->Read(server_fd_, scratch.data(), cap, &plain, &drained, &wants_write) < 0) {
        break;
      }
      EXPECT_FALSE(wants_write);
    }
    return plain;
  }
  // Writes `text` through the records while OpenSSL's client reads it: what the client got.
  std::string ServerToClient(const std::string& text) {
    std::string got;
    size_t taken = 0;
    char buffer[4096];
    for (int turn = 0; turn < 100000 && got.size() < text.size(); ++turn) {
      if (taken < text.size() || records_->unsent()) {
        const ssize_t n = records_->Write(server_fd_, std::string_view(text).substr(taken));
        EXPECT_GE(n, 0);
        if (n > 0) taken += static_cast<size_t>(n);
        if (taken == text.size() && records_->unsent()) {
          EXPECT_TRUE(records_->Flush(server_fd_));
        }
      }
      const int n = SSL_read(client_.get(), buffer, sizeof buffer);
      if (n > 0) got.append(buffer, static_cast<size_t>(n));
      if (n <= 0) {
        const int error = SSL_get_error(client_.get(), n);
        EXPECT_TRUE(error == SSL_ERROR_WANT_READ) << "client error " << error;
        ERR_clear_error();
        if (error != SSL_ERROR_WANT_READ) break;
      }
    }
    return got;
  }
  // What OpenSSL's client writes, all of it.
  void ClientWrites(const std::string& text) {
    ASSERT_EQ(SSL_write(client_.get(), text.data(), static_cast<int>(text.size())),
              static_cast<int>(text.size()));
  }

  int client_fd_ = -1;
  int server_fd_ = -1;
  CtxPtr server_ctx_;
  CtxPtr client_ctx_;
  SslPtr client_;
  SslPtr server_;
  std::unique_ptr<Tls13Records> records_;
};

// The records waiting to be read on `fd` (headers counted, nothing taken).
int RecordsWaiting(int fd) {
  char raw[4096];
  const ssize_t n = ::recv(fd, raw, sizeof raw, MSG_PEEK);
  int records = 0;
  for (ssize_t at = 0; at + 5 <= n;
       at += 5 + (static_cast<uint8_t>(raw[at + 3]) << 8 | static_cast<uint8_t>(raw[at + 4]))) {
    ++records;
  }
  return records;
}

std::string Text(size_t size) {
  std::string text(size, '\0');
  for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + i * 7 % 26);
  return text;
}

TEST_P(TlsRecordsTest, CarriesBytesBothWaysAsOpenSslSealsAndOpensThem) {
  ClientWrites("SELECT 1");
  EXPECT_EQ(ReadServer(8), "SELECT 1");
  EXPECT_EQ(ServerToClient("one row"), "one row");
  // Several records each way, larger than a Write takes at once.
  const std::string big = Text(3 * Tls13Records::kMaxWrite + 123);
  EXPECT_EQ(ServerToClient(big), big);
  const std::string upload = Text(50000);
  ClientWrites(upload);
  EXPECT_EQ(ReadServer(upload.size()), upload);
  EXPECT_FALSE(records_->unsent());
}

TEST_P(TlsRecordsTest, JoinsRecordsSplitAcrossReads) {
  const std::string upload = Text(40000);
  ClientWrites(upload);
  EXPECT_EQ(ReadServer(upload.size(), /*cap=*/97), upload);
}

TEST_P(TlsRecordsTest, FollowsAndAnswersTheClientsKeyUpdates) {
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(SSL_key_update(client_.get(), round % 2 == 0 ? SSL_KEY_UPDATE_REQUESTED
                                                            : SSL_KEY_UPDATE_NOT_REQUESTED),
              1);
    ClientWrites("after update " + std::to_string(round));
    EXPECT_EQ(ReadServer(14), "after update " + std::to_string(round));
    // Asked for one, the pooler sends its own KeyUpdate before its next record.
    const std::string answer = "answer " + std::to_string(round);
    ASSERT_EQ(records_->Write(server_fd_, answer), static_cast<ssize_t>(answer.size()));
    EXPECT_EQ(RecordsWaiting(client_fd_), round % 2 == 0 ? 2 : 1);
    // (The client opens the answer only under the keys that KeyUpdate moved it to.)
    char buffer[64];
    const int got = SSL_read(client_.get(), buffer, sizeof buffer);
    EXPECT_EQ(std::string(buffer, static_cast<size_t>(std::max(got, 0))), answer);
  }
}

TEST_P(TlsRecordsTest, GivesWhatCameBeforeCloseNotifyThenTheEnd) {
  ClientWrites("X");
  ASSERT_GE(SSL_shutdown(client_.get()), 0);
  EXPECT_EQ(ReadServer(1), "X");
  std::string plain;
  char scratch[512];
  bool drained = false;
  bool wants_write = false;
  errno = EINVAL;
  EXPECT_EQ(records_->Read(server_fd_, scratch, sizeof scratch, &plain, &drained, &wants_write),
            -1);
  EXPECT_EQ(errno, 0);
  EXPECT_TRUE(plain.empty());
}

TEST_P(TlsRecordsTest, ItsCloseNotifyEndsTheClientsStream) {
  records_->Close(server_fd_);
  char buffer[16];
  const int n = SSL_read(client_.get(), buffer, sizeof buffer);
  EXPECT_EQ(n, 0);
  EXPECT_EQ(SSL_get_error(client_.get(), n), SSL_ERROR_ZERO_RETURN);
}

TEST_P(TlsRecordsTest, RefusesARecordAlteredOnTheWayAndSaysWhy) {
  ClientWrites("DROP TABLE nothing");
  char raw[256];
  const ssize_t n = ::recv(server_fd_, raw, sizeof raw, 0);
  ASSERT_GT(n, 10);
  raw[n - 3] ^= 1;  // (a bit of the tag)
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_EQ(::send(fds[0], raw, static_cast<size_t>(n), 0), n);
  std::string plain;
  char scratch[512];
  bool drained = false;
  bool wants_write = false;
  EXPECT_EQ(records_->Read(fds[1], scratch, sizeof scratch, &plain, &drained, &wants_write), -1);
  EXPECT_EQ(errno, EBADMSG);
  EXPECT_STREQ(records_->failure(), "a record failed its authentication (bad_record_mac)");
  EXPECT_TRUE(plain.empty());
  ::close(fds[0]);
  ::close(fds[1]);
  // Not closed cleanly: the client is told bad_record_mac, a fatal alert, not close_notify.
  EXPECT_TRUE(records_->owes_alert());
  records_->Close(server_fd_);
  char buffer[16];
  const int got = SSL_read(client_.get(), buffer, sizeof buffer);
  EXPECT_LE(got, 0);
  EXPECT_EQ(SSL_get_error(client_.get(), got), SSL_ERROR_SSL);
  EXPECT_EQ(ERR_GET_REASON(ERR_peek_last_error()), SSL_AD_REASON_OFFSET + SSL_AD_BAD_RECORD_MAC);
  ERR_clear_error();
}

TEST_P(TlsRecordsTest, UpdatesItsOwnKeyAtItsLimitOfRecords) {
  records_->LimitRecordsPerKeyForTesting(2);  // (four records of data a key, then a KeyUpdate)
  std::string sent;
  for (int i = 0; i < 10; ++i) {
    const std::string row = "row " + std::to_string(i) + ";";
    ASSERT_EQ(records_->Write(server_fd_, row), static_cast<ssize_t>(row.size()));
    sent += row;
  }
  // On the wire: the ten records, and a KeyUpdate before the 5th and the 9th.
  EXPECT_EQ(RecordsWaiting(client_fd_), 12);
  // OpenSSL's client opens each under the key it was sealed with.
  std::string got;
  char buffer[256];
  for (int turn = 0; turn < 100 && got.size() < sent.size(); ++turn) {
    const int r = SSL_read(client_.get(), buffer, sizeof buffer);
    ASSERT_GT(r, 0) << "client error " << SSL_get_error(client_.get(), r);
    got.append(buffer, static_cast<size_t>(r));
  }
  EXPECT_EQ(got, sent);
  // The client's own key is not moved by the pooler's updates.
  ClientWrites("and back");
  EXPECT_EQ(ReadServer(8), "and back");
}

TEST_P(TlsRecordsTest, RefusesAnEndlessRunOfRecordsWithoutData) {
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(SSL_key_update(client_.get(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    ASSERT_EQ(SSL_do_handshake(client_.get()), 1);  // (sends it)
  }
  std::string plain;
  char scratch[4096];
  bool drained = false;
  bool wants_write = false;
  EXPECT_EQ(records_->Read(server_fd_, scratch, sizeof scratch, &plain, &drained, &wants_write),
            -1);
  EXPECT_STREQ(records_->failure(), "too many records in a row without data");
}

TEST_P(TlsRecordsTest, RefusesBytesThatAreNotARecordOfTls13) {
  // A record in the clear (a TLS 1.2 alert), as a confused or hostile client may send.
  const char alert[] = {21, 3, 3, 0, 2, 2, 40};
  ASSERT_EQ(::send(client_fd_, alert, sizeof alert, 0), static_cast<ssize_t>(sizeof alert));
  std::string plain;
  char scratch[512];
  bool drained = false;
  bool wants_write = false;
  EXPECT_EQ(records_->Read(server_fd_, scratch, sizeof scratch, &plain, &drained, &wants_write),
            -1);
  EXPECT_EQ(errno, EPROTO);
  EXPECT_STREQ(records_->failure(), "an alert in the clear after the handshake");
}

INSTANTIATE_TEST_SUITE_P(Suites, TlsRecordsTest,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"),
                         [](const auto& info) { return std::to_string(info.index); });

TEST(TlsRecordsTakeTest, LeavesTls12ToOpenSsl) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  for (int fd : fds) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  CtxPtr server_ctx = ServerContext();
  CtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_max_proto_version(client_ctx.get(), TLS1_2_VERSION);
  SslPtr client(SSL_new(client_ctx.get()));
  SslPtr server(SSL_new(server_ctx.get()));
  SSL_set_fd(client.get(), fds[0]);
  SSL_set_fd(server.get(), fds[1]);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  ASSERT_TRUE(Handshake(client.get(), server.get()));
  EXPECT_EQ(Tls13Records::Take(server.get()), nullptr);
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace pgflow::pooler
