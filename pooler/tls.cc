#include "pooler/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <optional>
#include <utility>

#include "engine/str_cat.h"

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

// Both ends of a TLS connection's plain side and the TLS stream, shared by the pump's two
// directions; the first to end closes everything, so the other and the relay see the end.
struct Pump {
  Pump(std::unique_ptr<ssl::stream<Socket>> s, Socket p) : tls(std::move(s)), plain(std::move(p)) {}
  std::unique_ptr<ssl::stream<Socket>> tls;
  Socket plain;
  void Close() {
    boost::system::error_code ignored;
    plain.close(ignored);
    tls->lowest_layer().close(ignored);
  }
};

// One direction of the pump: what `from` gives, written to `to` (TLS to plain: what the peer
// sent, decrypted, for the relay; plain to TLS: what the relay writes, encrypted). The owner
// travels by pointer: GCC 12 copies a shared_ptr parameter into a coroutine frame wrongly.
template <typename From, typename To>
Task<void> Carry(std::shared_ptr<Pump>* owner, From* from, To* to) {
  std::unique_ptr<std::shared_ptr<Pump>> hold(owner);
  std::array<char, kTlsPumpBuffer> buffer;
  boost::system::error_code ec;
  while (true) {
    size_t n = co_await from->async_read_some(asio::buffer(buffer),
                                              asio::redirect_error(kUseTask, ec));
    if (ec) break;
    co_await asio::async_write(*to, asio::buffer(buffer.data(), n),
                               asio::redirect_error(kUseTask, ec));
    if (ec) break;
  }
  (*owner)->Close();
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
                                      std::string* server_name) {
  Executor executor = raw->get_executor();
  auto stream = std::make_unique<ssl::stream<Socket>>(std::move(*raw), context);
  if (!as_server) {
    SSL* ssl = stream->native_handle();
    SSL_set_tlsext_host_name(ssl, host.c_str());
    if (mode == TlsMode::kVerifyFull) {
      // The certificate must name `host` (an address among its IP addresses; a name among its
      // DNS names, or as its common name when it has none). Checked by OpenSSL's own
      // verification, so that a mismatch fails with its reason ("hostname mismatch").
      boost::system::error_code not_address;
      asio::ip::make_address(host, not_address);
      const int set = not_address
                          ? SSL_set1_host(ssl, host.c_str())
                          : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
      if (set != 1) {
        co_return absl::InvalidArgumentError(
            Cat("sslmode verify-full: cannot check certificates against host ", host, ": ",
                OpenSslError("refused by OpenSSL")));
      }
    }
  }
  // The timer's handler may run after this coroutine is gone (it expired in the turn the
  // handshake finished): it reaches the stream only through a state the coroutine detaches.
  struct Watch {
    ssl::stream<Socket>* stream;
    bool expired = false;
  };
  auto watch = std::make_shared<Watch>(Watch{.stream = stream.get()});
  Timer timer(executor);
  timer.expires_after(timeout);
  timer.async_wait([watch](const boost::system::error_code& ec) {
    if (ec || watch->stream == nullptr) return;
    watch->expired = true;
    boost::system::error_code ignored;
    watch->stream->lowest_layer().cancel(ignored);
  });
  boost::system::error_code ec;
  co_await stream->async_handshake(as_server ? ssl::stream_base::server : ssl::stream_base::client,
                                   asio::redirect_error(kUseTask, ec));
  watch->stream = nullptr;
  timer.cancel();
  if (ec || watch->expired) {
    std::string why = watch->expired ? "" : OpenSslError(ec.message());
    // Why the peer's certificate was refused (revoked, expired, unknown authority, ...), when
    // that is what failed: OpenSSL keeps a verify result even when nothing was verified.
    SSL* ssl = stream->native_handle();
    const long verified = SSL_get_verify_result(ssl);
    if (!watch->expired && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) != 0 &&
        ec.category() == asio::error::get_ssl_category() &&
        ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        verified != X509_V_OK && verified != X509_V_ERR_UNSPECIFIED) {
      why = Cat(why, " (", X509_verify_cert_error_string(verified), ")");
    }
    co_return absl::UnavailableError(
        Cat("TLS handshake ", watch->expired ? "timed out" : "failed", ": ", why));
  }
  if (as_server && peer_name != nullptr) *peer_name = VerifiedCommonName(stream->native_handle());
  if (as_server && server_name != nullptr) {
    const char* sni = SSL_get_servername(stream->native_handle(), TLSEXT_NAMETYPE_host_name);
    if (sni != nullptr) *server_name = sni;
  }
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    co_return absl::UnavailableError(Cat("socketpair: ", strerror(errno)));
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
  auto pump = std::make_shared<Pump>(std::move(stream), std::move(inner));
  asio::co_spawn(executor,
                 Carry(new std::shared_ptr<Pump>(pump), pump->tls.get(), &pump->plain),
                 asio::detached);
  asio::co_spawn(executor,
                 Carry(new std::shared_ptr<Pump>(pump), &pump->plain, pump->tls.get()),
                 asio::detached);
  co_return outer;
}

}  // namespace pgflow::pooler
