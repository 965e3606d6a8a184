#include "pooler/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <optional>
#include <string_view>
#include <utility>

#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio_support::Executor;
using asio_support::kUseTask;
using asio_support::Socket;
using asio_support::Task;
using asio_support::Timer;
using tcp = asio::ip::tcp;

namespace {

// OpenSSL's reason for the last failure, or `fallback`.
std::string OpenSslError(std::string_view fallback) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return std::string(fallback);
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

// The bytes one thread's pumps read and decrypt or encrypt through, between two waits: a
// pump holds none of its own while its connection is idle (OpenSSL's own buffers are
// released then too: SSL_MODE_RELEASE_BUFFERS).
char* Scratch() {
  thread_local std::array<char, kTlsPumpBuffer> scratch;
  return scratch.data();
}

// What one thread's pumps decrypt into before the session's end takes it.
std::string& Decrypted() {
  thread_local std::string decrypted;
  return decrypted;
}

// Appends to *out what socket `fd` holds, without waiting: whether it emptied the socket
// (false: its end came, or an error).
bool DrainInto(int fd, std::string* out) {
  char* data = Scratch();
  ssize_t n;
  while ((n = ::recv(fd, data, kTlsPumpBuffer, MSG_DONTWAIT)) > 0) {
    out->append(data, static_cast<size_t>(n));
  }
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// OpenSSL's session as a TlsChannel: a client that negotiated TLS 1.2, and every connection
// toward a server.
class OpenSslChannel final : public TlsChannel {
 public:
  explicit OpenSslChannel(SSL* ssl) : ssl_(ssl) {}
  ~OpenSslChannel() override { SSL_free(ssl_); }
  OpenSslChannel(const OpenSslChannel&) = delete;
  OpenSslChannel& operator=(const OpenSslChannel&) = delete;

  // `*drained` after a read that gave bytes: OpenSSL holds none past them (the socket may:
  // it reports them again, or an edge-triggered caller reads again till 0).
  ssize_t Read(int fd, char* scratch, size_t cap, std::string* plain, bool* drained,
               bool* wants_write) override {
    *drained = false;
    *wants_write = false;
    // SSL_read is called only when there is something to read: on an empty socket it would
    // take a record buffer, which an idle connection would then hold.
    if (SSL_has_pending(ssl_) == 0) {
      char byte;
      const ssize_t peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        *drained = true;
        return 0;
      }
    }
    ERR_clear_error();  // (SSL_get_error reads the thread's queue: it must hold only this call's)
    const int n = SSL_read(ssl_, scratch, static_cast<int>(std::min<size_t>(cap, INT_MAX)));
    if (n > 0) {
      plain->append(scratch, static_cast<size_t>(n));
      *drained = SSL_has_pending(ssl_) == 0;
      return n;
    }
    const int error = SSL_get_error(ssl_, n);
    ERR_clear_error();
    if (error == SSL_ERROR_WANT_READ) {
      *drained = true;
      return 0;
    }
    if (error == SSL_ERROR_WANT_WRITE) {
      // OpenSSL must send first (its answer to a KeyUpdate) and the socket is full.
      *wants_write = true;
      return 0;
    }
    if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && errno == EAGAIN)) {
      failure_ = "end of stream";
      errno = 0;  // (close_notify: the end of the stream)
    } else if (error != SSL_ERROR_SYSCALL || errno == 0) {
      failure_ = "a TLS error, or the peer gone without close_notify";
      errno = EPROTO;
    } else {
      failure_ = "the socket failed";
    }
    return -1;
  }

  // (Partial writes: a record at a time. A record OpenSSL could not send whole is given
  // again from the same place, at whatever address it then has.)
  ssize_t Write(int, std::string_view plain) override {
    ERR_clear_error();
    const int n = SSL_write(ssl_, plain.data(),
                            static_cast<int>(std::min<size_t>(plain.size(), 1 << 30)));
    if (n > 0) return n;
    // (WANT_READ would need a renegotiation, which neither side's context allows.)
    const int error = SSL_get_error(ssl_, n);
    ERR_clear_error();
    if (error == SSL_ERROR_WANT_WRITE) return 0;
    if (errno == 0 || errno == EAGAIN) errno = EPROTO;
    return -1;
  }
  bool Flush(int) override { return true; }  // (OpenSSL is given again what it did not send)
  bool unsent() const override { return false; }

  void Close(int) override {
    SSL_shutdown(ssl_);  // close_notify, if the socket takes it now
    ERR_clear_error();
  }
  const char* failure() const override { return failure_; }

 private:
  SSL* ssl_;
  const char* failure_ = "";
};

}  // namespace

// One TLS connection while it is pumped: the TCP socket, its channel (which reads and
// writes that socket itself, non-blocking), and the pump's end of the socketpair whose other
// end the session holds; and the bytes under way in either direction that a socket did not
// take yet (kept here, not in a coroutine, so that TakeOverTls finds them). The first
// direction to end closes everything, so the other and the session see the end; after that,
// the channel is not used (its descriptor is closed and may be another's).
struct TlsLink {
  TlsLink(Socket w, std::unique_ptr<TlsChannel> c, Socket p, bool client)
      : wire(std::move(w)), channel(std::move(c)), plain(std::move(p)), of_client(client) {
    if (of_client) channel->CountAsClient();
  }
  Socket wire;  // the TCP connection to the peer
  std::unique_ptr<TlsChannel> channel;  // (null once taken over)
  Socket plain;
  bool of_client;  // toward a client (counted in TlsClientsOpen), not a server
  bool closed = false;
  std::string to_relay;    // decrypted, not yet into the socketpair
  std::string from_relay;  // from the socketpair, not yet taken by the channel
  void Close(bool notify_peer) {
    if (closed) return;
    closed = true;
    if (notify_peer) channel->Close(wire.native_handle());
    boost::system::error_code ignored;
    plain.close(ignored);
    wire.close(ignored);
  }
};

namespace {

// Waits until OpenSSL's last call can go on (SSL_ERROR_WANT_READ or _WRITE on `wire`); false
// when it cannot (another error, the socket closed or cancelled). asio registers sockets
// edge-triggered: a wait is begun only once a call found the socket drained (or full).
Task<bool> AwaitTls(Socket* wire, int error) {
  if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) co_return false;
  boost::system::error_code ec;
  co_await wire->async_wait(error == SSL_ERROR_WANT_READ ? Socket::wait_read : Socket::wait_write,
                            asio::redirect_error(kUseTask, ec));
  co_return !ec;
}

// What the peer sent, decrypted, written to the session's end. The owner travels by pointer:
// GCC 12 copies a shared_ptr parameter into a coroutine frame wrongly.
Task<void> Decrypt(std::shared_ptr<TlsLink>* owner) {
  std::unique_ptr<std::shared_ptr<TlsLink>> hold(owner);
  TlsLink& pump = **owner;
  boost::system::error_code ec;
  while (!pump.closed) {
    if (!pump.to_relay.empty()) {
      const ssize_t sent = ::send(pump.plain.native_handle(), pump.to_relay.data(),
                                  pump.to_relay.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent > 0) pump.to_relay.erase(0, static_cast<size_t>(sent));
      if (pump.to_relay.empty()) std::string().swap(pump.to_relay);  // (none held while idle)
      if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
      if (sent < 0) {
        co_await pump.plain.async_wait(Socket::wait_write, asio::redirect_error(kUseTask, ec));
        if (ec || pump.closed) break;
      }
      continue;
    }
    bool drained = false;
    bool wants_write = false;
    std::string& decrypted = Decrypted();
    decrypted.clear();
    const ssize_t n = pump.channel->Read(pump.wire.native_handle(), Scratch(), kTlsPumpBuffer,
                                         &decrypted, &drained, &wants_write);
    if (n < 0) break;
    // (asio registers sockets edge-triggered: a wait is begun only once a read found nothing.)
    if (n > 0) {
      const ssize_t sent = ::send(pump.plain.native_handle(), decrypted.data(), decrypted.size(),
                                  MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
      // (Kept, since another pump of this thread reads through the same buffer meanwhile.)
      const size_t taken = static_cast<size_t>(std::max<ssize_t>(sent, 0));
      if (taken < decrypted.size()) pump.to_relay.assign(decrypted, taken);
      continue;
    }
    co_await pump.wire.async_wait(wants_write ? Socket::wait_write : Socket::wait_read,
                                  asio::redirect_error(kUseTask, ec));
    if (ec || pump.closed) break;  // (the peer's end: read as such)
  }
  // (A refused record is answered with its alert, where the channel sends one.)
  const bool refused = pump.channel != nullptr && pump.channel->owes_alert();
  if (refused) {
    LogWarning("pooler: refused a TLS %s's record during its login: %s",
               pump.of_client ? "client" : "server", pump.channel->failure());
  }
  pump.Close(/*notify_peer=*/refused);
}

// What the session writes, encrypted, sent to the peer; the session's end closed:
// close_notify.
Task<void> Encrypt(std::shared_ptr<TlsLink>* owner) {
  std::unique_ptr<std::shared_ptr<TlsLink>> hold(owner);
  TlsLink& pump = **owner;
  const int wire = pump.wire.native_handle();
  boost::system::error_code ec;
  bool relay_ended = false;
  while (!pump.closed) {
    // Records the channel sealed and the socket did not take go first; then what the channel
    // did not take yet (OpenSSL may be given it again at another address:
    // SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), else what the session wrote.
    bool blocked = false;
    if (pump.channel->unsent()) {
      if (!pump.channel->Flush(wire)) break;
      blocked = pump.channel->unsent();
    }
    if (!blocked) {
      std::string_view left = pump.from_relay;
      if (left.empty()) {
        char* data = Scratch();
        const ssize_t n = ::recv(pump.plain.native_handle(), data, kTlsPumpBuffer, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          co_await pump.plain.async_wait(Socket::wait_read, asio::redirect_error(kUseTask, ec));
          if (ec || pump.closed) break;
          continue;
        }
        if (n <= 0) {
          relay_ended = n == 0;
          break;
        }
        left = std::string_view(data, static_cast<size_t>(n));
      }
      size_t done = 0;
      bool failed = false;
      while (done < left.size()) {
        const ssize_t wrote = pump.channel->Write(wire, left.substr(done));
        if (wrote <= 0) {
          failed = wrote < 0;
          blocked = true;
          break;
        }
        done += static_cast<size_t>(wrote);
      }
      if (failed) break;
      if (left.data() == pump.from_relay.data()) {
        pump.from_relay.erase(0, done);
      } else {
        pump.from_relay.assign(left.substr(done));
      }
      blocked = blocked || pump.channel->unsent();
    }
    if (!blocked) continue;
    co_await pump.wire.async_wait(Socket::wait_write, asio::redirect_error(kUseTask, ec));
    if (ec || pump.closed) break;
  }
  pump.Close(/*notify_peer=*/relay_ended);
}

// Loads `cert_file` (PEM chain) and `key_file` into `context`, an encrypted key with
// `key_password` (never through OpenSSL's default, which would prompt on a terminal and hold
// the thread); an error names the file, by the key that gave it (`cert_key`, `key_key`), that
// would not load or does not match, and for an encrypted key the password's key
// (`password_key`; empty: none can be given).
absl::Status LoadCertificate(ssl::context& context, const std::string& cert_file,
                             const std::string& key_file, const std::string& key_password,
                             std::string_view cert_key, std::string_view key_key,
                             std::string_view password_key) {
  boost::system::error_code ec;
  context.use_certificate_chain_file(cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        Cat(cert_key, ": cannot load ", cert_file, ": ", OpenSslError(ec.message())));
  }
  // OpenSSL asks for a password exactly when the key is encrypted.
  auto asked = std::make_shared<bool>(false);
  context.set_password_callback(
      [key_password, asked](size_t, ssl::context::password_purpose) {
        *asked = true;
        return key_password;
      },
      ec);
  context.use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    ERR_clear_error();
    const std::string error = ec.message();  // (asio took the first, most telling, error)
    if (*asked) {
      if (password_key.empty()) {
        return absl::InvalidArgumentError(Cat(key_key, ": ", key_file,
                                              " is encrypted: give an unencrypted key "
                                              "(openssl pkey -in KEY -out NEW)"));
      }
      return absl::InvalidArgumentError(Cat(
          key_key, ": ", key_file, " is encrypted and ",
          key_password.empty() ? Cat("no ", password_key, " was given")
                               : Cat(password_key, " does not open it"),
          " (", error, ")"));
    }
    return absl::InvalidArgumentError(Cat(key_key, ": cannot load ", key_file, ": ", error));
  }
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    return absl::InvalidArgumentError(
        Cat(key_key, ": ", key_file, " is not the key of the certificate in ", cert_file));
  }
  return absl::OkStatus();
}

// Adds the revocation lists in `crl_file` (PEM) to `context`'s store, and those of directory
// `crl_dir` (PEM files named by `openssl rehash`: <issuer hash>.r<n>, looked up when a chain
// is checked), and has every certificate of a peer's chain checked against them, as
// PostgreSQL (ssl_crl_file, ssl_crl_dir) and libpq (sslcrl, sslcrldir) do: an authority with
// no list then fails the check. Neither given: nothing is checked. An error names the key.
absl::Status LoadRevocations(ssl::context& context, const std::string& crl_file,
                             std::string_view file_key, const std::string& crl_dir,
                             std::string_view dir_key) {
  if (crl_file.empty() && crl_dir.empty()) return absl::OkStatus();
  X509_STORE* store = SSL_CTX_get_cert_store(context.native_handle());
  ERR_clear_error();
  if (!crl_file.empty()) {
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (lookup == nullptr || X509_load_crl_file(lookup, crl_file.c_str(), X509_FILETYPE_PEM) <= 0) {
      return absl::InvalidArgumentError(Cat(file_key, ": cannot load ", crl_file, ": ",
                                            OpenSslError("no revocation list in it")));
    }
  }
  if (!crl_dir.empty()) {
    // (OpenSSL reads the directory only when it looks a list up: a missing one is told now.)
    struct stat st;
    if (::stat(crl_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
        ::access(crl_dir.c_str(), R_OK | X_OK) != 0) {
      return absl::InvalidArgumentError(
          Cat(dir_key, ": ", crl_dir, " is not a directory this process can read"));
    }
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (lookup == nullptr || X509_LOOKUP_add_dir(lookup, crl_dir.c_str(), X509_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          Cat(dir_key, ": cannot use ", crl_dir, ": ", OpenSslError("refused by OpenSSL")));
    }
  }
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  return absl::OkStatus();
}

}  // namespace

std::string VerifiedCommonName(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return "";
  std::string name;
  if (SSL_get_verify_result(ssl) == X509_V_OK) {
    X509_NAME* subject = X509_get_subject_name(cert);
    const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    ASN1_STRING* data = at < 0 ? nullptr : X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
    if (data != nullptr) {
      name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                  static_cast<size_t>(ASN1_STRING_length(data)));
      if (name.find('\0') != std::string::npos) name.clear();  // (an embedded zero: refused)
    }
  }
  X509_free(cert);
  return name;
}

absl::StatusOr<std::shared_ptr<ssl::context>> MakeServerTlsContext(const TlsOptions& tls) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  // No session resumption, as PostgreSQL's own server: its clients do not resume, and a
  // server-side cache or the tickets sent after each handshake would cost every connection.
  SSL_CTX_set_session_cache_mode(context->native_handle(), SSL_SESS_CACHE_OFF);
  // No renegotiation either (as PostgreSQL): a TLS 1.2 client may not start one, so that
  // an SSL_write never waits to read.
  SSL_CTX_set_options(context->native_handle(), SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(context->native_handle(), 0);
  // A TLS 1.3 client's records are pgflow's own once its handshake is over (Tls13Records).
  Tls13Records::CatchSecrets(context->native_handle());
  if (absl::Status s = LoadCertificate(*context, tls.cert, tls.key, "", "tls.cert", "tls.key", "");
      !s.ok()) {
    return s;
  }
  if (!tls.ca.empty()) {
    boost::system::error_code ec;
    context->load_verify_file(tls.ca, ec);
    STACK_OF(X509_NAME)* names = ec ? nullptr : SSL_load_client_CA_file(tls.ca.c_str());
    if (ec || names == nullptr) {
      return absl::InvalidArgumentError(
          Cat("tls.ca: cannot load ", tls.ca, ": ",
              OpenSslError(ec ? ec.message() : "no certificate in it")));
    }
    SSL_CTX_set_client_CA_list(context->native_handle(), names);  // (takes them)
    if (absl::Status s = LoadRevocations(*context, tls.crl, "tls.crl", tls.crl_dir, "tls.crl_dir");
        !s.ok()) {
      return s;
    }
    context->set_verify_mode(ssl::verify_peer);
  }
  return context;
}

absl::StatusOr<std::shared_ptr<ssl::context>> MakeClientTlsContext(const Upstream& upstream) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  // (A server may not renegotiate either: the pump's writes never wait to read.)
  SSL_CTX_set_options(context->native_handle(), SSL_OP_NO_RENEGOTIATION);
  if (!upstream.sslcert.empty()) {
    if (absl::Status s = LoadCertificate(*context, upstream.sslcert, upstream.sslkey,
                                         upstream.sslpassword, "sslcert", "sslkey", "sslpassword");
        !s.ok()) {
      return s;
    }
  }
  if (upstream.sslmode == TlsMode::kVerifyCa || upstream.sslmode == TlsMode::kVerifyFull) {
    boost::system::error_code ec;
    if (upstream.sslrootcert.empty()) {
      context->set_default_verify_paths(ec);
    } else {
      context->load_verify_file(upstream.sslrootcert, ec);
    }
    if (ec) {
      return absl::InvalidArgumentError(Cat("sslrootcert: cannot load ", upstream.sslrootcert, ": ",
                                            OpenSslError(ec.message())));
    }
    if (absl::Status s = LoadRevocations(*context, upstream.sslcrl, "sslcrl",
                                         upstream.sslcrldir, "sslcrldir");
        !s.ok()) {
      return s;
    }
    context->set_verify_mode(ssl::verify_peer);
  } else {
    context->set_verify_mode(ssl::verify_none);  // require: encrypted, not authenticated
  }
  return context;
}

Task<absl::StatusOr<Socket>> StartTls(Socket* raw, ssl::context& context, bool as_server,
                                      TlsMode mode, const std::string& host,
                                      std::chrono::milliseconds timeout, std::string* peer_name,
                                      std::string* server_name,
                                      std::shared_ptr<TlsLink>* link) {
  Executor executor = raw->get_executor();
  Socket wire(std::move(*raw));
  boost::system::error_code ec;
  wire.non_blocking(true, ec);
  SslPtr ssl(SSL_new(context.native_handle()));
  if (ssl == nullptr || SSL_set_fd(ssl.get(), wire.native_handle()) != 1) {
    co_return absl::UnavailableError(Cat("TLS: ", OpenSslError("cannot make a session")));
  }
  // Partial writes: the pump gives SSL_write what it has and waits on what does not fit.
  SSL_set_mode(ssl.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (as_server) {
    SSL_set_accept_state(ssl.get());
  } else {
    SSL_set_connect_state(ssl.get());
    SSL_set_tlsext_host_name(ssl.get(), host.c_str());
    if (mode == TlsMode::kVerifyFull) {
      // The certificate must name `host` (an address among its IP addresses; a name among its
      // DNS names, or as its common name when it has none). Checked by OpenSSL's own
      // verification, so that a mismatch fails with its reason ("hostname mismatch").
      boost::system::error_code not_address;
      asio::ip::make_address(host, not_address);
      const int set =
          not_address ? SSL_set1_host(ssl.get(), host.c_str())
                      : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), host.c_str());
      if (set != 1) {
        co_return absl::InvalidArgumentError(
            Cat("sslmode verify-full: cannot check certificates against host ", host, ": ",
                OpenSslError("refused by OpenSSL")));
      }
    }
  }
  // The timer's handler may run after this coroutine is gone (it expired in the turn the
  // handshake finished): it reaches the socket only through a state the coroutine detaches.
  struct Watch {
    Socket* socket;
    bool expired = false;
  };
  auto watch = std::make_shared<Watch>(Watch{.socket = &wire});
  Timer timer(executor);
  timer.expires_after(timeout);
  timer.async_wait([watch](const boost::system::error_code& ec) {
    if (ec || watch->socket == nullptr) return;
    watch->expired = true;
    boost::system::error_code ignored;
    watch->socket->cancel(ignored);
  });
  // The handshake, each step waiting for what OpenSSL asks of the socket.
  std::string why;
  while (true) {
    ERR_clear_error();
    const int done = SSL_do_handshake(ssl.get());
    if (done == 1) break;
    const int error = SSL_get_error(ssl.get(), done);
    const unsigned long code = error == SSL_ERROR_SSL ? ERR_peek_error() : 0;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      const bool go_on = co_await AwaitTls(&wire, error);
      if (go_on && !watch->expired) continue;
      why = watch->expired ? "" : "the connection was closed";
    } else if (code != 0) {
      const char* reason = ERR_reason_error_string(code);
      why = reason != nullptr ? reason : OpenSslError("refused");
      // Why the peer's certificate was refused (revoked, expired, unknown authority, ...),
      // when that is what failed: OpenSSL keeps a verify result even when nothing was verified.
      const long verified = SSL_get_verify_result(ssl.get());
      if ((SSL_get_verify_mode(ssl.get()) & SSL_VERIFY_PEER) != 0 &&
          ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED && verified != X509_V_OK &&
          verified != X509_V_ERR_UNSPECIFIED) {
        why = Cat(why, " (", X509_verify_cert_error_string(verified), ")");
      }
    } else {
      why = error == SSL_ERROR_SYSCALL && errno != 0 ? strerror(errno)
                                                      : "the peer closed the connection";
    }
    ERR_clear_error();
    break;
  }
  watch->socket = nullptr;
  timer.cancel();
  if (watch->expired || !why.empty()) {
    co_return absl::UnavailableError(
        Cat("TLS handshake ", watch->expired ? "timed out" : "failed", ": ", why));
  }
  if (as_server && peer_name != nullptr) *peer_name = VerifiedCommonName(ssl.get());
  if (as_server && server_name != nullptr) {
    const char* sni = SSL_get_servername(ssl.get(), TLSEXT_NAMETYPE_host_name);
    if (sni != nullptr) *server_name = sni;
  }
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    const std::string why = Cat("socketpair: ", strerror(errno));
    if (as_server && (errno == EMFILE || errno == ENFILE)) {
      // Told, as a client in the clear would be (RefuseWithoutDescriptors), not just closed.
      std::string out;
      AppendError(&out, "FATAL", "53300",
                  "too many clients: the pooler has no file descriptor left");
      SSL_write(ssl.get(), out.data(), static_cast<int>(out.size()));
      ERR_clear_error();
    }
    co_return absl::UnavailableError(why);
  }
  Socket inner(executor);
  Socket outer(executor);
  inner.assign(tcp::v4(), fds[0], ec);
  if (ec) {
    ::close(fds[0]);
    ::close(fds[1]);
    co_return absl::UnavailableError(Cat("socketpair: ", ec.message()));
  }
  outer.assign(tcp::v4(), fds[1], ec);
  if (ec) {
    ::close(fds[1]);
    co_return absl::UnavailableError(Cat("socketpair: ", ec.message()));
  }
  inner.non_blocking(true, ec);
  outer.non_blocking(true, ec);
  // A client's TLS 1.3 records are pgflow's from here: OpenSSL's session is freed.
  std::unique_ptr<TlsChannel> channel;
  if (as_server) channel = Tls13Records::Take(ssl.get());
  if (channel != nullptr) {
    ssl.reset();
  } else {
    channel = std::make_unique<OpenSslChannel>(ssl.release());
  }
  auto pump =
      std::make_shared<TlsLink>(std::move(wire), std::move(channel), std::move(inner), as_server);
  asio::co_spawn(executor, Decrypt(new std::shared_ptr<TlsLink>(pump)), asio::detached);
  asio::co_spawn(executor, Encrypt(new std::shared_ptr<TlsLink>(pump)), asio::detached);
  if (link != nullptr) *link = pump;
  co_return outer;
}

std::optional<TlsSession> TakeOverTls(const std::shared_ptr<TlsLink>& link, Socket* plain,
                                      std::string* from_client, std::string* to_client) {
  TlsLink& pump = *link;
  if (pump.closed || !pump.of_client) return std::nullopt;
  // The session's end: what the pump passed on and the session has not read, then what the
  // pump had decrypted and the socketpair had not taken.
  if (!DrainInto(plain->native_handle(), from_client)) return std::nullopt;
  from_client->append(pump.to_relay);
  // The pump's end: what the channel has not taken, then what the session wrote that the
  // pump has not read. (The first, if OpenSSL holds part of it as a record not yet sent, is
  // what the next SSL_write must be given again: it comes first. Records sealed and not sent
  // go with the channel, before either.)
  to_client->append(pump.from_relay);
  DrainInto(pump.plain.native_handle(), to_client);  // (the pump's end stays open: never 0)
  // The pump's coroutines find it closed when their waits end (cancelled now) and leave
  // everything as it is.
  pump.closed = true;
  boost::system::error_code ec;
  const int fd = pump.wire.release(ec);
  pump.plain.close(ec);
  if (fd < 0) return std::nullopt;
  TlsSession session{.fd = fd, .tls = std::move(pump.channel)};
  return session;
}

}  // namespace pgflow::pooler
