// The gateway's WebSocket side: the PostgreSQL protocol in binary messages (pooler/gateway.h
// says how it works). The gateway does the handshake and the login; a plain WebSocket is then
// handed to its session, which frames the protocol in its relay (Session::AdoptWebSocket); a
// TLS one is relayed here, through the tunnel.

#include "pooler/gateway_websocket.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/gateway_client.h"
#include "pooler/protocol.h"
#include "pooler/session.h"
#include "pooler/websocket_frames.h"

namespace pgflow::pooler {
namespace {

namespace beast = boost::beast;
using asio_support::Timer;

constexpr size_t kRelayChunk = 64 * 1024;  // a session's bytes sent in frames of at most this

// One WebSocket over `Stream`: its raw bytes decoded into the protocol's (`data`), frames
// written whole, one write at a time (the reading side answers pings while a relay's other
// side writes data: a TLS stream takes one write at once).
//
// (Here a co_await stands in a statement of its own, never after `&&`: g++ 12 rewrites that
// form, and the pooler's other code does not use it.)
template <class Stream>
struct WebSocketConn {
  WebSocketConn(Stream* s, NetThread* thread)
      : stream(s), write_wait(thread->context.get_executor()) {
    write_wait.expires_at(Timer::time_point::max());
  }
  Stream* stream;
  std::unique_ptr<Session::WebSocket> ws = std::make_unique<Session::WebSocket>();
  std::string data;  // decoded, not yet taken
  bool closed = false;
  std::unique_ptr<char[]> chunk = std::make_unique_for_overwrite<char[]>(kRelayChunk);  // reads
  bool writing = false;
  Timer write_wait;  // cancelled when a write ends, waking the writes waiting for it

  // Sends `bytes` as one binary frame; false when the connection failed.
  Task<bool> Send(std::string_view bytes) {
    std::string frame;
    AppendWsFrame(&frame, kWsBinary, bytes);
    const bool sent = co_await Write(frame);
    co_return sent;
  }
  Task<bool> Write(std::string_view bytes) {
    boost::system::error_code ec;
    while (writing) co_await write_wait.async_wait(asio::redirect_error(kUseTask, ec));
    writing = true;
    co_await asio::async_write(*stream, asio::buffer(bytes.data(), bytes.size()),
                               asio::redirect_error(kUseTask, ec));
    writing = false;
    write_wait.cancel();
    co_return !ec;
  }
  // Reads until `data` holds `need` bytes; false when the client closed or broke the protocol.
  Task<bool> ReadUntil(size_t need) {
    while (data.size() < need) {
      if (closed) co_return false;
      boost::system::error_code ec;
      const size_t n = co_await stream->async_read_some(asio::buffer(chunk.get(), kRelayChunk),
                                                        asio::redirect_error(kUseTask, ec));
      if (ec) co_return false;
      ws->raw.append(chunk.get(), n);
      std::string reply;
      absl::Status s = ws->decoder.Decode(&ws->raw, &data, &reply, &closed);
      if (!reply.empty()) {
        const bool written = co_await Write(reply);
        if (!written) co_return false;
      }
      if (!s.ok()) {
        LogDebug("pooler: a WebSocket client broke the protocol: %s", s.message());
        co_return false;
      }
    }
    co_return true;
  }
};

// What the client sent before the login: its startup packet, then its password message (sent
// at once by a pipelining driver, or as the answer to the request).
struct ClientLogin {
  std::optional<StartupPacket> startup;
  std::optional<std::string> password;
};

// The client's startup packet and password, taken from conn->data. An error names what was
// wrong (sent to the client as a FATAL); nullopt with `login->startup` empty: a cancel request
// was passed on, or the client left.
template <class Stream>
Task<std::optional<std::string>> ReadClientLogin(WebSocketConn<Stream>* conn, ClientLogin* login,
                                                 Gateway* gateway, NetThread* thread,
                                                 const Tunnel& tunnel) {
  std::string& data = conn->data;
  while (true) {
    if (!co_await conn->ReadUntil(4)) co_return std::nullopt;
    absl::StatusOr<size_t> length = StartupPacketLength(data);
    if (!length.ok()) co_return std::string(length.status().message());
    if (!co_await conn->ReadUntil(*length)) co_return std::nullopt;
    absl::StatusOr<StartupPacket> packet =
        ParseStartupPacket(std::string_view(data).substr(0, *length));
    if (!packet.ok()) co_return std::string(packet.status().message());
    data.erase(0, *length);
    switch (packet->kind) {
      case StartupPacket::Kind::kSslRequest:
      case StartupPacket::Kind::kGssEncRequest:
        // The WebSocket is the transport (and wss:// its TLS).
        if (!co_await conn->Send("N")) co_return std::nullopt;
        continue;
      case StartupPacket::Kind::kCancel:
        SendCancel(gateway->impl(), thread, tunnel, packet->cancel_pid, packet->cancel_key);
        co_return std::nullopt;
      case StartupPacket::Kind::kStartup:
        break;
    }
    login->startup = *std::move(packet);
    break;
  }
  std::string request;
  AppendAuthentication(&request, kAuthenticationCleartextPassword);
  if (!co_await conn->Send(request)) co_return std::nullopt;
  if (!co_await conn->ReadUntil(5)) co_return std::nullopt;
  absl::StatusOr<std::optional<MessageHeader>> header = ReadMessageHeader(data, 4096);
  if (!header.ok() || (*header)->type != 'p') {
    co_return std::string("expected a password message");
  }
  if (!co_await conn->ReadUntil((*header)->size)) co_return std::nullopt;
  BodyReader body(std::string_view(data).substr(5, (*header)->body_size()));
  std::optional<std::string_view> password = body.CString();
  if (!password.has_value()) co_return std::string("a malformed password message");
  login->password = std::string(*password);
  data.erase(0, (*header)->size);  // (what follows: queries a pipelining driver sent already)
  co_return std::nullopt;
}

// The session's bytes to the client until the session ends (a TLS WebSocket, relayed here).
template <class Stream>
Task<void> SessionToClient(WebSocketConn<Stream>* conn, GatewayClient* client) {
  std::string chunk(kRelayChunk, '\0');
  boost::system::error_code ec;
  while (true) {
    const size_t n = co_await client->socket().async_read_some(
        asio::buffer(chunk.data(), chunk.size()), asio::redirect_error(kUseTask, ec));
    if (ec) break;
    if (!co_await conn->Send(std::string_view(chunk.data(), n))) break;
  }
  std::string close;
  AppendWsFrame(&close, kWsClose, std::string_view("\x03\xe8", 2));  // 1000: normal
  co_await conn->Write(close);
  beast::get_lowest_layer(*conn->stream).socket().close(ec);
}

// The client's bytes to the session, after the login, until either ends (a TLS WebSocket).
template <class Stream>
Task<void> Relay(WebSocketConn<Stream>* conn, GatewayClient* client, NetThread* thread) {
  bool relayed = false;
  Timer relayed_wait(thread->context.get_executor());
  relayed_wait.expires_at(Timer::time_point::max());
  asio::co_spawn(thread->context, SessionToClient(conn, client),
                 [&relayed, &relayed_wait](std::exception_ptr) {
                   relayed = true;
                   relayed_wait.cancel();
                 });
  while (co_await conn->ReadUntil(1)) {
    if (!co_await client->Write(conn->data)) break;
    conn->data.clear();
  }
  boost::system::error_code ec;
  client->socket().close(ec);  // the session sees its client go; SessionToClient ends
  while (!relayed) co_await relayed_wait.async_wait(asio::redirect_error(kUseTask, ec));
}

// The 101 answer to `request`, or an error when it is no WebSocket handshake this server takes.
absl::StatusOr<std::string> Handshake(const GatewayRequest& request) {
  auto header = [&](beast::http::field field) {
    auto it = request.find(field);
    return it == request.end() ? std::string_view()
                               : std::string_view(it->value().data(), it->value().size());
  };
  if (header(beast::http::field::sec_websocket_version) != "13") {
    return absl::InvalidArgumentError("Sec-WebSocket-Version must be 13");
  }
  std::string_view key = header(beast::http::field::sec_websocket_key);
  if (key.empty()) return absl::InvalidArgumentError("no Sec-WebSocket-Key");
  return Cat("HTTP/1.1 101 Switching Protocols\r\nServer: pgflow\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: ", WsAcceptKey(key), "\r\n\r\n");
}

}  // namespace

PGFLOW_ASIO_COROUTINE_BEGIN
template <class Stream>
Task<void> BridgeWebSocket(Gateway* gateway, NetThread* thread, Stream* stream,
                           const GatewayRequest* request, beast::flat_buffer* buffer,
                           Tunnel tunnel) {
  WebSocketConn<Stream> conn(stream, thread);
  conn.ws->decoder = WsDecoder(gateway->impl()->config()->max_message_size + 1024);
  // The handshake and the login within client_login_timeout; no timeout once logged in.
  beast::get_lowest_layer(*stream).expires_after(gateway->impl()->config()->client_login_timeout);
  absl::StatusOr<std::string> accepted = Handshake(*request);
  if (!accepted.ok()) {
    const std::string refusal = Cat(
        "HTTP/1.1 400 Bad Request\r\nServer: pgflow\r\nConnection: close\r\n"
        "Content-Type: text/plain\r\nContent-Length: ", accepted.status().message().size() + 1,
        "\r\n\r\n", accepted.status().message(), "\n");
    co_await conn.Write(refusal);
    co_return;
  }
  if (!co_await conn.Write(*accepted)) co_return;
  // (What the HTTP parser read past the request: frames a client sent early.)
  const auto early = buffer->data();
  conn.ws->raw.append(static_cast<const char*>(early.data()), early.size());
  buffer->consume(buffer->size());
  ClientLogin login;
  if (std::optional<std::string> wrong =
          co_await ReadClientLogin(&conn, &login, gateway, thread, tunnel)) {
    std::string fatal;
    AppendError(&fatal, "FATAL", "08P01", Cat("invalid startup over WebSocket: ", *wrong));
    co_await conn.Send(fatal);
    co_return;
  }
  if (!login.startup.has_value() || !login.password.has_value()) co_return;

  std::weak_ptr<Session> session;
  absl::StatusOr<Socket> socket = gateway->impl()->OpenTunnel(thread, tunnel, &session);
  if (!socket.ok()) {
    std::string fatal;
    AppendError(&fatal, "FATAL", "53300",
                Cat("the pooler cannot take a client: ", socket.status().message()));
    co_await conn.Send(fatal);
    co_return;
  }
  GatewayClient client(*std::move(socket));
  GatewayLogin as{.parameters = login.startup->parameters, .password = *login.password};
  std::string answer;
  std::optional<PgError> refused = co_await client.Login(as, &answer);
  answer += client.TakeBuffered();
  if (!answer.empty()) {
    const bool sent = co_await conn.Send(answer);
    if (!sent) co_return;
  }
  if (refused.has_value()) co_return;
  beast::get_lowest_layer(*stream).expires_never();
  if constexpr (std::is_same_v<Stream, GatewayTcpStream>) {
    // A plain WebSocket: its session takes the socket and frames the protocol itself (not
    // the console's, which never relays: it stays on the tunnel).
    std::shared_ptr<Session> target = session.lock();
    if (target == nullptr) co_return;
    if (target->CanAdoptWebSocket()) {
      boost::system::error_code ec;
      const int fd = beast::get_lowest_layer(*stream).socket().release(ec);
      if (ec || fd < 0) co_return;
      conn.ws->counted = &gateway->connections;
      gateway->connections.fetch_add(1);  // (the connection's own count ends with this call)
      target->AdoptWebSocket(fd, std::move(conn.ws), std::move(conn.data));
      co_return;
    }
  }
  if (!conn.data.empty()) {
    const bool written = co_await client.Write(conn.data);
    if (!written) co_return;
  }
  conn.data.clear();
  co_await Relay(&conn, &client, thread);
}
PGFLOW_ASIO_COROUTINE_END

template Task<void> BridgeWebSocket<GatewayTcpStream>(Gateway*, NetThread*, GatewayTcpStream*,
                                                      const GatewayRequest*, beast::flat_buffer*,
                                                      Tunnel);
template Task<void> BridgeWebSocket<GatewayTlsStream>(Gateway*, NetThread*, GatewayTlsStream*,
                                                      const GatewayRequest*, beast::flat_buffer*,
                                                      Tunnel);

}  // namespace pgflow::pooler
