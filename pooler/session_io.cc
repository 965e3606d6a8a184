// The relay's reads and writes of a session's sockets (pooler/session.h): without waiting, through
// the thread's scratch, and for a TLS client the relay took over, through OpenSSL.

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "pooler/session.h"

namespace pgflow::pooler {

ssize_t Session::ReceivePending(int fd, std::string& buffer, bool& in, bool& hup) {
  ssize_t n;
  do {
    n = ::recv(fd, thread_->scratch.get(), kReadChunk, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buffer.append(thread_->scratch.get(), static_cast<size_t>(n));
    if (static_cast<size_t>(n) < kReadChunk) in = false;
    return n;
  }
  if (n == 0) {
    errno = 0;
    return -1;
  }
  if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
  in = false;
  hup = false;
  return 0;
}

ssize_t Session::ReceiveTls(std::string& buffer, bool& in, bool& hup) {
  SSL* ssl = client_ssl_.get();
  ERR_clear_error();  // (SSL_get_error reads the thread's queue: it must hold only this call's)
  const int n = SSL_read(ssl, thread_->scratch.get(), static_cast<int>(kReadChunk));
  if (n > 0) {
    buffer.append(thread_->scratch.get(), static_cast<size_t>(n));
    // A record is read whole: what the socket still holds, the reactor reports again. (An
    // SSL_read on an emptied socket would leave OpenSSL holding a record buffer while idle.)
    in = SSL_has_pending(ssl) != 0;
    return n;
  }
  const int error = SSL_get_error(ssl, n);
  ERR_clear_error();
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    // WANT_WRITE: OpenSSL must send first (its answer to a KeyUpdate) and the socket is
    // full: reading waits for the socket to take writes again, or a level-triggered report of
    // the bytes still unread would call it again and again (UpdateInterest, OnReady).
    tls_read_wants_write_ = error == SSL_ERROR_WANT_WRITE;
    in = false;
    hup = false;
    return 0;
  }
  if (error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && errno == EAGAIN)) {
    errno = 0;  // (close_notify: the end of the stream)
  } else if (error != SSL_ERROR_SYSCALL || errno == 0) {
    errno = EPROTO;  // (a TLS error, or the peer gone without close_notify)
  }
  return -1;
}

ssize_t Session::SendTls(std::string& out, size_t& sent, bool& blocked, bool& writable) {
  SSL* ssl = client_ssl_.get();
  ssize_t total = 0;
  while (sent < out.size()) {
    // (Partial writes: a record at a time. A record OpenSSL could not send whole is given
    // again from the same place, at whatever address `out` now has.)
    const size_t chunk = std::min<size_t>(out.size() - sent, 1 << 30);
    ERR_clear_error();
    const int n = SSL_write(ssl, out.data() + sent, static_cast<int>(chunk));
    if (n <= 0) {
      // (WANT_READ would need a renegotiation, which the server's context refuses.)
      const int error = SSL_get_error(ssl, n);
      ERR_clear_error();
      if (error != SSL_ERROR_WANT_WRITE) {
        if (errno == 0 || errno == EAGAIN) errno = EPROTO;
        return -1;
      }
      break;
    }
    sent += static_cast<size_t>(n);
    total += n;
  }
  AfterWrite(out, sent, blocked, writable);
  return total;
}

void Session::AfterWrite(std::string& out, size_t& sent, bool& blocked, bool& writable) {
  blocked = sent < out.size();
  if (blocked) {
    writable = false;
  } else {
    out.clear();
    sent = 0;
  }
}

const char* Session::ReadFailure() { return errno == 0 ? "end of stream" : strerror(errno); }

ssize_t Session::SendPending(int fd, std::string& out, size_t& sent, bool& blocked,
                             bool& writable) {
  ssize_t n;
  do {
    n = ::send(fd, out.data() + sent, out.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    n = 0;
  }
  sent += static_cast<size_t>(n);
  AfterWrite(out, sent, blocked, writable);
  return n;
}

}  // namespace pgflow::pooler
