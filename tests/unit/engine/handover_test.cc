// A cutover's handover (engine/run_status.h, RequestHandover; engine/admin_server.h, POST
// /handover): taken only while the pipeline streams, once, at one position; and the requests
// of a hold (POST /hold, /release) as the admin endpoint takes them.

#include <chrono>
#include <string>

#include "engine/admin_server.h"
#include "engine/metrics.h"
#include "engine/run_status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgflow {
namespace {

using ::testing::HasSubstr;

constexpr std::chrono::milliseconds kTimeout{5000};

PipelineView Streaming() {
  PipelineView view;
  view.started = true;
  view.streaming = true;
  return view;
}

TEST(HandoverTest, TakenOnlyWhileStreamingAndAtOnePosition) {
  RunStatus status("shop");
  const Lsn at = *Lsn::Parse("0/16B3748");
  EXPECT_TRUE(absl::IsFailedPrecondition(status.RequestHandover(at)));  // starting
  status.SetPhase(RunPhase::kRunning);
  status.Attach([] {
    PipelineView copying = Streaming();
    copying.streaming = false;
    copying.snapshot_running = true;
    return copying;
  });
  EXPECT_TRUE(absl::IsFailedPrecondition(status.RequestHandover(at)));  // copying
  status.Detach(PipelineView());
  status.Attach(Streaming);
  EXPECT_FALSE(status.HandoverAt().IsValid());
  ASSERT_TRUE(status.RequestHandover(at).ok());
  EXPECT_EQ(status.HandoverAt(), at);
  EXPECT_TRUE(status.RequestHandover(at).ok());  // asked again: the same
  absl::Status other = status.RequestHandover(*Lsn::Parse("0/16B3750"));
  EXPECT_TRUE(absl::IsFailedPrecondition(other));
  EXPECT_THAT(other.message(), HasSubstr("already hands over at 0/16B3748"));
  EXPECT_EQ(status.ToJson()["handover_at"], "0/16B3748");
  status.Detach(Streaming());
}

TEST(HandoverTest, ThroughTheAdminEndpoint) {
  MetricsRegistry metrics;
  RunStatus status("shop");
  AdminServer server(AdminServerOptions{"127.0.0.1:0"}, &metrics, &status);
  ASSERT_TRUE(server.Start().ok());
  const std::string listen = "127.0.0.1:" + std::to_string(server.port());

  absl::StatusOr<HttpReply> reply = AdminRequest(listen, "POST", "/handover?at=0/100", kTimeout);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->status, 409);  // not streaming
  EXPECT_THAT(reply->body, HasSubstr("is not streaming"));

  status.SetPhase(RunPhase::kRunning);
  status.Attach(Streaming);
  reply = AdminRequest(listen, "POST", "/handover?at=nowhere", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 400);
  reply = AdminRequest(listen, "GET", "/handover?at=0/100", kTimeout);  // only POST moves it
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 404);
  EXPECT_FALSE(status.HandoverAt().IsValid());
  reply = AdminRequest(listen, "POST", "/handover?at=0/100", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 202);
  EXPECT_THAT(reply->body, HasSubstr("handing over once confirmed through 0/100"));
  EXPECT_EQ(status.HandoverAt(), *Lsn::Parse("0/100"));
  // A hold: only further once in place, then released; its bounds are checked.
  reply = AdminRequest(listen, "POST", "/hold?at=0/200&seconds=5", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 202) << reply->body;
  EXPECT_EQ(status.hold().state, HoldState::kWaiting);
  EXPECT_EQ(status.ToJson()["hold"]["state"], "waiting");
  reply = AdminRequest(listen, "POST", "/hold?at=0/100", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 409);
  EXPECT_THAT(reply->body, HasSubstr("a hold moves only further"));
  reply = AdminRequest(listen, "POST", "/hold?at=0/300&seconds=100000", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 400);
  reply = AdminRequest(listen, "POST", "/release", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(status.hold().state, HoldState::kNone);
  // Any other POST is refused.
  reply = AdminRequest(listen, "POST", "/status", kTimeout);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->status, 405);
  server.Stop();
  status.Detach(Streaming());
}

}  // namespace
}  // namespace pgflow
