// cluster/etcd.h against real etcd members (Debian's etcd-server): three, shared by the tests
// of this file; the consensus the cluster's nodes rely on is etcd's, so what is checked here is
// that pgflow asks it the right questions and reads its answers right, members down included.

#include "cluster/etcd.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/support/etcd_cluster.h"

namespace pgflow::cluster {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EtcdCluster;
using testing::WaitFor;

class EtcdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { members_ = new EtcdCluster(3); }
  static void TearDownTestSuite() {
    delete members_;
    members_ = nullptr;
  }
  // A client of every member, first `first`'s.
  static Etcd Client(int first = 0) {
    std::vector<std::string> urls;
    for (int k = 0; k < members_->size(); ++k) urls.push_back(members_->url((first + k) % 3));
    return Etcd(urls, milliseconds(2000));
  }
  // A key of the test's own.
  static std::string Key(const std::string& name) {
    return absl::StrCat("/pgflow-test/", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "/", name);
  }

  static EtcdCluster* members_;
};
EtcdCluster* EtcdTest::members_ = nullptr;

TEST_F(EtcdTest, KeysArePutReadListedAndDeletedWithAnyBytes) {
  Etcd etcd = Client();
  const std::string binary("a\0b\xff", 4);
  ASSERT_TRUE(etcd.Put(Key("one"), "1").ok());
  ASSERT_TRUE(etcd.Put(Key("two"), binary).ok());
  ASSERT_TRUE(etcd.Put(Key("two/nested"), "").ok());

  absl::StatusOr<std::optional<EtcdKeyValue>> one = etcd.Get(Key("one"));
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(one->has_value());
  EXPECT_EQ((*one)->value, "1");
  EXPECT_GT((*one)->create_revision, 0);
  EXPECT_EQ((*one)->lease, 0);

  absl::StatusOr<std::optional<EtcdKeyValue>> missing = etcd.Get(Key("none"));
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  absl::StatusOr<std::vector<EtcdKeyValue>> all = etcd.List(Key(""));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].key, Key("one"));
  EXPECT_EQ((*all)[1].value, binary);
  EXPECT_EQ((*all)[2].key, Key("two/nested"));
  EXPECT_EQ((*all)[2].value, "");

  ASSERT_TRUE(etcd.Delete(Key("one")).ok());
  EXPECT_FALSE(etcd.Get(Key("one"))->has_value());
}

TEST_F(EtcdTest, OnlyOneOfManyCreatesOfAKeyWins) {
  // Several clients race to create the same key (as nodes race for the leader key): etcd lets
  // exactly one through, and every other learns it lost.
  std::vector<std::thread> racers;
  std::atomic<int> won{0}, lost{0}, failed{0};
  for (int i = 0; i < 6; ++i) {
    racers.emplace_back([&, i] {
      Etcd etcd = Client(i % 3);
      absl::StatusOr<bool> created = etcd.Create(Key("leader"), absl::StrCat("node", i), 0);
      if (!created.ok()) {
        ++failed;
      } else if (*created) {
        ++won;
      } else {
        ++lost;
      }
    });
  }
  for (std::thread& t : racers) t.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(lost.load(), 5);
  EXPECT_EQ(failed.load(), 0);
}

TEST_F(EtcdTest, AReplaceOrDeleteTakesEffectOnlyWhileTheKeyHoldsWhatWasRead) {
  Etcd etcd = Client();
  ASSERT_TRUE(etcd.Put(Key("leader"), "n1").ok());
  EXPECT_FALSE(*etcd.Replace(Key("leader"), "n2", "n3", 0));
  EXPECT_EQ((*etcd.Get(Key("leader")))->value, "n1");
  EXPECT_TRUE(*etcd.Replace(Key("leader"), "n1", "n2", 0));
  EXPECT_EQ((*etcd.Get(Key("leader")))->value, "n2");
  EXPECT_FALSE(*etcd.DeleteIf(Key("leader"), "n1"));
  EXPECT_TRUE(etcd.Get(Key("leader"))->has_value());
  EXPECT_TRUE(*etcd.DeleteIf(Key("leader"), "n2"));
  EXPECT_FALSE(etcd.Get(Key("leader"))->has_value());
  EXPECT_FALSE(*etcd.Replace(Key("leader"), "n2", "n3", 0));  // (gone: nothing to replace)
}

TEST_F(EtcdTest, AKeyHeldByALeaseGoesWhenTheLeaseIsNotRenewed) {
  Etcd etcd = Client();
  absl::StatusOr<int64_t> lease = etcd.Grant(2);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(*etcd.Create(Key("leader"), "n1", *lease));
  EXPECT_EQ((*etcd.Get(Key("leader")))->lease, *lease);
  // Renewed, it stays past its TTL.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(milliseconds(500));
    absl::StatusOr<int64_t> left = etcd.KeepAlive(*lease);
    ASSERT_TRUE(left.ok()) << left.status();
    EXPECT_GT(*left, 0);
  }
  EXPECT_TRUE(etcd.Get(Key("leader"))->has_value());
  // Not renewed, it goes, and the lease with it.
  std::this_thread::sleep_for(seconds(3) + milliseconds(500));
  EXPECT_FALSE(etcd.Get(Key("leader"))->has_value());
  absl::StatusOr<int64_t> left = etcd.KeepAlive(*lease);
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_EQ(*left, 0);
  // Another may then take the key.
  EXPECT_TRUE(*etcd.Create(Key("leader"), "n2", 0));
}

TEST_F(EtcdTest, ARevokedLeaseTakesItsKeysAtOnce) {
  Etcd etcd = Client();
  absl::StatusOr<int64_t> lease = etcd.Grant(60);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(etcd.Put(Key("member"), "{}", *lease).ok());
  ASSERT_TRUE(etcd.Revoke(*lease).ok());
  EXPECT_FALSE(etcd.Get(Key("member"))->has_value());
  EXPECT_TRUE(etcd.Revoke(*lease).ok());  // (again: already gone is no error)
}

TEST_F(EtcdTest, ClientsGoOnThroughTheOtherMembersWhenOneIsDownOrStopped) {
  Etcd etcd = Client(0);
  ASSERT_TRUE(etcd.Put(Key("k"), "before").ok());
  members_->Kill(0);
  // (If it led, the others elect a leader first: a put may time out meanwhile.)
  ASSERT_TRUE(WaitFor([&] { return etcd.Put(Key("k"), "while one is down").ok(); }, seconds(15)));
  EXPECT_EQ((*etcd.Get(Key("k")))->value, "while one is down");
  EXPECT_NE(etcd.endpoint(), members_->url(0));
  members_->Start(0);

  // A member that stops answering (SIGSTOP) costs a timeout, then the next one answers.
  Etcd paused = Client(1);
  members_->Pause(1);
  absl::StatusOr<std::optional<EtcdKeyValue>> read = paused.Get(Key("k"));
  members_->Resume(1);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ((*read)->value, "while one is down");
}

TEST_F(EtcdTest, NoMemberReachableIsAnErrorNamingThem) {
  Etcd etcd({"http://127.0.0.1:1"}, milliseconds(500));
  absl::StatusOr<std::optional<EtcdKeyValue>> read = etcd.Get("/x");
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("127.0.0.1:1"), std::string::npos) << read.status();
}

}  // namespace
}  // namespace pgflow::cluster
