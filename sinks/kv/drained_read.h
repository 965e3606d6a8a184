#pragma once

// AsyncReadDrained: asio's async_read_some, minus a system call per request.
//
// Boost.Asio 1.18 (Boost 1.74) starts every read with an attempt at once, unless the previous
// read on the socket reported it "exhausted", which its socket receive does only at end of
// file. For a request/reply protocol the attempt nearly always fails with EAGAIN: the client
// sends its next request only after reading our reply. Measured on the kv listeners: two
// recvfrom per request, one of them EAGAIN, where redis-server makes one read.
//
// The operation here is asio's socket receive except for that report: a short read (fewer
// bytes than the buffer holds) also marks the socket exhausted, so the next read waits for
// the reactor. That is safe because asio registers sockets edge-triggered: data arriving after
// the short read raises a new edge, and the reactor then performs the read. An error or end of
// file completes the read as asio's does.
//
// It relies on asio's detail namespace, so it is used with the asio it was written against
// only; with any other version AsyncReadDrained is async_read_some.

#include <utility>  // before asio's awaitable.hpp (Boost 1.74 under g++ 12)

#include <boost/asio.hpp>
#include <boost/asio/version.hpp>
#include <cstddef>
#include <type_traits>

#if BOOST_ASIO_VERSION == 101800 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING)
#define PGFLOW_KV_DRAINED_READ 1
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#endif

namespace pgflow::kv_asio {

// A stream socket whose implementation AsyncReadDrained can reach (asio keeps it protected).
template <typename Protocol, typename Executor>
class Socket : public boost::asio::basic_stream_socket<Protocol, Executor> {
 public:
  using boost::asio::basic_stream_socket<Protocol, Executor>::basic_stream_socket;

#if PGFLOW_KV_DRAINED_READ
  auto& implementation() { return this->impl_.get_implementation(); }
#endif
};

#if PGFLOW_KV_DRAINED_READ
namespace internal {

namespace detail = boost::asio::detail;

class DrainedRecvOpBase : public detail::reactor_op {
 public:
  DrainedRecvOpBase(detail::socket_type socket, boost::asio::mutable_buffer buffer,
                    func_type complete)
      : reactor_op(boost::system::error_code(), &DrainedRecvOpBase::DoPerform, complete),
        socket_(socket),
        buffer_(buffer) {}

  static status DoPerform(reactor_op* base) {
    auto* o = static_cast<DrainedRecvOpBase*>(base);
    if (!detail::socket_ops::non_blocking_recv1(o->socket_, o->buffer_.data(), o->buffer_.size(), 0,
                                                /*is_stream=*/true, o->ec_,
                                                o->bytes_transferred_)) {
      return not_done;  // EAGAIN: wait for the reactor
    }
    // Fewer bytes than asked for (end of file and errors included): nothing more to read until
    // the next edge.
    return o->bytes_transferred_ < o->buffer_.size() ? done_and_exhausted : done;
  }

 private:
  detail::socket_type socket_;
  boost::asio::mutable_buffer buffer_;
};

// asio's reactive_socket_recv_op, on DrainedRecvOpBase.
template <typename Handler, typename IoExecutor>
class DrainedRecvOp : public DrainedRecvOpBase {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(DrainedRecvOp);

  DrainedRecvOp(detail::socket_type socket, boost::asio::mutable_buffer buffer, Handler& handler,
                const IoExecutor& io_ex)
      : DrainedRecvOpBase(socket, buffer, &DrainedRecvOp::DoComplete),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static void DoComplete(void* owner, detail::operation* base,
                         const boost::system::error_code& /*ec*/,
                         std::size_t /*bytes_transferred*/) {
    auto* o = static_cast<DrainedRecvOp*>(base);
    ptr p = {detail::addressof(o->handler_), o, o};
    detail::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // The handler is moved out before the operation's memory is released.
    detail::binder2<Handler, boost::system::error_code, std::size_t> handler(o->handler_, o->ec_,
                                                                             o->bytes_transferred_);
    p.h = detail::addressof(handler.handler_);
    p.reset();
    if (owner) {
      detail::fenced_block b(detail::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  Handler handler_;
  detail::handler_work<Handler, IoExecutor> work_;
};

}  // namespace internal
#endif

// Reads some bytes into `buffer`, as socket.async_read_some does (completion signature
// void(error_code, size_t)), without the immediate attempt after a short read. `reactor` is
// the socket's io_context's reactor (ReactorOf); the socket must be in non-blocking mode.
#if PGFLOW_KV_DRAINED_READ
using Reactor = boost::asio::detail::reactor;
inline Reactor* ReactorOf(boost::asio::io_context& context) {
  return &boost::asio::use_service<Reactor>(context);
}
#else
using Reactor = void;
inline Reactor* ReactorOf(boost::asio::io_context&) { return nullptr; }
#endif

template <typename Protocol, typename Executor, typename Token>
auto AsyncReadDrained(Socket<Protocol, Executor>& socket, Reactor* reactor,
                      boost::asio::mutable_buffer buffer, Token&& token) {
#if PGFLOW_KV_DRAINED_READ
  namespace detail = boost::asio::detail;
  auto& impl = socket.implementation();
  if ((impl.state_ & detail::socket_ops::non_blocking) == 0 || buffer.size() == 0) {
    return socket.async_read_some(buffer, std::forward<Token>(token));
  }
  return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      [&impl, reactor, buffer, ex = socket.get_executor()](auto handler) {
        using Handler = std::decay_t<decltype(handler)>;
        using Op = internal::DrainedRecvOp<Handler, Executor>;
        const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
        typename Op::ptr p = {detail::addressof(handler), Op::ptr::allocate(handler), 0};
        p.p = new (p.v) Op(impl.socket_, buffer, handler, ex);
        reactor->start_op(Reactor::read_op, impl.socket_, impl.reactor_data_, p.p, is_continuation,
                          /*allow_speculative=*/true);
        p.v = p.p = 0;
      },
      token);
#else
  (void)reactor;
  return socket.async_read_some(buffer, std::forward<Token>(token));
#endif
}

}  // namespace pgflow::kv_asio
