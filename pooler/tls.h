#pragma once

// TLS on either side of the pooler (OpenSSL, on the socket's descriptor). The login and the
// server connections read and write plain PostgreSQL bytes on a socket with asio's calls: for
// a peer that speaks TLS, that socket is one end of a Unix socketpair, and a pump (two
// coroutines on the same thread) carries the bytes between its other end and the TLS
// session. Once a client is logged in, the relay takes its connection over (TakeOverTls) and
// reads and writes its records on the client's own socket: one descriptor per client, no
// extra system call. Both go through a TlsChannel (pooler/tls_records.h): for a client that
// negotiated TLS 1.3, pgflow's own record layer, which holds a few hundred bytes per
// connection once OpenSSL's session is freed at the end of the handshake; else OpenSSL's
// session, which releases its record buffers between records. An idle TLS connection holds
// no buffer either way: the pump reads through its thread's scratch (kTlsPumpBuffer), the
// relay through its own.
//
// Negotiation is PostgreSQL's: a client sends SSLRequest and gets 'S' (then the handshake) or
// 'N'; the pooler does the same toward a server when its url's sslmode asks for it.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "boost/asio/ssl.hpp"
#include "engine/asio_support.h"
#include "pooler/pooler_config.h"
#include "pooler/tls_records.h"

namespace pgflow::pooler {

inline constexpr size_t kTlsPumpBuffer = 8192;

// The context the pooler shows its clients: `tls.cert` (PEM, the chain) and `tls.key`; with
// `tls.ca` (PEM authorities), clients are asked for a certificate, and one that does not chain
// to them (or that `tls.crl` or `tls.crl_dir` revokes) fails the handshake (one that sends none
// goes on: the session decides). TLS 1.2 and later. An error names the file that would not load.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> MakeServerTlsContext(
    const TlsOptions& tls);
// The context for connections to `upstream`'s server: under verify-ca and verify-full the
// server's certificate must chain to the url's sslrootcert (PEM; empty: the system's
// authorities) and not be revoked by its sslcrl or sslcrldir; with sslcert and sslkey, the
// pooler shows that client certificate (an encrypted key opened with sslpassword).
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> MakeClientTlsContext(
    const Upstream& upstream);

// Runs the TLS handshake on `*raw` (moved from) with `context`, as the server (toward a
// client) or as the client (toward PostgreSQL: `host` is sent as SNI and, under
// verify-full, checked against the certificate), within `timeout` (what is left of the
// caller's own deadline: a Deadline on `*raw` cannot reach the socket once moved); then starts
// the pump and returns the plain socket, on the same executor. `context` must outlive the
// handshake only. As the server, `*peer_name` (when given) gets the common name of the
// client's certificate if it sent one and it was verified, else stays empty; `*server_name`
// (when given) the host name the client sent (SNI), if any.
// The common name of the peer's certificate, if it sent one and it was verified; else empty.
std::string VerifiedCommonName(SSL* ssl);

// A pumped TLS connection (StartTls's `*link`): what TakeOverTls takes over.
struct TlsLink;

asio_support::Task<absl::StatusOr<asio_support::Socket>> StartTls(
    asio_support::Socket* raw, boost::asio::ssl::context& context, bool as_server,
    TlsMode mode, const std::string& host, std::chrono::milliseconds timeout,
    std::string* peer_name = nullptr, std::string* server_name = nullptr,
    std::shared_ptr<TlsLink>* link = nullptr);

// A client's TLS connection once the relay reads and writes it itself.
struct TlsSession {
  int fd = -1;  // the client's TCP socket, non-blocking, owned
  std::unique_ptr<TlsChannel> tls;  // (counted in TlsClientsOpen till freed)
};

// Ends the pump of a client's `link` and hands its connection over, so that the relay holds
// one descriptor per TLS client instead of three and makes no extra system call per read or
// write: `*plain` (the session's end of the socketpair, which the caller then closes) is
// read to its end into `*from_client`, followed by what the pump had decrypted and not passed
// on; `*to_client` gets what the session wrote and the pump had not yet sent, which must go
// first (and, when OpenSSL holds a record of it partly sent, be given to SSL_write again;
// records sealed and not yet sent stay in the channel, unsent()).
// nullopt when the pump has ended (the session then sees the end on `*plain`).
std::optional<TlsSession> TakeOverTls(const std::shared_ptr<TlsLink>& link,
                                      asio_support::Socket* plain, std::string* from_client,
                                      std::string* to_client);

}  // namespace pgflow::pooler
