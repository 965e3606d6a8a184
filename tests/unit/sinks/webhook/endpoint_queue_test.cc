#include "sinks/webhook/endpoint_queue.h"

#include <gtest/gtest.h>

namespace pgflow {
namespace {

using namespace std::chrono_literals;

WebhookEvent Event(uint64_t number, std::vector<std::string> keys,
                   WebhookClock::time_point at = WebhookClock::time_point{}) {
  WebhookEvent e;
  e.number = number;
  e.id = std::to_string(number);
  for (const std::string& key : keys) e.AddKey(RowKeyHash(key));
  e.queued = at;
  return e;
}

std::vector<uint64_t> Numbers(const WebhookRequest* request) {
  std::vector<uint64_t> out;
  for (const WebhookEvent& e : request->events) out.push_back(e.number);
  return out;
}

const WebhookClock::time_point kNow = WebhookClock::time_point{} + 1h;

TEST(EndpointQueueTest, PerKeyHoldsARowBehindItsOutstandingEventAndLetsOthersGo) {
  EndpointQueue q({WebhookOrder::kPerKey, 1, 0ms, 16});
  q.Push(Event(0, {"a"}));
  q.Push(Event(1, {"a"}));
  q.Push(Event(2, {"b"}));
  std::vector<WebhookRequest*> sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 2u);  // a's first event and b's; a's second waits
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{0});
  EXPECT_EQ(Numbers(sent[1]), std::vector<uint64_t>{2});
  EXPECT_TRUE(q.Take(kNow, false).empty());
  EXPECT_EQ(q.events(), 3u);
  q.Finish(sent[1]);
  EXPECT_TRUE(q.Take(kNow, false).empty());  // b finishing frees nothing of a
  q.Finish(sent[0]);
  sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{1});
}

TEST(EndpointQueueTest, ARetryKeepsItsRowHeldAndGoesWhenDue) {
  EndpointQueue q({WebhookOrder::kPerKey, 1, 0ms, 16});
  q.Push(Event(0, {"a"}));
  q.Push(Event(1, {"a"}));
  q.Push(Event(2, {"b"}));
  std::vector<WebhookRequest*> sent = q.Take(kNow, false);
  q.Again(sent[0], kNow + 1s, /*endpoint_down=*/false);  // a 500 for this request alone
  q.Finish(sent[1]);
  q.Push(Event(3, {"c"}));
  sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);  // c goes ahead; a's second still waits behind the retry
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{3});
  EXPECT_EQ(q.NextDue(), kNow + 1s);
  sent = q.Take(kNow + 1s, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{0});
  EXPECT_EQ(sent[0]->in_flight, true);
}

TEST(EndpointQueueTest, AnEndpointThatIsDownGetsOnlyItsRetriesUntilOneSucceeds) {
  EndpointQueue q({WebhookOrder::kPerKey, 1, 0ms, 16});
  q.Push(Event(0, {"a"}));
  std::vector<WebhookRequest*> sent = q.Take(kNow, false);
  q.Again(sent[0], kNow + 1s, /*endpoint_down=*/true);
  q.Push(Event(1, {"b"}));
  EXPECT_TRUE(q.Take(kNow + 500ms, false).empty());
  sent = q.Take(kNow + 1s, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{0});
  q.Finish(sent[0]);
  sent = q.Take(kNow + 1s, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{1});
}

TEST(EndpointQueueTest, ABarrierGoesAloneAfterEverythingBeforeItAndBeforeAnythingAfter) {
  EndpointQueue q({WebhookOrder::kPerKey, 10, 0ms, 16});
  q.Push(Event(0, {"a"}));
  q.Push(Event(1, {}));  // a TRUNCATE
  q.Push(Event(2, {"b"}));
  std::vector<WebhookRequest*> sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{0});
  q.Finish(sent[0]);
  sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{1});
  EXPECT_TRUE(q.Take(kNow, false).empty());
  q.Finish(sent[0]);
  sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{2});
}

TEST(EndpointQueueTest, BatchesGatherRowsInOrderAndAShortOneLingers) {
  EndpointQueue q({WebhookOrder::kPerKey, 3, 100ms, 16});
  q.Push(Event(0, {"a"}, kNow));
  q.Push(Event(1, {"a"}, kNow));  // the same row in one batch keeps its order within it
  EXPECT_TRUE(q.Take(kNow + 50ms, false).empty());
  EXPECT_EQ(q.NextDue(), kNow + 100ms);
  q.Push(Event(2, {"b"}, kNow));
  q.Push(Event(3, {"c"}, kNow));
  std::vector<WebhookRequest*> sent = q.Take(kNow + 50ms, false);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), (std::vector<uint64_t>{0, 1, 2}));
  sent = q.Take(kNow + 50ms, /*flush=*/true);  // the short rest goes when flushed
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(Numbers(sent[0]), std::vector<uint64_t>{3});
}

TEST(EndpointQueueTest, FifoSendsOneRequestAtATimeAndNoneAsManyAsAllowed) {
  EndpointQueue fifo({WebhookOrder::kFifo, 1, 0ms, 16});
  EndpointQueue none({WebhookOrder::kNone, 1, 0ms, 2});
  for (uint64_t i = 0; i < 4; ++i) {
    fifo.Push(Event(i, {"k" + std::to_string(i)}));
    none.Push(Event(i, {"same"}));
  }
  EXPECT_EQ(fifo.Take(kNow, false).size(), 1u);
  EXPECT_EQ(fifo.Take(kNow, false).size(), 0u);
  EXPECT_EQ(none.Take(kNow, false).size(), 2u);  // concurrency, whatever the rows
  EXPECT_EQ(none.in_flight(), 2u);
}

TEST(EndpointQueueTest, ARowStuckInFrontHoldsNoOtherRowBackHoweverManyPassIt) {
  EndpointQueue q({WebhookOrder::kPerKey, 1, 0ms, 4});
  q.Push(Event(0, {"stuck"}));
  q.Push(Event(1, {"stuck"}));
  std::vector<WebhookRequest*> sent = q.Take(kNow, false);
  ASSERT_EQ(sent.size(), 1u);
  q.Again(sent[0], kNow + 24h, /*endpoint_down=*/false);
  for (uint64_t i = 2; i < 10002; ++i) q.Push(Event(i, {"row" + std::to_string(i)}));
  size_t delivered = 0;
  for (sent = q.Take(kNow, false); !sent.empty(); sent = q.Take(kNow, false)) {
    for (WebhookRequest* request : sent) {
      q.Finish(request);
      ++delivered;
    }
  }
  EXPECT_EQ(delivered, 10000u);
  EXPECT_EQ(q.queued(), 1u);  // the stuck row's second event, behind its retry
  EXPECT_EQ(q.NextDue(), kNow + 24h);
}

}  // namespace
}  // namespace pgflow
