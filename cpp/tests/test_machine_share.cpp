// machine_share.hpp, jobserver.hpp and a permit table drawing from them (permit_source.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "corral/jobserver.hpp"
#include "corral/machine_share.hpp"
#include "corral/permit_table.hpp"
#include "test_util.hpp"

namespace corral {
namespace {

namespace fs = std::filesystem;
using corral::testing::eventually;
using corral::testing::record_max;

// Each test gets a runtime directory of its own (XDG_RUNTIME_DIR), removed after.
class share_test : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corral-share-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    runtime_ = tmpl;
    ::setenv("XDG_RUNTIME_DIR", runtime_.c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("XDG_RUNTIME_DIR");
    std::error_code ignored;
    fs::permissions(runtime_, fs::perms::owner_all, ignored);
    fs::remove_all(runtime_, ignored);
  }
  std::string runtime_;
};

TEST(share_name, plain_names_only) {
  for (const char* good : {"default", "a", "jobs-2.x_y", "A0"})
    EXPECT_NO_THROW(machine_share::check_name(good)) << good;
  for (const char* bad : {"", ".hidden", "a/b", "..", "a b", "é", "x\n"})
    EXPECT_THROW(machine_share::check_name(bad), std::invalid_argument) << bad;
  EXPECT_THROW(machine_share::check_name(std::string(65, 'a')), std::invalid_argument);
  EXPECT_NO_THROW(machine_share::check_name(std::string(64, 'a')));
}

TEST_F(share_test, file_is_private_and_removed_by_the_last_member) {
  auto a = machine_share::join("t", 3);
  auto b = machine_share::join("t", 7);  // a second member (its own open file description)
  EXPECT_EQ(b->size(), 3u);              // the creator's size stands
  struct stat st{};
  ASSERT_EQ(::stat(a->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(machine_share::directory().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto status = machine_share::inspect("t");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->size, 3u);
  EXPECT_EQ(status->members.size(), 2u);
  EXPECT_FALSE(status->stale);
  a->leave();
  EXPECT_TRUE(fs::exists(b->path()));
  b->leave();
  EXPECT_FALSE(fs::exists(b->path()));
  EXPECT_FALSE(fs::exists(runtime_ + "/corral"));  // the last member of the last share removes it
  EXPECT_FALSE(machine_share::inspect("t").has_value());
  EXPECT_TRUE(machine_share::list().empty());
  EXPECT_FALSE(fs::exists(runtime_ + "/corral"));  // looking makes nothing
}

TEST_F(share_test, permits_are_exclusive_across_members) {
  auto a = machine_share::join("t", 2);
  auto b = machine_share::join("t");
  EXPECT_TRUE(a->try_take());
  EXPECT_TRUE(b->try_take());
  EXPECT_FALSE(a->try_take());
  EXPECT_FALSE(b->try_take());
  EXPECT_EQ(machine_share::inspect("t")->held, 2u);
  a->give_back();
  EXPECT_TRUE(b->try_take());
  EXPECT_EQ(b->held(), 2u);
  EXPECT_EQ(a->held(), 0u);
  auto status = machine_share::inspect("t");
  ASSERT_EQ(status->members.size(), 2u);
  unsigned listed = 0;
  for (const auto& m : status->members) listed += m.permits;
  EXPECT_EQ(listed, 2u);
  b->leave();  // gives back everything it held
  EXPECT_TRUE(a->try_take());
  EXPECT_TRUE(a->try_take());
}

// The descriptors of this process open on `path`.
std::vector<int> descriptors_on(const std::string& path) {
  std::vector<int> out;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(entry.path(), ec) == path)
      out.push_back(std::stoi(entry.path().filename()));
  }
  return out;
}

TEST_F(share_test, its_descriptor_sits_high_and_a_number_the_program_reused_is_never_written) {
  auto a = machine_share::join("t", 2);
  const auto fds = descriptors_on(a->path());
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_GE(fds[0], 256) << "out of the way of the program's own numbers (its first open() is 3)";
  // A daemon's closerange, then a file of the program's own opened at that very number.
  const std::string mine = runtime_ + "/program.log";
  const int program_fd = ::open(mine.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(program_fd, 0);
  ASSERT_EQ(::write(program_fd, "log\n", 4), 4);
  ASSERT_EQ(::dup2(program_fd, fds[0]), fds[0]);  // closes the share's description: its locks go
  EXPECT_TRUE(a->try_take());                     // no share any more: this process's own budget
  EXPECT_TRUE(a->try_take());
  a->give_back();
  a->leave();
  struct stat st{};
  ASSERT_EQ(::fstat(fds[0], &st), 0) << "the program's descriptor was closed";
  EXPECT_EQ(st.st_size, 4) << "something was written into the program's file";
  ::close(fds[0]);
  ::close(program_fd);
  // The share file, with no member left, is stale to the next look, which removes it.
  auto status = machine_share::inspect("t");
  EXPECT_TRUE(!status.has_value() || status->stale);
}

TEST_F(share_test, a_killed_member_gives_its_permits_back_at_once) {
  auto a = machine_share::join("t", 2);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = machine_share::join("t");  // only this thread exists here
    const bool took = c->try_take() && c->try_take();
    char byte = took ? 1 : 0;
    (void)!::write(ready[1], &byte, 1);
    for (;;) ::pause();
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ASSERT_EQ(byte, 1);
  EXPECT_FALSE(a->try_take());
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(eventually([&] { return a->try_take(); }, std::chrono::seconds(1)));
  EXPECT_TRUE(a->try_take());
  ::close(ready[0]);
  ::close(ready[1]);
}

// The process table joins the share CORRAL_SHARE names; a child it forks closes its copy of the
// share's descriptor, so killing the member frees its permits even while the child lives on.
TEST_F(share_test, a_forked_child_keeps_none_of_its_parents_permits) {
  ::setenv("CORRAL_SHARE", "f", 1);
  ::setenv("CORRAL_SHARE_SIZE", "2", 1);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t member = ::fork();
  if (member == 0) {  // the member: its process table draws a permit, then it forks a child
    permit_table& table = permit_table::process();
    table.acquire();
    pid_t report[2] = {table.stats().drawn == 1 ? 1 : 0, 0};
    report[1] = ::fork();
    if (report[1] == 0) {
      for (;;) ::pause();  // the child: alive, holding the inherited descriptor if it were kept
    }
    (void)!::write(ready[1], report, sizeof report);
    for (;;) ::pause();
  }
  ::unsetenv("CORRAL_SHARE");
  ::unsetenv("CORRAL_SHARE_SIZE");
  pid_t report[2] = {0, 0};
  ASSERT_EQ(::read(ready[0], report, sizeof report), static_cast<ssize_t>(sizeof report));
  ASSERT_EQ(report[0], 1);
  EXPECT_EQ(machine_share::inspect("f")->held, 1u);
  ::kill(member, SIGKILL);
  int status = 0;
  ::waitpid(member, &status, 0);
  EXPECT_TRUE(eventually(
      [] {
        auto s = machine_share::inspect("f");
        return !s || s->stale || s->held == 0;
      },
      std::chrono::seconds(1)));
  EXPECT_EQ(::kill(report[1], 0), 0);  // the child still lives
  ::kill(report[1], SIGKILL);          // not ours to reap: init adopted it
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_F(share_test, a_file_left_by_a_killed_last_member_is_stale_and_reused) {
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = machine_share::join("t", 5);
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists(machine_share::directory() + "/t.share"));
  auto a = machine_share::join("t", 2);  // a new creator: its size, not the dead one's
  EXPECT_EQ(a->size(), 2u);
  a->leave();
  EXPECT_FALSE(fs::exists(a->path()));
  // inspect() removes a stale file too
  const pid_t again = ::fork();
  if (again == 0) {
    auto c = machine_share::join("t", 5);
    ::kill(::getpid(), SIGKILL);
  }
  ::waitpid(again, &status, 0);
  auto stale = machine_share::inspect("t");
  ASSERT_TRUE(stale.has_value());
  EXPECT_TRUE(stale->stale);
  EXPECT_FALSE(fs::exists(stale->path));
}

TEST_F(share_test, refuses_a_directory_open_to_others) {
  ASSERT_EQ(::mkdir((runtime_ + "/corral").c_str(), 0700), 0);
  ASSERT_EQ(::chmod((runtime_ + "/corral").c_str(), 0755), 0);
  EXPECT_THROW(machine_share::join("t", 1), std::system_error);
  ASSERT_EQ(::chmod((runtime_ + "/corral").c_str(), 0700), 0);
  const int fd = ::open((runtime_ + "/corral/t.share").c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ASSERT_EQ(::chmod((runtime_ + "/corral/t.share").c_str(), 0660), 0);  // group-writable
  EXPECT_THROW(machine_share::join("t", 1), std::system_error);
  ::unlink((runtime_ + "/corral/t.share").c_str());
  ASSERT_EQ(::symlink("/etc/passwd", (runtime_ + "/corral/t.share").c_str()), 0);
  EXPECT_THROW(machine_share::join("t", 1), std::system_error);
  EXPECT_THROW(machine_share::join("t", machine_share::max_size + 1), std::invalid_argument);
}

// A table of 4 permits drawing from a share of 2 (a second member holds none): at most 2 run.
TEST_F(share_test, table_runs_at_most_what_it_drew) {
  permit_table table(4);
  auto share = std::shared_ptr<machine_share>(machine_share::join("t", 2));
  auto other = machine_share::join("t");
  table.set_source(share);
  std::atomic<int> running{0}, peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        permit p(table);
        record_max(peak, ++running);
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        --running;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 2);
  EXPECT_EQ(table.stats().drawn, 0u);  // all given back once nobody runs
  EXPECT_EQ(share->held(), 0u);
  // Another member holding both: the table still runs one thread (its own first permit).
  ASSERT_TRUE(other->try_take());
  ASSERT_TRUE(other->try_take());
  peak = 0;
  threads.clear();
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        permit p(table);
        record_max(peak, ++running);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        --running;
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  other->give_back();  // a permit freed elsewhere: the table's first waiter picks it up
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 2);
  EXPECT_GE(table.stats().acquires, 60u);
  table.set_source(nullptr);
}

TEST_F(share_test, a_lone_task_draws_what_is_free_for_its_inner_threads) {
  permit_table table(3);
  auto share = std::shared_ptr<machine_share>(machine_share::join("t", 3));
  auto other = machine_share::join("t");
  table.set_source(share);
  {
    permit p(table);  // a lone task: its own permit, drawn
    EXPECT_EQ(table.usable_permits(), 1u);
    EXPECT_EQ(table.draw_for_inner_threads(), 3u);  // the two the share has free, for its BLAS
    EXPECT_EQ(share->held(), 3u);
  }
  EXPECT_EQ(share->held(), 0u);  // given back with nobody waiting: the extra ones too
  // Another member holds two: a lone task gets its own and the one left, and no more than that
  // until the retry interval has passed, however often it asks.
  ASSERT_TRUE(other->try_take());
  ASSERT_TRUE(other->try_take());
  {
    permit p(table);
    const auto asked = std::chrono::steady_clock::now();
    EXPECT_EQ(table.draw_for_inner_threads(), 1u);  // its own permit drew the one left
    other->give_back();
    const unsigned again = table.draw_for_inner_threads();
    if (std::chrono::steady_clock::now() - asked < permit_table::inner_draw_retry) {
      EXPECT_EQ(again, 1u);  // within the interval: not asked again
    }
    EXPECT_TRUE(eventually([&] { return table.draw_for_inner_threads() == 2u; }));
  }
  other->give_back();
  EXPECT_EQ(share->held(), 0u);
  // Without a source: the budget, nothing drawn.
  table.set_source(nullptr);
  permit p(table);
  EXPECT_EQ(table.draw_for_inner_threads(), 3u);
}

TEST(jobserver, parses_makeflags) {
  auto a = parse_makeflags(" -j4 --jobserver-auth=3,4");
  EXPECT_EQ(a.how, jobserver_auth::kind::pipe);
  EXPECT_EQ(a.read_fd, 3);
  EXPECT_EQ(a.write_fd, 4);
  EXPECT_EQ(a.jobs, 4);
  auto b = parse_makeflags("k -j8 --jobserver-auth=fifo:/tmp/GMfifo123 -- X=1");
  EXPECT_EQ(b.how, jobserver_auth::kind::fifo);
  EXPECT_EQ(b.fifo, "/tmp/GMfifo123");
  EXPECT_EQ(b.jobs, 8);
  auto c = parse_makeflags(" --jobserver-fds=5,6 -j");
  EXPECT_EQ(c.how, jobserver_auth::kind::pipe);
  EXPECT_EQ(c.read_fd, 5);
  EXPECT_EQ(parse_makeflags("-- --jobserver-auth=3,4").how, jobserver_auth::kind::none);
  EXPECT_EQ(parse_makeflags(" -j4").how, jobserver_auth::kind::none);
  EXPECT_EQ(parse_makeflags("--jobserver-auth=x,4").how, jobserver_auth::kind::none);
}

TEST_F(share_test, jobserver_fifo_takes_and_returns_the_same_tokens) {
  const std::string fifo = runtime_ + "/jobs";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int keep = ::open(fifo.c_str(), O_RDWR);  // make's end: holds the tokens
  ASSERT_GE(keep, 0);
  ASSERT_EQ(::write(keep, "ab", 2), 2);
  jobserver_auth auth = parse_makeflags("-j3 --jobserver-auth=fifo:" + fifo);
  std::string why;
  auto js = jobserver::connect(auth, &why);
  ASSERT_NE(js, nullptr) << why;
  EXPECT_TRUE(js->try_take());
  EXPECT_TRUE(js->try_take());
  EXPECT_FALSE(js->try_take());  // none left: at once, never blocking
  js->give_back();
  EXPECT_TRUE(js->try_take());
  EXPECT_EQ(js->held(), 2u);
  js->return_all();
  char back[4] = {};
  const int flags = ::fcntl(keep, F_GETFL);
  ::fcntl(keep, F_SETFL, flags | O_NONBLOCK);
  EXPECT_EQ(::read(keep, back, 4), 2);
  EXPECT_TRUE((back[0] == 'a' && back[1] == 'b') || (back[0] == 'b' && back[1] == 'a'));
  ::close(keep);
}

TEST(jobserver, pipe_descriptors_not_open_fall_back) {
  std::string why;
  auto js = jobserver::connect(parse_makeflags("-j4 --jobserver-auth=900,901"), &why);
  EXPECT_EQ(js, nullptr);
  EXPECT_NE(why.find("'+'"), std::string::npos) << why;
}

TEST(jobserver, pipe_tokens_through_a_table) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "+", 1), 1);  // make -j2: one token beyond the implicit one
  std::string why;
  auto js = std::shared_ptr<jobserver>(
      jobserver::connect(parse_makeflags("-j2 --jobserver-auth=" + std::to_string(fds[0]) + "," +
                                         std::to_string(fds[1])),
                         &why));
  ASSERT_NE(js, nullptr) << why;
  permit_table table(8);
  table.set_source(js);
  std::atomic<int> running{0}, peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        permit p(table);
        record_max(peak, ++running);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        --running;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 2);
  EXPECT_EQ(js->held(), 0u);
  table.set_source(nullptr);
  char token = 0;
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  EXPECT_EQ(::read(fds[0], &token, 1), 1);  // the token is back in make's pipe
  EXPECT_EQ(token, '+');
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace corral
