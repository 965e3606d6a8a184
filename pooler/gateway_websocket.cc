// The gateway's WebSocket side: the PostgreSQL protocol in binary messages (pooler/gateway.h
// says how it works).

#include "pooler/gateway_websocket.h"

#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "engine/log.h"
#include "engine/str_cat.h"
#include "pooler/gateway_client.h"
#include "pooler/protocol.h"

namespace pgflow::pooler {
namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
using asio_support::Timer;

constexpr size_t kRelayChunk = 64 * 1024;  // a session's bytes sent in messages of at most this

template <class Stream>
using WebSocket = websocket::stream<Stream&>;

// What the client sent before the login: its startup packet, then its password message (sent
// at once by a pipelining driver, or as the answer to the request).
struct ClientLogin {
  std::string bytes;  // read so far
  std::optional<StartupPacket> startup;
  std::optional<std::string> password;
  std::string rest;  // what followed the password (queries a pipelining driver sent already)
};

// Reads messages until `bytes` holds `need` bytes; false when the WebSocket ended.
template <class Stream>
Task<bool> ReadUntil(WebSocket<Stream>& ws, std::string* bytes, size_t need) {
  beast::flat_buffer message;
  while (bytes->size() < need) {
    boost::system::error_code ec;
    co_await ws.async_read(message, asio::redirect_error(kUseTask, ec));
    if (ec) co_return false;
    const auto data = message.data();
    bytes->append(static_cast<const char*>(data.data()), data.size());
    message.consume(message.size());
  }
  co_return true;
}

template <class Stream>
Task<bool> Send(WebSocket<Stream>& ws, std::string_view bytes) {
  boost::system::error_code ec;
  co_await ws.async_write(asio::buffer(bytes.data(), bytes.size()),
                          asio::redirect_error(kUseTask, ec));
  co_return !ec;
}

// The client's startup packet and password. An error names what was wrong (sent to the client
// as a FATAL); nullopt with `login->startup` empty: a cancel request was passed on, or the
// client left.
template <class Stream>
Task<std::optional<std::string>> ReadClientLogin(WebSocket<Stream>& ws, ClientLogin* login,
                                                 Gateway* gateway, NetThread* thread,
                                                 const Tunnel& tunnel) {
  while (true) {
    if (!co_await ReadUntil(ws, &login->bytes, 4)) co_return std::nullopt;
    absl::StatusOr<size_t> length = StartupPacketLength(login->bytes);
    if (!length.ok()) co_return std::string(length.status().message());
    if (!co_await ReadUntil(ws, &login->bytes, *length)) co_return std::nullopt;
    absl::StatusOr<StartupPacket> packet =
        ParseStartupPacket(std::string_view(login->bytes).substr(0, *length));
    if (!packet.ok()) co_return std::string(packet.status().message());
    login->bytes.erase(0, *length);
    switch (packet->kind) {
      case StartupPacket::Kind::kSslRequest:
      case StartupPacket::Kind::kGssEncRequest:
        // The WebSocket is the transport (and wss:// its TLS).
        if (!co_await Send(ws, "N")) co_return std::nullopt;
        continue;
      case StartupPacket::Kind::kCancel: {
        absl::StatusOr<Socket> socket = gateway->impl()->OpenTunnel(thread, tunnel);
        if (socket.ok()) {
          std::string cancel;
          AppendCancelRequest(&cancel, packet->cancel_pid, packet->cancel_key);
          boost::system::error_code ec;
          socket->write_some(asio::buffer(cancel), ec);
        }
        co_return std::nullopt;
      }
      case StartupPacket::Kind::kStartup:
        break;
    }
    login->startup = *std::move(packet);
    break;
  }
  std::string request;
  AppendAuthentication(&request, kAuthenticationCleartextPassword);
  if (!co_await Send(ws, request)) co_return std::nullopt;
  if (!co_await ReadUntil(ws, &login->bytes, 5)) co_return std::nullopt;
  absl::StatusOr<std::optional<MessageHeader>> header = ReadMessageHeader(login->bytes, 4096);
  if (!header.ok() || (*header)->type != 'p') {
    co_return std::string("expected a password message");
  }
  if (!co_await ReadUntil(ws, &login->bytes, (*header)->size)) co_return std::nullopt;
  BodyReader body(std::string_view(login->bytes).substr(5, (*header)->body_size()));
  std::optional<std::string_view> password = body.CString();
  if (!password.has_value()) co_return std::string("a malformed password message");
  login->password = std::string(*password);
  login->rest = login->bytes.substr((*header)->size);
  co_return std::nullopt;
}

// The session's bytes to the client until the session ends; then the WebSocket is closed.
template <class Stream>
Task<void> SessionToClient(WebSocket<Stream>* ws, GatewayClient* client) {
  std::string chunk(kRelayChunk, '\0');
  boost::system::error_code ec;
  while (true) {
    const size_t n = co_await client->socket().async_read_some(
        asio::buffer(chunk.data(), chunk.size()), asio::redirect_error(kUseTask, ec));
    if (ec) break;
    if (!co_await Send(*ws, std::string_view(chunk.data(), n))) break;
  }
  co_await ws->async_close(websocket::close_code::normal, asio::redirect_error(kUseTask, ec));
}

}  // namespace

PGFLOW_ASIO_COROUTINE_BEGIN
template <class Stream>
Task<void> BridgeWebSocket(Gateway* gateway, NetThread* thread, Stream* stream,
                           const GatewayRequest* request, beast::flat_buffer* buffer,
                           Tunnel tunnel) {
  WebSocket<Stream> ws(*stream);
  ws.binary(true);
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.read_message_max(gateway->impl()->config()->max_message_size + 1024);
  (void)buffer;  // (a client sends nothing before the upgrade's answer)
  boost::system::error_code ec;
  co_await ws.async_accept(*request, asio::redirect_error(kUseTask, ec));
  if (ec) co_return;
  ClientLogin login;
  if (std::optional<std::string> wrong =
          co_await ReadClientLogin(ws, &login, gateway, thread, tunnel)) {
    std::string fatal;
    AppendError(&fatal, "FATAL", "08P01", Cat("invalid startup over WebSocket: ", *wrong));
    co_await Send(ws, fatal);
    co_await ws.async_close(websocket::close_code::protocol_error, asio::redirect_error(kUseTask, ec));
    co_return;
  }
  if (!login.startup.has_value() || !login.password.has_value()) co_return;

  absl::StatusOr<Socket> socket = gateway->impl()->OpenTunnel(thread, tunnel);
  if (!socket.ok()) {
    std::string fatal;
    AppendError(&fatal, "FATAL", "53300", Cat("the pooler cannot take a client: ",
                                              socket.status().message()));
    co_await Send(ws, fatal);
    co_return;
  }
  GatewayClient client(*std::move(socket));
  GatewayLogin as{.parameters = login.startup->parameters, .password = *login.password};
  std::string answer;
  std::optional<PgError> refused = co_await client.Login(as, &answer);
  if (!answer.empty() && !co_await Send(ws, answer)) co_return;
  if (refused.has_value()) {
    co_await ws.async_close(websocket::close_code::normal, asio::redirect_error(kUseTask, ec));
    co_return;
  }
  // Logged in: bytes both ways, unchanged. The session's side runs beside this one; whichever
  // ends first ends the other (the tunnel closed, or the WebSocket).
  if (std::string early = client.TakeBuffered(); !early.empty() && !co_await Send(ws, early)) {
    co_return;
  }
  if (!login.rest.empty() && !co_await client.Write(login.rest)) co_return;
  bool relayed = false;
  Timer relayed_wait(thread->context.get_executor());
  relayed_wait.expires_at(Timer::time_point::max());
  asio::co_spawn(thread->context, SessionToClient(&ws, &client),
                 [&relayed, &relayed_wait](std::exception_ptr) {
                   relayed = true;
                   relayed_wait.cancel();
                 });
  beast::flat_buffer message;
  while (true) {
    co_await ws.async_read(message, asio::redirect_error(kUseTask, ec));
    if (ec) break;
    const auto data = message.data();
    if (!co_await client.Write(
            std::string_view(static_cast<const char*>(data.data()), data.size()))) {
      break;
    }
    message.consume(message.size());
  }
  client.socket().close(ec);  // the session sees its client go; SessionToClient ends
  while (!relayed) co_await relayed_wait.async_wait(asio::redirect_error(kUseTask, ec));
}
PGFLOW_ASIO_COROUTINE_END

template Task<void> BridgeWebSocket<GatewayTcpStream>(Gateway*, NetThread*, GatewayTcpStream*,
                                                      const GatewayRequest*, beast::flat_buffer*,
                                                      Tunnel);
template Task<void> BridgeWebSocket<GatewayTlsStream>(Gateway*, NetThread*, GatewayTlsStream*,
                                                      const GatewayRequest*, beast::flat_buffer*,
                                                      Tunnel);

}  // namespace pgflow::pooler
