#pragma once

// What pgflow's servers on Boost.Asio share (the admin endpoint, the kv cache's listeners):
// the executor types their coroutines, sockets and timers name, and the endpoint of a listen
// address.
//
// Every coroutine, socket and timer runs on an io_context and names that executor type rather
// than asio's default any_io_executor: the type-erased executor costs a virtual dispatch and an
// executor copy on each completion, a visible share of a request's instructions.

#include <utility>  // before asio's awaitable.hpp (Boost 1.74 under g++ 12)

#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <string>

#include "absl/status/statusor.h"

namespace pgflow::asio_support {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

using Executor = asio::io_context::executor_type;
template <typename T>
using Task = asio::awaitable<T, Executor>;
inline constexpr asio::use_awaitable_t<Executor> kUseTask;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<tcp, Executor>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Executor>;

// The endpoint to bind for `address` (engine/listen_address.h); an error names the address.
absl::StatusOr<tcp::endpoint> ParseEndpoint(const std::string& address);

}  // namespace pgflow::asio_support

// Around the definition of a coroutine that g++ 12 warns about, -Wmismatched-new-delete
// silenced there alone: after inlining asio's awaitable frame allocator (whose operator new
// reaches the global one) it calls the frame's class-specific operator delete mismatched. It is
// not: both recycle asio's per-thread frame memory. A false positive (GCC bug 109224), not
// fixed in Debian 12's g++.
//   PGFLOW_ASIO_COROUTINE_BEGIN
//   Task<bool> Session::Login() { ... }
//   PGFLOW_ASIO_COROUTINE_END
#if defined(__GNUC__) && !defined(__clang__)
#define PGFLOW_ASIO_COROUTINE_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmismatched-new-delete\"")
#define PGFLOW_ASIO_COROUTINE_END _Pragma("GCC diagnostic pop")
#else
#define PGFLOW_ASIO_COROUTINE_BEGIN
#define PGFLOW_ASIO_COROUTINE_END
#endif
