// Linux futexes directly rather than std::atomic::wait: we need timed waits (spare threads retire
// after an idle period; event::wait_for), which std::atomic::wait lacks, and a wake that never
// touches the word's memory (see futex_wake in futex.hpp). The waiter/notifier protocol is the same
// one std::atomic wait/notify offers: sleep only while the value is the one we checked.
#include "futex.hpp"

#include <cerrno>
#include <climits>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

namespace corral::detail {

#if defined(__linux__)

namespace {
long futex(void* address, int op, std::uint32_t value, const timespec* timeout) noexcept {
  return syscall(SYS_futex, address, op, value, timeout, nullptr, 0);
}
}  // namespace

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  futex(&word, FUTEX_WAIT_PRIVATE, expected, nullptr);
}

bool futex_wait_for(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                    std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() <= 0) return false;
  timespec relative{};
  relative.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  relative.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  long rc = futex(&word, FUTEX_WAIT_PRIVATE, expected, &relative);
  return !(rc == -1 && errno == ETIMEDOUT);
}

void futex_wake(std::atomic<std::uint32_t>* word, int count) noexcept {
  futex(static_cast<void*>(word), FUTEX_WAKE_PRIVATE, static_cast<std::uint32_t>(count), nullptr);
}

#else  // Portable fallback: short sleeps. Linux is the supported platform.

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  if (word.load(std::memory_order_acquire) == expected)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}
bool futex_wait_for(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                    std::chrono::nanoseconds timeout) noexcept {
  if (word.load(std::memory_order_acquire) != expected) return true;
  auto step = std::min<std::chrono::nanoseconds>(timeout, std::chrono::microseconds(50));
  std::this_thread::sleep_for(step);
  return step < timeout;
}
void futex_wake(std::atomic<std::uint32_t>*, int) noexcept {}

#endif

}  // namespace corral::detail
