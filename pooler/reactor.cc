#include "pooler/reactor.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "engine/log.h"
#include "engine/str_cat.h"

namespace pgflow::pooler {

namespace asio = asio_support::asio;

absl::Status Reactor::Open() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return absl::InternalError(Cat("pooler: cannot create an epoll set: ", strerror(errno)));
  watch_.emplace(context_->get_executor());
  boost::system::error_code ec;
  watch_->assign(epfd_, ec);
  if (ec) {
    watch_.reset();
    ::close(std::exchange(epfd_, -1));
    return absl::InternalError(Cat("pooler: cannot watch an epoll set: ", ec.message()));
  }
  Wait();
  return absl::OkStatus();
}

void Reactor::Close() {
  if (watch_) {
    boost::system::error_code ec;
    watch_->close(ec);  // closes epfd_
    watch_.reset();
    epfd_ = -1;
  }
  if (epfd_ >= 0) ::close(std::exchange(epfd_, -1));
}

void Reactor::Wait() {
  watch_->async_wait(asio::posix::descriptor_base::wait_read,
                     [this](const boost::system::error_code& ec) {
                       if (ec) {
                         if (ec != asio::error::operation_aborted) {
                           LogError("pooler: waiting on the relay's epoll set failed: %s",
                                    ec.message());
                         }
                         return;
                       }
                       Turn();
                     });
}

void Reactor::Turn() {
  std::array<epoll_event, 256> ready;
  const int n = epoll_wait(epfd_, ready.data(), static_cast<int>(ready.size()), 0);
  for (int i = 0; i < n; ++i) {
    const int fd = ready[i].data.fd;
    Target* target = static_cast<size_t>(fd) < slots_.size() ? slots_[fd].target() : nullptr;
    if (target != nullptr) {
      target->OnReady(fd, ready[i].events);
    } else {
      // Nobody's (an idle server connection the server wrote to or closed): out of the set,
      // or level-triggered epoll would report it every turn. Its next taker registers it.
      epoll_event none{};
      if (epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &none) == 0) taken_out_.insert(fd);
      if (static_cast<size_t>(fd) < slots_.size()) slots_[fd].set_events(0);
    }
  }
  if (!watch_) return;
  if (n == static_cast<int>(ready.size())) {
    // More may be ready: asio's registration of the set is edge-triggered, and would not
    // report what this turn left behind. Another turn first, then the wait.
    asio::post(*context_, [this] {
      if (watch_) Turn();
    });
    return;
  }
  Wait();
}

bool Reactor::Add(int fd, uint32_t events, Target* target) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  taken_out_.erase(fd);
  slot(fd) = {target, events};
  return true;
}

void Reactor::Remove(int fd) {
  epoll_event none{};
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &none);
  if (static_cast<size_t>(fd) < slots_.size()) slots_[fd] = {};
}

bool Reactor::Modify(int fd, uint32_t events) {
  Slot& s = slot(fd);
  if (s.events() == events) return true;
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) != 0) return false;
  s.set_events(events);
  return true;
}

bool Reactor::Watch(int fd, int* watched_by, uint32_t events, Target* target) {
  if (*watched_by != epfd_) {
    if (*watched_by >= 0) {
      // Another thread's set: it gives the socket up (a report it already took is stale).
      epoll_event none{};
      epoll_ctl(*watched_by, EPOLL_CTL_DEL, fd, &none);
    }
    *watched_by = -1;
    if (!Add(fd, events, target)) {
      if (errno != EEXIST) return false;
      // Registered here under an earlier life of the number: set as wanted.
      Slot& s = slot(fd);
      s = {target, 0u};
      s.ForgetEvents();
      if (!Modify(fd, events)) return false;
    }
    *watched_by = epfd_;
    return true;
  }
  if (taken_out_.contains(fd)) {
    *watched_by = -1;
    return Watch(fd, watched_by, events, target);
  }
  slot(fd).set_target(target);
  return Modify(fd, events);
}

void Reactor::Unwatch(int fd, uint32_t events) {
  if (static_cast<size_t>(fd) >= slots_.size()) return;
  slots_[fd].set_target(nullptr);
  if (!taken_out_.contains(fd)) Modify(fd, events);
}

}  // namespace pgflow::pooler
