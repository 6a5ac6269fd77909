// The event count (cpp/src/event_count.hpp) on its own: a waiter that checks its condition between
// prepare_wait and commit_wait never misses a notify made after the condition became true.
// A lost wake-up would hang a test; a watchdog turns that into a failure instead.
#include "event_count.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "test_scale.hpp"

namespace {

using corral::detail::event_count;
using corral::testing::scaled;
using namespace std::chrono_literals;

// The waiter's side of the protocol: sleep until `done()` holds.
template <class Done>
void wait_until(event_count& ec, Done done) {
  while (!done()) {
    std::uint32_t key = ec.prepare_wait();
    if (done()) {
      ec.cancel_wait();
      return;
    }
    ec.commit_wait(key);
  }
}

// Wakes every sleeper of `ecs` if `progress` stops moving for `limit`, and counts it as a failure:
// with no lost wake-up it never fires.
class watchdog {
 public:
  watchdog(std::vector<event_count*> ecs, const std::atomic<std::size_t>& progress,
           std::chrono::milliseconds limit = 10s)
      : thread_([this, ecs, &progress, limit] {
          std::size_t seen = progress.load();
          auto since = std::chrono::steady_clock::now();
          while (!stop_.load()) {
            std::this_thread::sleep_for(5ms);
            std::size_t now = progress.load();
            if (now != seen) {
              seen = now;
              since = std::chrono::steady_clock::now();
            } else if (std::chrono::steady_clock::now() - since > limit) {
              fired_.fetch_add(1);
              for (event_count* ec : ecs) ec->notify_all();
              since = std::chrono::steady_clock::now();
            }
          }
        }) {}
  ~watchdog() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  int fired() const { return fired_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> fired_{0};
  std::thread thread_;
};

TEST(EventCount, ANotifyAfterPrepareMakesCommitReturnAtOnce) {
  event_count ec;
  std::uint32_t key = ec.prepare_wait();
  EXPECT_EQ(ec.waiters(), 1u);
  ec.notify_one();      // between the waiter's check and its sleep: the case that must not be lost
  ec.commit_wait(key);  // returns: the epoch moved
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST(EventCount, CancelWaitUndoesPrepareWait) {
  event_count ec;
  ec.prepare_wait();
  ec.prepare_wait();
  EXPECT_EQ(ec.waiters(), 2u);
  ec.cancel_wait();
  ec.cancel_wait();
  EXPECT_EQ(ec.waiters(), 0u);
}

TEST(EventCount, CommitWaitForTimesOutWithoutANotify) {
  event_count ec;
  std::uint32_t key = ec.prepare_wait();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(ec.commit_wait_for(key, 20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
  EXPECT_EQ(ec.waiters(), 0u);

  key = ec.prepare_wait();
  ec.notify_all();
  EXPECT_TRUE(ec.commit_wait_for(key, 10s));
}

// Two threads hand a ball back and forth, each sleeping on its own event count until the ball is
// its own: every hand-over needs the other's wake-up, so one lost wake-up stops the game.
TEST(EventCount, PingPongLosesNoWakeUp) {
  const std::size_t rounds = scaled(100'000, 10'000);
  event_count ping, pong;
  std::atomic<std::size_t> ball{0};  // even: the first thread's turn; odd: the second's
  watchdog dog({&ping, &pong}, ball);
  std::thread second([&] {
    for (std::size_t i = 0; i < rounds; ++i) {
      wait_until(pong, [&] { return ball.load(std::memory_order_acquire) % 2 == 1; });
      ball.fetch_add(1, std::memory_order_release);
      ping.notify_one();
    }
  });
  for (std::size_t i = 0; i < rounds; ++i) {
    wait_until(ping, [&] { return ball.load(std::memory_order_acquire) % 2 == 0; });
    ball.fetch_add(1, std::memory_order_release);
    pong.notify_one();
  }
  second.join();
  dog.stop();
  EXPECT_EQ(ball.load(), 2 * rounds);
  EXPECT_EQ(dog.fired(), 0) << "a wake-up was lost";
  EXPECT_EQ(ping.waiters(), 0u);
  EXPECT_EQ(pong.waiters(), 0u);
}

// Many waiters, each waiting for the next generation; the notifier bumps it and notifies all.
// Each waiter must see every generation.
TEST(EventCount, NotifyAllReachesEveryWaiterEveryTime) {
  const std::size_t generations = scaled(20'000, 2'000);
  const int waiters = 3;
  event_count ec;
  std::atomic<std::size_t> generation{0};
  std::atomic<std::size_t> progress{0};
  std::vector<std::atomic<std::size_t>> seen(waiters);
  for (auto& s : seen) s.store(0);
  watchdog dog({&ec}, progress);
  std::vector<std::thread> threads;
  for (int w = 0; w < waiters; ++w)
    threads.emplace_back([&, w] {
      for (std::size_t g = 1; g <= generations; ++g) {
        wait_until(ec, [&] { return generation.load(std::memory_order_acquire) >= g; });
        seen[w].store(g, std::memory_order_release);
        progress.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (std::size_t g = 1; g <= generations; ++g) {
    // Every waiter has seen the last generation first, so that most notifies find sleepers.
    for (auto& s : seen)
      while (s.load(std::memory_order_acquire) < g - 1) std::this_thread::yield();
    generation.store(g, std::memory_order_release);
    ec.notify_all();
  }
  for (auto& t : threads) t.join();
  dog.stop();
  EXPECT_EQ(dog.fired(), 0) << "a wake-up was lost";
  for (auto& s : seen) EXPECT_EQ(s.load(), generations);
  EXPECT_EQ(ec.waiters(), 0u);
}

// A producer posts tokens one at a time, each with notify_one; consumers sleep while there is none.
// Every token is taken, and no consumer stays asleep while one is left.
TEST(EventCount, NotifyOnePerTokenLeavesNoTokenBehind) {
  const std::size_t tokens = scaled(100'000, 10'000);
  const int consumers = 3;
  event_count ec;
  std::atomic<std::size_t> available{0};
  std::atomic<std::size_t> taken{0};
  std::atomic<bool> finished{false};
  watchdog dog({&ec}, taken);
  std::vector<std::thread> threads;
  for (int c = 0; c < consumers; ++c)
    threads.emplace_back([&] {
      for (;;) {
        wait_until(
            ec, [&] { return available.load(std::memory_order_acquire) > 0 || finished.load(); });
        std::size_t n = available.load(std::memory_order_acquire);
        while (n > 0 && !available.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) {
        }
        if (n > 0) {
          taken.fetch_add(1, std::memory_order_relaxed);
        } else if (finished.load()) {
          return;
        }
      }
    });
  for (std::size_t i = 0; i < tokens; ++i) {
    available.fetch_add(1, std::memory_order_release);
    ec.notify_one();
    if (i % 64 == 0) std::this_thread::yield();  // let the consumers fall asleep now and then
  }
  while (taken.load() < tokens && dog.fired() == 0) std::this_thread::yield();
  finished.store(true);
  ec.notify_all();
  for (auto& t : threads) t.join();
  dog.stop();
  EXPECT_EQ(dog.fired(), 0) << "a wake-up was lost";
  EXPECT_EQ(taken.load(), tokens);
  EXPECT_EQ(ec.waiters(), 0u);
}

}  // namespace
