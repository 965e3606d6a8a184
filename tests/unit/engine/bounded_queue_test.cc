#include "engine/bounded_queue.h"

#include <atomic>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace pgflow {
namespace {

TEST(BoundedQueueTest, AFullQueueBlocksItsProducerUntilAConsumerMakesRoom) {
  BoundedQueue<std::string> queue(100);
  std::string a = "a";
  ASSERT_EQ(queue.Push(&a, 60, absl::ZeroDuration()), BoundedQueue<std::string>::PushResult::kOk);
  std::string b = "b";
  // 60 + 60 > 100: no room.
  EXPECT_EQ(queue.Push(&b, 60, absl::Milliseconds(20)),
            BoundedQueue<std::string>::PushResult::kTimeout);
  EXPECT_EQ(b, "b");  // left untouched for the retry
  EXPECT_EQ(queue.used_bytes(), 60u);

  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    std::string c = "c";
    EXPECT_EQ(queue.Push(&c, 60, absl::Seconds(10)), BoundedQueue<std::string>::PushResult::kOk);
    pushed = true;
  });
  // A fixed interval on purpose: what is tested is that the producer stays blocked meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(pushed.load());
  EXPECT_EQ(queue.Pop(absl::ZeroDuration()), "a");
  producer.join();
  EXPECT_TRUE(pushed.load());
  EXPECT_EQ(queue.Pop(absl::ZeroDuration()), "c");
}

TEST(BoundedQueueTest, AnItemLargerThanTheCapacityPassesAlone) {
  BoundedQueue<int> queue(10);
  int big = 1;
  EXPECT_EQ(queue.Push(&big, 1000, absl::ZeroDuration()), BoundedQueue<int>::PushResult::kOk);
  int small = 2;
  EXPECT_EQ(queue.Push(&small, 1, absl::ZeroDuration()), BoundedQueue<int>::PushResult::kTimeout);
  EXPECT_EQ(queue.Pop(absl::ZeroDuration()), 1);
  EXPECT_EQ(queue.Push(&small, 1, absl::ZeroDuration()), BoundedQueue<int>::PushResult::kOk);
}

TEST(BoundedQueueTest, CloseWakesWaitersAndKeepsWhatIsQueued) {
  BoundedQueue<int> queue(10);
  int one = 1;
  queue.Push(&one, 10, absl::ZeroDuration());
  std::thread producer([&] {
    int two = 2;
    EXPECT_EQ(queue.Push(&two, 10, absl::Seconds(10)), BoundedQueue<int>::PushResult::kClosed);
  });
  // A fixed interval on purpose: it lets the producer become a waiter, which nothing outside
  // the queue can observe (had it not yet pushed, Close would refuse it all the same).
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  queue.Close();
  producer.join();
  EXPECT_FALSE(queue.closed_and_drained());
  EXPECT_EQ(queue.Pop(absl::ZeroDuration()), 1);
  EXPECT_EQ(queue.Pop(absl::ZeroDuration()), std::nullopt);
  EXPECT_TRUE(queue.closed_and_drained());
}

}  // namespace
}  // namespace pgflow
