// `pgflow cutover` as a user runs it: an application (pgbench) writes through `pgflow pooler`
// to database A while a pipeline copies A into B on another server; the cutover moves the
// application to B mid-load. No transaction may fail, B must hold every one, and A must take no
// write after the switch. Also what makes it refuse, change nothing, or give up and undo.
//
// Servers: the two shared clusters (A on the first, B on the second), one pooler per test.

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/support/pooler_support.h"
#include "tests/integration/support/test_support.h"

namespace pgflow::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTrustUsers[] = "\"postgres\" \"\"\n";

TestCluster& A() { return SharedCluster(0); }
TestCluster& B() { return SharedCluster(1); }

// A database `name` on A and on B, a pipeline copying the first into the second (with an admin
// endpoint), and a pooler whose database `app` points at A (as `server_user`, when given).
class Migration {
 public:
  explicit Migration(const std::string& name, const std::string& server_user = "")
      : name_(name), admin_port_(FreeLoopbackPort()) {
    Sql(A().Url()).Exec("CREATE DATABASE " + name);
    Sql(B().Url()).Exec("CREATE DATABASE " + name);
    yaml_ = dir_.File("pipeline.yaml");
    WriteFile(yaml_, absl::StrCat("pipeline: ", name, "\nsource:\n  postgres:\n    url: ", a_url(),
                                  "\n    tables: [public.*]\n    status_interval: 200ms\n",
                                  "sinks:\n  target: {postgres: {url: ", b_url(),
                                  "}, flush_interval: 20ms}\n",
                                  "admin: {listen: 127.0.0.1:", admin_port_, "}\n"));
    pooler_ = std::make_unique<PoolerProcess>("trust", kTrustUsers,
                                              Database("app", "transaction", 10, name,
                                                       server_user));
  }
  ~Migration() {
    if (pgflow_ != nullptr) {
      pgflow_->Signal(SIGTERM);
      pgflow_->Wait(std::chrono::seconds(30));
    }
    // Leave A and B writable for whatever runs next on the shared clusters.
    Sql(A().Url()).Exec("ALTER DATABASE " + name_ + " RESET default_transaction_read_only");
    Sql(B().Url()).Exec("ALTER DATABASE " + name_ + " RESET default_transaction_read_only");
  }

  std::string a_url() const { return A().Url(name_); }
  std::string b_url() const { return B().Url(name_); }
  const std::string& yaml() const { return yaml_; }
  std::string log() const { return dir_.File("pgflow.log"); }
  std::string file(const std::string& name) const { return dir_.File(name); }
  PoolerProcess& pooler() { return *pooler_; }
  std::string console_url() const { return pooler_->Url("pgflow"); }
  // The pipeline's /status ("" while nothing answers).
  std::string Status() const {
    return Curl(absl::StrCat("http://127.0.0.1:", admin_port_, "/status")).body;
  }

  // pgbench's tables on A (through the pooler), pgbench_history with a serial key so that B's
  // sequence matters after the switch.
  void InitPgbench() {
    std::string output;
    ASSERT_EQ(Shell(absl::StrCat(PgBin(), "/pgbench -q -i -s 1 -h 127.0.0.1 -p ", A().port(),
                                 " -U postgres ", name_),
                    &output),
              0)
        << output;
    Sql(a_url()).Exec("ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY");
  }

  // Starts `pgflow run` and waits until it streams.
  void StartPipeline() {
    pgflow_ = StartPgflowUntilLogged({"run", yaml_}, log(), {}, "streaming from");
  }

  // `pgflow cutover` with `extra` arguments: its exit status, its output in *output.
  int Cutover(const std::vector<std::string>& extra, std::string* output) {
    std::vector<std::string> args = {"cutover",     yaml_,        "--pooler",
                                     console_url(), "--database", "app"};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunPgflow(args, output);
  }

 private:
  std::string name_;
  TempDir dir_;
  int admin_port_;
  std::string yaml_;
  std::unique_ptr<PoolerProcess> pooler_;
  std::unique_ptr<PgflowProcess> pgflow_;
};

// The `paused` column of database app in the pooler's SHOW DATABASES ("" when not shown).
std::string Paused(const PoolerProcess& pooler) {
  for (const absl::string_view line : absl::StrSplit(Console(pooler, "SHOW DATABASES"), '\n')) {
    const std::vector<std::string> columns = absl::StrSplit(line, '|');
    if (columns.size() > 11 && columns[0] == "app") return columns[11];
  }
  return "";
}

// A number pgbench printed after `label` ("number of failed transactions: "), or -1.
int64_t PgbenchNumber(const std::string& output, const std::string& label) {
  const size_t at = output.find(label);
  if (at == std::string::npos) return -1;
  return std::stoll(output.substr(at + label.size()));
}

class CutoverUnderLoad : public ::testing::TestWithParam<const char*> {};

// pgbench's load through the pooler for `seconds`, its output in *output.
std::thread Pgbench(Migration& m, const std::string& mode, int seconds, std::string* output) {
  // About 500 transactions a second from 8 clients, each on a thread of its own (pgbench's
  // prepared mode blocks a thread in the middle of a transaction).
  return std::thread([&m, mode, seconds, output] {
    Shell(absl::StrCat(PgBin(), "/pgbench -n -c 8 -j 8 -R 500 -T ", seconds, " -M ", mode,
                       " -h 127.0.0.1 -p ", m.pooler().port(), " -U postgres app"),
          output);
  });
}

// The transactions pgbench processed, once it says none failed.
int64_t ProcessedNoneFailed(const std::string& pgbench_output) {
  EXPECT_EQ(PgbenchNumber(pgbench_output, "number of failed transactions: "), 0) << pgbench_output;
  return PgbenchNumber(pgbench_output, "number of transactions actually processed: ");
}

// What pgbench did is all in the database at `url`: a history row per transaction processed,
// and balances that add up.
void ExpectHoldsEveryTransaction(const std::string& url, int64_t processed) {
  Sql db(url);
  EXPECT_EQ(db.Scalar("SELECT count(*) FROM pgbench_history"), std::to_string(processed)) << url;
  EXPECT_EQ(db.Scalar("SELECT count(DISTINCT id) FROM pgbench_history"), std::to_string(processed));
  for (const char* table : {"accounts", "tellers", "branches"}) {
    const std::string prefix = std::string(table).substr(0, 1);
    EXPECT_EQ(db.Scalar(absl::StrCat("SELECT (SELECT sum(", prefix, "balance) FROM pgbench_", table,
                                     ") = (SELECT sum(delta) FROM pgbench_history)")),
              "t")
        << table << " in " << url;
  }
}

// Waits until the stream back has brought the database at `to` level with `from`'s pgbench
// tables (every history row, the same balances).
bool WaitLevel(const std::string& from, const std::string& to) {
  const std::string digest =
      "SELECT (SELECT count(*) FROM pgbench_history) || '/' || (SELECT sum(abalance) FROM "
      "pgbench_accounts) || '/' || (SELECT sum(bbalance) FROM pgbench_branches) || '/' || "
      "(SELECT max(id) FROM pgbench_history)";
  return WaitFor([&] { return Sql(from).Scalar(digest) == Sql(to).Scalar(digest); },
                 std::chrono::seconds(30));
}

TEST_P(CutoverUnderLoad, NoTransactionFailsAndBHoldsEveryOne) {
  const std::string mode = GetParam();
  // The simple protocol's run streams back to A; the prepared one's does not, so that A must
  // take no write at all after the switch.
  const bool reverse = mode == "simple";
  Migration m("cut_" + mode);
  m.InitPgbench();
  m.StartPipeline();
  std::string pgbench_output;
  std::thread load = Pgbench(m, mode, 8, &pgbench_output);
  std::this_thread::sleep_for(std::chrono::seconds(3));  // mid-load, by design
  std::string out;
  const int status = m.Cutover(reverse ? std::vector<std::string>{"--json"}
                                       : std::vector<std::string>{"--json", "--no-reverse"},
                               &out);
  const std::string a_history_after = Sql(m.a_url()).Scalar("SELECT count(*) FROM pgbench_history");
  load.join();
  std::printf("%s\n", out.c_str());  // each step's time, in the test's log
  ASSERT_EQ(status, 0) << out << ReadFile(m.log());
  EXPECT_THAT(out, HasSubstr("\"outcome\": \"switched\""));
  // Transactions after the switch, however long it took (a slow one may outlast the load).
  std::string after_output;
  Shell(absl::StrCat(PgBin(), "/pgbench -n -c 2 -j 2 -t 50 -M ", mode, " -h 127.0.0.1 -p ",
                     m.pooler().port(), " -U postgres app"),
        &after_output);

  const int64_t processed = ProcessedNoneFailed(pgbench_output) + ProcessedNoneFailed(after_output);
  ASSERT_GT(processed, 1000) << pgbench_output;

  // B holds every transaction pgbench processed, and its balances add up.
  ExpectHoldsEveryTransaction(m.b_url(), processed);
  Sql a(m.a_url());
  Sql b(m.b_url());
  EXPECT_LT(std::stoll(a_history_after), processed);
  // B's sequence went on past A's.
  EXPECT_GE(std::stoll(b.Scalar("SELECT last_value FROM pgbench_history_id_seq")),
            std::stoll(a.Scalar("SELECT last_value FROM pgbench_history_id_seq")));
  EXPECT_EQ(a.Scalar("SHOW default_transaction_read_only"), "on");
  // The pooler shows where the database points now.
  EXPECT_THAT(Console(m.pooler(), "SHOW DATABASES"), HasSubstr(std::to_string(B().port())));
  if (!reverse) {
    // A took no write after the switch.
    EXPECT_EQ(a.Scalar("SELECT count(*) FROM pgbench_history"), a_history_after);
    return;
  }
  // The stream back: the same process now runs it, and brings B's writes to A, those made
  // through the pooler and one made by hand.
  EXPECT_THAT(out, HasSubstr("\"reverse_pipeline\": \"cut_simple_cutover_1\""));
  EXPECT_THAT(m.Status(), HasSubstr("\"pipeline\": \"cut_simple_cutover_1\""));
  EXPECT_EQ(ReadFile(m.file("pipeline.current")), "pipeline.cutover-1.yaml\n");
  b.Exec("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())");
  EXPECT_TRUE(WaitLevel(m.b_url(), m.a_url())) << ReadFile(m.log());
  std::string status_out;
  // `pgflow status` on the file the user wrote shows the stream back, and that the first
  // pipeline's slot still pins WAL on A (degraded: exit 1) until a teardown.
  EXPECT_EQ(RunPgflow({"status", m.yaml()}, &status_out), 1) << status_out;
  EXPECT_THAT(status_out, HasSubstr("cut_simple_cutover_1"));
  EXPECT_THAT(status_out, HasSubstr(absl::StrCat("slot pgflow_cut_simple of pipeline cut_simple "
                                                 "(before a cutover) is kept")));
}

INSTANTIATE_TEST_SUITE_P(Protocols, CutoverUnderLoad, ::testing::Values("simple", "prepared"));

// A cutover, then under load a cutover back through the stream back: the same invariants the
// other way, and a stream from A to B again afterwards.
TEST(CutoverTest, CutsBackUnderLoadThroughTheStreamBack) {
  Migration m("cut_back");
  m.InitPgbench();
  m.StartPipeline();
  std::string out;
  ASSERT_EQ(m.Cutover({}, &out), 0) << out << ReadFile(m.log());
  EXPECT_THAT(out, HasSubstr("pipeline cut_back_cutover_1 keeps it current"));

  std::string pgbench_output;
  std::thread load = Pgbench(m, "simple", 8, &pgbench_output);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  // The same file: pipeline.current says the stream back runs now, and it is what is cut over.
  const int status = m.Cutover({"--json"}, &out);
  load.join();
  std::printf("%s\n", out.c_str());
  ASSERT_EQ(status, 0) << out << ReadFile(m.log());
  EXPECT_THAT(out, HasSubstr("\"reverse_pipeline\": \"cut_back_cutover_2\""));
  const int64_t processed = ProcessedNoneFailed(pgbench_output);
  ASSERT_GT(processed, 1000) << pgbench_output;

  // A holds every transaction (the first half through the stream back, the rest directly),
  // B is read-only now, A writable, and the pooler points at A again.
  ExpectHoldsEveryTransaction(m.a_url(), processed);
  Sql a(m.a_url());
  Sql b(m.b_url());
  EXPECT_EQ(a.Scalar("SHOW default_transaction_read_only"), "off");
  EXPECT_EQ(b.Scalar("SHOW default_transaction_read_only"), "on");
  EXPECT_THAT(Console(m.pooler(), "SHOW DATABASES"), HasSubstr(std::to_string(A().port())));
  EXPECT_GE(std::stoll(a.Scalar("SELECT last_value FROM pgbench_history_id_seq")),
            std::stoll(b.Scalar("SELECT last_value FROM pgbench_history_id_seq")));
  // And B is kept level with A by the next stream.
  EXPECT_EQ(ReadFile(m.file("pipeline.current")), "pipeline.cutover-2.yaml\n");
  a.Exec("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())");
  EXPECT_TRUE(WaitLevel(m.a_url(), m.b_url())) << ReadFile(m.log());
  EXPECT_THAT(m.Status(), HasSubstr("\"pipeline\": \"cut_back_cutover_2\""));
}

// `pgflow verify --live` while pgbench writes to A and the pipeline streams: A's snapshot at
// the point the pipeline holds B at is identical to B; a row B lost by hand is found.
TEST(CutoverTest, VerifyLiveComparesWhileTheApplicationWrites) {
  Migration m("cut_verify");
  m.InitPgbench();
  m.StartPipeline();
  std::string pgbench_output;
  std::thread load = Pgbench(m, "simple", 8, &pgbench_output);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::string out;
  const int identical = RunPgflow({"verify", m.yaml(), "--live"}, &out);
  EXPECT_EQ(identical, 0) << out << ReadFile(m.log());
  std::printf("%s\n", out.c_str());
  EXPECT_THAT(out, HasSubstr("live: the source as of "));
  EXPECT_THAT(out, HasSubstr("target: identical (4 tables"));
  // pgbench_history only grows: a row deleted on B stays missing whatever A does next.
  Sql(m.b_url()).Exec(
      "DELETE FROM pgbench_history WHERE id = (SELECT min(id) FROM pgbench_history)");
  const int different = RunPgflow({"verify", m.yaml(), "--live"}, &out);
  EXPECT_EQ(different, 1) << out;
  EXPECT_THAT(out, HasSubstr("target: public.pgbench_history differs where"));
  EXPECT_THAT(out, HasSubstr("DIFFERENT: 3 identical, 1 different"));
  load.join();
  EXPECT_EQ(PgbenchNumber(pgbench_output, "number of failed transactions: "), 0) << pgbench_output;
  // The pipeline went on after each hold.
  EXPECT_THAT(m.Status(), Not(HasSubstr("\"state\": \"holding\"")));
  const std::string count = "SELECT count(*) FROM pgbench_history";
  EXPECT_TRUE(WaitFor(
      [&] {
        return std::stoll(Sql(m.b_url()).Scalar(count)) + 1 ==
               std::stoll(Sql(m.a_url()).Scalar(count));
      },
      std::chrono::seconds(30)));
}

TEST(CutoverTest, ALongTransactionMakesItGiveUpAndUndo) {
  Migration m("cut_long");
  Sql(m.a_url()).Exec("CREATE TABLE t (id int PRIMARY KEY, v int)");
  Sql(m.a_url()).Exec("INSERT INTO t VALUES (1, 0)");
  Sql(m.a_url()).Exec("CREATE TABLE pad (id int PRIMARY KEY)");
  m.StartPipeline();
  Conn open(m.pooler().Url("app"));
  ASSERT_TRUE(open.ok()) << open.error();
  ASSERT_EQ(open.Run("BEGIN"), "");
  // More WAL than the server's WAL buffers hold: their full pages are written while the
  // transaction stays open, and the server's write position falls inside a record, where no
  // reader of the stream can stop.
  ASSERT_EQ(open.Run("INSERT INTO pad SELECT generate_series(1, 100000)"), "");
  ASSERT_EQ(open.Run("UPDATE t SET v = 1"), "");

  // The comparison before the pause waits for the transaction too (its snapshot's consistent
  // point does), up to --pause-timeout, and then refuses naming it; the pipeline goes on.
  std::string out;
  EXPECT_EQ(m.Cutover({"--dry-run", "--pause-timeout", "1s"}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("verify"));
  EXPECT_THAT(out, HasSubstr("no consistent point on the source within 1s"));
  EXPECT_THAT(out, HasSubstr("UPDATE t SET v = 1"));
  EXPECT_THAT(out, HasSubstr("cutover: refused, nothing changed"));
  EXPECT_THAT(m.Status(), Not(HasSubstr("\"state\": \"waiting\"")));

  // Without it, SIGINT while the pause waits for the transaction undoes it at once.
  TempDir dir;
  PgflowProcess interrupted({"cutover", m.yaml(), "--pooler", m.console_url(), "--database", "app",
                             "--pause-timeout", "60s", "--no-verify"},
                            dir.File("cutover.out"));
  ASSERT_TRUE(WaitFor([&] { return Paused(m.pooler()) == "1"; }, std::chrono::seconds(30)))
      << Console(m.pooler(), "SHOW DATABASES");
  interrupted.Signal(SIGINT);
  EXPECT_EQ(interrupted.Wait(std::chrono::seconds(10)), 1);
  EXPECT_THAT(ReadFile(dir.File("cutover.out")), HasSubstr("FAILED: interrupted"));
  EXPECT_THAT(ReadFile(dir.File("cutover.out")), HasSubstr("undone"));
  EXPECT_EQ(Paused(m.pooler()), "0");

  // A transaction open longer than --pause-timeout gives it up.
  EXPECT_EQ(m.Cutover({"--pause-timeout", "1s", "--no-verify"}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("FAILED: a server connection of app stayed in use for 1000 ms"));
  EXPECT_THAT(out, HasSubstr("undone: the application stays on the source"));
  // The open transaction goes on and commits on A; new clients go on too; A stays writable.
  EXPECT_EQ(open.Run("COMMIT"), "");
  Conn later(m.pooler().Url("app"));
  EXPECT_EQ(later.Run("UPDATE t SET v = 2 RETURNING v"), "2");
  EXPECT_EQ(Sql(m.a_url()).Scalar("SHOW default_transaction_read_only"), "off");
  EXPECT_THAT(Console(m.pooler(), "SHOW DATABASES"), HasSubstr(std::to_string(A().port())));
}

TEST(CutoverTest, DryRunNamesEveryProblemAndChangesNothing) {
  // The application's role may write `kept` on A; on B it may only read it.
  for (TestCluster* cluster : {&A(), &B()}) {
    Sql(cluster->Url()).Exec("CREATE ROLE cut_clerk LOGIN");
  }
  Migration m("cut_checks", "cut_clerk");
  Sql a(m.a_url());
  a.Exec("CREATE TABLE kept (id serial PRIMARY KEY)");
  a.Exec("CREATE TABLE dropped (id int PRIMARY KEY)");
  a.Exec("GRANT SELECT, INSERT ON kept TO cut_clerk");
  std::string out;
  // No pipeline running yet.
  EXPECT_EQ(m.Cutover({"--dry-run"}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("does not answer"));

  m.StartPipeline();
  Sql(m.b_url()).Exec("DROP TABLE dropped");
  Sql(m.b_url()).Exec("REVOKE INSERT ON kept FROM cut_clerk");  // (the copy granted it)
  // `a` is a session of its own on A, around the pooler.
  EXPECT_EQ(m.Cutover({"--dry-run"}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("problem: public.dropped (public.dropped of the source) is missing "
                             "on the target"));
  EXPECT_THAT(out, HasSubstr("session(s) on the source bypass the pooler"));
  EXPECT_THAT(out, HasSubstr("problem: role cut_clerk may INSERT public.kept on the source, not "
                             "public.kept on the target"));
  EXPECT_THAT(out, HasSubstr("cutover: refused, nothing changed"));
  EXPECT_EQ(a.Scalar("SHOW default_transaction_read_only"), "off");
  EXPECT_THAT(Console(m.pooler(), "SHOW DATABASES"), Not(HasSubstr(std::to_string(B().port()))));

  // With the table back (empty on both sides) and --terminate-others, every check passes.
  Sql(m.b_url()).Exec("CREATE TABLE dropped (id int PRIMARY KEY)");
  Sql(m.b_url()).Exec("GRANT INSERT ON kept TO cut_clerk");
  EXPECT_EQ(m.Cutover({"--dry-run", "--terminate-others"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("will be ended (--terminate-others)"));
  EXPECT_THAT(out, HasSubstr("every check passed; nothing changed"));
}

TEST(CutoverTest, RefusesAPipelineStillCopying) {
  Migration m("cut_copying");
  const std::string table = "CREATE TABLE big (id int PRIMARY KEY, pad text)";
  Sql(m.a_url()).Exec(table);
  Sql(m.a_url()).Exec(
      "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
  // The copy into B waits on the lock this transaction holds there.
  Sql b(m.b_url());
  b.Exec(table);
  b.Exec("BEGIN");
  b.Exec("LOCK TABLE big IN ACCESS EXCLUSIVE MODE");
  PgflowProcess run({"run", m.yaml()}, m.log());
  ASSERT_TRUE(
      WaitFor([&] { return m.Status().find("\"phase\": \"snapshot\"") != std::string::npos; },
              std::chrono::seconds(30)))
      << m.Status() << ReadFile(m.log());
  std::string out;
  EXPECT_EQ(m.Cutover({"--dry-run"}, &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("problem: the pipeline is still copying its snapshot"));
  b.Exec("ROLLBACK");
  run.Signal(SIGTERM);
  run.Wait(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgflow::testing
