// The relay's reads and writes of a session's sockets (pooler/session.h): without waiting, through
// the thread's scratch, and for a TLS client the relay took over, through its TlsChannel.

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
  bool drained = false;
  bool wants_write = false;
  const ssize_t n = client_tls_->Read(client_fd_, thread_->scratch.get(), kReadChunk, &buffer,
                                      &drained, &wants_write);
  if (n < 0) return -1;
  // (What the channel holds past what it gave, the socket no longer shows: read on.)
  in = !drained && !wants_write;
  // Wants write: OpenSSL must send first (its answer to a KeyUpdate) and the socket is full:
  // reading waits for the socket to take writes again, or a level-triggered report of the
  // bytes still unread would call it again and again (UpdateInterest, OnReady).
  if (wants_write) tls_read_wants_write_ = true;
  if (n == 0) hup = false;
  return n;
}

ssize_t Session::SendTls(std::string& out, size_t& sent, bool& blocked, bool& writable) {
  ssize_t total = 0;
  if (client_tls_->unsent() && !client_tls_->Flush(client_fd_)) return -1;
  while (sent < out.size()) {
    const ssize_t n =
        client_tls_->Write(client_fd_, std::string_view(out).substr(sent));
    if (n < 0) return -1;
    if (n == 0) break;
    sent += static_cast<size_t>(n);
    total += n;
  }
  AfterWrite(out, sent, blocked, writable);
  if (client_tls_->unsent()) {  // (sealed records the socket did not take: written first)
    blocked = true;
    writable = false;
  }
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
