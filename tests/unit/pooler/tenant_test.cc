#include "pooler/tenant.h"

#include <chrono>

#include "gtest/gtest.h"

namespace pgflow::pooler {
namespace {

using std::chrono::milliseconds;

// A second's worth at once, then a turn every 1/rate, each taken in order: the eleventh query
// of a quiet tenant at 10 a second waits 100 ms, the twelfth 200 ms; a second later the turns
// are free again.
TEST(QueryPaceTest, ASecondsWorthAtOnceThenOneTurnEachInterval) {
  QueryPace pace;
  const QueryPace::Clock::time_point t0 = QueryPace::Clock::now();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(pace.Take(10, t0).count(), 0) << i;
  EXPECT_EQ(pace.Take(10, t0), milliseconds(100));
  EXPECT_EQ(pace.Take(10, t0), milliseconds(200));
  // The two turns waited for are taken: 1.3 s on, the window is a second's worth past them.
  EXPECT_EQ(pace.Take(10, t0 + milliseconds(1300)).count(), 0);
  // No limit (a RELOAD set 0 meanwhile): nothing waits, and nothing divides by zero.
  EXPECT_EQ(pace.Take(0, t0).count(), 0);
}

}  // namespace
}  // namespace pgflow::pooler
