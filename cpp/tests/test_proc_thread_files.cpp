// The monitors' /proc files (internal: cpp/src/proc_thread_files.hpp): kept open per thread, never
// a file of the program's read with a moving offset or closed, none left to a forked child.
#include "proc_thread_files.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using corral::detail::proc_thread_files;
using corral::detail::sleep_kind;
using corral::detail::thread_sample;

pid_t current_tid() {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

bool is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1;
}

// A thread blocked in read() on an empty pipe until the object ends.
class reader_thread {
 public:
  reader_thread() {
    EXPECT_EQ(::pipe(fds_), 0);
    thread_ = std::thread([this] {
      tid_.store(current_tid());
      char c;
      (void)!::read(fds_[0], &c, 1);
    });
    while (tid_.load() == 0) std::this_thread::yield();
  }
  ~reader_thread() {
    (void)!::write(fds_[1], "x", 1);
    thread_.join();
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  pid_t tid() const { return tid_.load(); }

 private:
  int fds_[2] = {-1, -1};
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

// Samples until the thread is seen asleep (it may not have reached its read yet).
thread_sample sample_asleep(proc_thread_files& files, pid_t tid) {
  thread_sample s;
  for (int i = 0; i < 2000; ++i) {
    s = files.sample(tid);
    if (s.asleep) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return s;
}

TEST(ProcThreadFiles, SeesAThreadAsleepInReadAsOtherAndOneOnAConditionAsFutex) {
  proc_thread_files files;
  reader_thread reader;
  const thread_sample in_read = sample_asleep(files, reader.tid());
  EXPECT_TRUE(in_read.readable);
  EXPECT_TRUE(in_read.asleep);
  EXPECT_EQ(in_read.kind, sleep_kind::other);

  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::atomic<pid_t> waiter_tid{0};
  std::thread waiter([&] {
    waiter_tid.store(current_tid());
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return done; });
  });
  while (waiter_tid.load() == 0) std::this_thread::yield();
  const thread_sample in_futex = sample_asleep(files, waiter_tid.load());
  EXPECT_TRUE(in_futex.asleep);
  EXPECT_EQ(in_futex.kind, sleep_kind::futex);
  {
    std::lock_guard lock(m);
    done = true;
  }
  cv.notify_all();
  waiter.join();

  const thread_sample me = files.sample(current_tid());  // running: readable, not asleep
  EXPECT_TRUE(me.readable);
  EXPECT_FALSE(me.asleep);
}

// A thread asleep in read(), sampled once: its two files are open.
class ProcThreadFilesOfASleeper : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(sample_asleep(files, reader.tid()).asleep);
    ours = files.open_descriptors();
    ASSERT_EQ(ours.size(), 2u);
  }

  proc_thread_files files;
  reader_thread reader;
  std::vector<int> ours;
};

TEST_F(ProcThreadFilesOfASleeper, KeptOpenBetweenSamplesAndClosedOnceIdle) {
  ASSERT_TRUE(files.sample(reader.tid()).asleep);
  EXPECT_EQ(files.open_descriptors(), ours) << "the same files, not opened again";

  for (unsigned i = 0; i < proc_thread_files::idle_passes_to_close; ++i) files.end_pass();
  EXPECT_EQ(files.open_descriptors(), ours) << "still watched";
  files.end_pass();
  EXPECT_TRUE(files.open_descriptors().empty());
  for (int fd : ours) EXPECT_FALSE(is_open(fd)) << fd;
}

TEST_F(ProcThreadFilesOfASleeper, ReadsTheRunDelayThroughAThirdFileKeptOpen) {
  unsigned long long first = 0;
  ASSERT_TRUE(files.run_delay_ns(reader.tid(), first));
  const std::vector<int> with_schedstat = files.open_descriptors();
  ASSERT_EQ(with_schedstat.size(), 3u);
  unsigned long long again = 0;
  ASSERT_TRUE(files.run_delay_ns(reader.tid(), again));
  EXPECT_GE(again, first) << "a total so far";
  EXPECT_EQ(files.open_descriptors(), with_schedstat) << "the same files, not opened again";
  unsigned long long none = 0;
  EXPECT_FALSE(files.run_delay_ns(0, none));
  files.close_all();
  for (int fd : with_schedstat) EXPECT_FALSE(is_open(fd)) << fd;
}

TEST(ProcThreadFiles, CountsTheOtherRunnableThreadsOfTheProcessThroughFilesKeptOpen) {
  // A sanitizer's own thread may be runnable at a look too: counts are waited for, not read once.
  proc_thread_files files;
  reader_thread reader;  // asleep: never counted
  ASSERT_TRUE(sample_asleep(files, reader.tid()).asleep);
  auto eventually_counts = [&](pid_t besides, auto wanted) {
    int seen = -1;
    for (int i = 0; i < 2000 && !wanted(seen); ++i) {
      seen = files.runnable_threads_besides(besides);
      if (!wanted(seen)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return seen;
  };
  std::atomic<bool> stop{false};
  std::thread spinner([&] {
    while (!stop.load()) {
    }
  });
  EXPECT_GE(eventually_counts(current_tid(), [](int n) { return n >= 1; }), 1)
      << "the spinner, running or waiting for a core";
  const std::vector<int> open = files.open_descriptors();
  files.runnable_threads_besides(current_tid());
  EXPECT_EQ(files.open_descriptors(), open) << "the same files, not opened again";
  stop = true;
  spinner.join();
  EXPECT_EQ(eventually_counts(current_tid(), [](int n) { return n == 0; }), 0)
      << "the reader sleeps";
  EXPECT_GE(files.runnable_threads_besides(0), 1) << "this thread, running";

  // The directory's number taken over by the program: its offset never moved, the number left
  // to it, the directory opened again.
  const std::vector<int> before = files.open_descriptors();
  const int dir = before.back();
  char path[] = "/tmp/corral-proc-dir-XXXXXX";
  const int program_file = ::mkstemp(path);
  ASSERT_GE(program_file, 0);
  ::unlink(path);
  ASSERT_EQ(::dup2(program_file, dir), dir);
  ASSERT_EQ(::lseek(dir, 3, SEEK_SET), 3);
  EXPECT_EQ(files.runnable_threads_besides(current_tid()), -1) << "cannot tell this time";
  EXPECT_GE(files.runnable_threads_besides(current_tid()), 0) << "opened again";
  EXPECT_EQ(::lseek(dir, 0, SEEK_CUR), 3) << "the program's offset moved";
  files.close_all();
  EXPECT_TRUE(is_open(dir)) << "the program's file was closed";
  for (int fd : before) EXPECT_TRUE(fd == dir || !is_open(fd)) << fd;
  ::close(dir);
  ::close(program_file);
}

TEST(ProcThreadFiles, NeverMovesNorClosesAFileTheProgramOpenedUnderItsNumber) {
  char path[] = "/tmp/corral-proc-files-XXXXXX";
  const int program_file = ::mkstemp(path);
  ASSERT_GE(program_file, 0);
  ::unlink(path);
  ASSERT_EQ(::write(program_file, "the program's own data", 22), 22);

  reader_thread reader;
  std::vector<int> numbers;
  {
    proc_thread_files files;
    ASSERT_TRUE(sample_asleep(files, reader.tid()).asleep);
    numbers = files.open_descriptors();
    ASSERT_EQ(numbers.size(), 2u);
    // What a program's os.closerange() and its next opens do: our numbers, its files.
    for (int fd : numbers) {
      ASSERT_EQ(::close(fd), 0);
      ASSERT_EQ(::dup2(program_file, fd), fd);
    }
    ASSERT_EQ(::lseek(program_file, 3, SEEK_SET), 3);

    const thread_sample again = sample_asleep(files, reader.tid());
    EXPECT_TRUE(again.asleep) << "its own files opened again";
    for (int fd : numbers) {
      EXPECT_TRUE(is_open(fd)) << "the program's file at " << fd << " was closed";
      EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 3) << "the program's offset moved";
    }
    const std::vector<int> now = files.open_descriptors();
    for (int fd : now) EXPECT_EQ(std::count(numbers.begin(), numbers.end(), fd), 0) << fd;
  }  // the destructor closes its own files only
  for (int fd : numbers) {
    EXPECT_TRUE(is_open(fd)) << "the program's file at " << fd << " was closed at the end";
    EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 3);
    ::close(fd);
  }
  char buf[32] = {};
  EXPECT_EQ(::pread(program_file, buf, sizeof buf - 1, 0), 22);
  EXPECT_STREQ(buf, "the program's own data");
  ::close(program_file);
}

TEST_F(ProcThreadFilesOfASleeper, AllClosedWhenTheMonitorGoesIdle) {
  files.close_all();
  EXPECT_TRUE(files.open_descriptors().empty());
  for (int fd : ours) EXPECT_FALSE(is_open(fd)) << fd;
  EXPECT_TRUE(sample_asleep(files, reader.tid()).asleep) << "and opened again when needed";
}

TEST_F(ProcThreadFilesOfASleeper, NoneInheritedByAForkedChildWhichSamplesItsOwn) {
  int program_pipe[2];
  ASSERT_EQ(::pipe(program_pipe), 0);

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int status = 0;
    for (int fd : ours)
      if (is_open(fd)) status |= 1;              // the monitor's files stayed open in the child
    if (!is_open(program_pipe[0])) status |= 2;  // the program's own descriptor was closed
    if (!files.open_descriptors().empty()) status |= 4;
    if (!files.sample(current_tid()).readable) status |= 8;  // sampling works in the child
    ::_exit(status);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (int fd : ours) EXPECT_TRUE(is_open(fd)) << "the parent keeps its files";
  ::close(program_pipe[0]);
  ::close(program_pipe[1]);
}

}  // namespace
