#pragma once

// The relay's sockets of one network thread, in an epoll set of their own, level-triggered,
// each registered once: a logged-in client's socket from login to its end, a server
// connection's from its first transaction on this thread until it moves to another thread or
// closes. asio watches only the set. A turn takes what epoll_wait reports and hands each ready
// socket to its owner (a Target) there and then, so that the relay's work for every ready
// socket runs in one pass, as pgbouncer's does, with no handler queued per read or write.
//
// Through asio, each wait re-armed the socket (epoll_ctl), a server read that found nothing
// cost a recv, and every completion went through asio's queue, interleaved with a poll of
// its epoll set: here a transaction costs its two reads and two writes, and a turn one
// epoll_wait on the set beside asio's own, whatever the number of transactions it serves.
//
// Registrations are keyed by descriptor. A descriptor reported with no owner (an idle server
// connection that the server closed, or sent an error before closing) is taken out of the
// set and listed: whoever takes the connection next on this thread registers it again
// (Watch). A report may be stale (the socket was handed on meanwhile, or its number reused):
// owners read and write only what the kernel gives without waiting, so a stale report costs
// one read that finds nothing.
//
// Everything here is touched from the thread's own io_context only, except Forget's
// epoll_ctl on another thread's set, which the kernel allows.

#include <sys/epoll.h>

#include <cassert>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "engine/asio_support.h"

namespace pgflow::pooler {

class Reactor {
 public:
  class Target {
   public:
    // `fd` is ready: `events` as epoll reported them.
    virtual void OnReady(int fd, uint32_t events) = 0;

   protected:
    ~Target() = default;
  };

  static constexpr uint32_t kRead = EPOLLIN | EPOLLRDHUP;
  static constexpr uint32_t kWrite = EPOLLOUT;

  explicit Reactor(asio_support::asio::io_context* context) : context_(context) {}
  ~Reactor() { Close(); }
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Creates the set and starts watching it.
  absl::Status Open();
  void Close();
  int epfd() const { return epfd_; }

  // Registers `fd` for `events`, owned by `target`; false (errno set) when epoll refused.
  bool Add(int fd, uint32_t events, Target* target);
  // Takes `fd` out of the set and forgets its owner (before it is closed).
  void Remove(int fd);
  // Forgets `fd`'s owner and registration: it is about to be closed, which takes it out.
  void Forget(int fd) {
    if (static_cast<size_t>(fd) < slots_.size()) slots_[fd] = {};
  }
  // A server connection's socket for `target` on this thread: registered here if it is not
  // (*watched_by: the set it was last registered in, updated; another thread's set gives it
  // up), again if a report without owner took it out, and set to `events`. False (errno set)
  // when epoll refused.
  bool Watch(int fd, int* watched_by, uint32_t events, Target* target);
  // Leaves `fd` registered for `events` without an owner (an idle server connection: a
  // report takes it out of the set).
  void Unwatch(int fd, uint32_t events);
  // Sets the events `fd` is watched for, when they differ.
  bool Modify(int fd, uint32_t events);
  // The events `fd` is registered for here.
  uint32_t events(int fd) const {
    return static_cast<size_t>(fd) < slots_.size() ? slots_[fd].events() : 0;
  }

 private:
  // A descriptor's owner and the events it is registered for, in one word: the events in the
  // low bits the owner's alignment leaves free. A slot per descriptor number and per thread,
  // so its size is paid by every client once per network thread (8 bytes, not 16).
  class Slot {
   public:
    Slot() = default;
    Slot(Target* target, uint32_t events) : word_(Word(target, Bits(events))) {}
    Target* target() const { return reinterpret_cast<Target*>(word_ & ~kMask); }
    // The events (kRead, kWrite, both or none), or ~0 after ForgetEvents.
    uint32_t events() const {
      if ((word_ & kUnknown) != 0) return ~uint32_t{0};
      return ((word_ & kReadBit) != 0 ? kRead : 0) | ((word_ & kWriteBit) != 0 ? kWrite : 0);
    }
    void set_target(Target* target) { word_ = Word(target, word_ & kMask); }
    void set_events(uint32_t events) { word_ = Word(target(), Bits(events)); }
    // Matches no events, so that the next Modify registers them whatever they are.
    void ForgetEvents() { word_ |= kUnknown; }

   private:
    static constexpr uintptr_t kReadBit = 1, kWriteBit = 2, kUnknown = 4, kMask = 7;
    static_assert(alignof(Target) >= 8);  // (its vtable pointer's)
    static uintptr_t Word(Target* target, uintptr_t bits) {
      return reinterpret_cast<uintptr_t>(target) | bits;
    }
    // (kRead, kWrite or both: EPOLLRDHUP goes with EPOLLIN, as kRead has it.)
    static uintptr_t Bits(uint32_t events) {
      assert((events & ~(kRead | kWrite)) == 0);
      assert(((events & EPOLLIN) == 0) == ((events & EPOLLRDHUP) == 0));
      return ((events & EPOLLIN) != 0 ? kReadBit : 0) | ((events & EPOLLOUT) != 0 ? kWriteBit : 0);
    }
    uintptr_t word_ = 0;
  };
  void Wait();
  void Turn();
  Slot& slot(int fd) {
    if (static_cast<size_t>(fd) >= slots_.size()) slots_.resize(static_cast<size_t>(fd) + 1024);
    return slots_[fd];
  }

  asio_support::asio::io_context* context_;
  int epfd_ = -1;
  std::optional<asio_support::asio::posix::basic_stream_descriptor<asio_support::Executor>> watch_;
  std::vector<Slot> slots_;                // by descriptor
  absl::flat_hash_set<int> taken_out_;     // reported without owner: out of the set
};

}  // namespace pgflow::pooler
