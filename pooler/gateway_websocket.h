#pragma once

// The WebSocket side of the gateway (pooler/gateway.h says how it works). Internal to pooler/.

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "boost/asio/ssl.hpp"
#include "engine/asio_support.h"
#include "pooler/gateway.h"

namespace pgflow::pooler {

using GatewayTcpStream = boost::beast::basic_stream<asio_support::tcp, asio_support::Executor>;
using GatewayTlsStream = boost::asio::ssl::stream<GatewayTcpStream>;
using GatewayRequest = boost::beast::http::request<boost::beast::http::string_body>;

// Accepts the WebSocket `request` asks for on `*stream` (what the HTTP parser read past the
// request is in `*buffer`), then relays the PostgreSQL protocol between it and a tunnelled
// session until either ends. `*stream` outlives the call.
template <class Stream>
asio_support::Task<void> BridgeWebSocket(Gateway* gateway, NetThread* thread, Stream* stream,
                                         const GatewayRequest* request,
                                         boost::beast::flat_buffer* buffer, Tunnel tunnel);

}  // namespace pgflow::pooler
