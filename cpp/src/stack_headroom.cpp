#include "stack_headroom.hpp"

#include <pthread.h>

#include <cstdint>
#include <limits>

namespace corral::detail {

namespace {

// The stack's low end, read once per thread (pthread_getattr_np takes a lock and, on the main
// thread, parses /proc/self/maps). 1: unknown.
[[gnu::noinline, gnu::cold]] std::uintptr_t read_stack_low_end() noexcept {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return 1;
  void* addr = nullptr;
  std::size_t size = 0;
  int rc = pthread_attr_getstack(&attr, &addr, &size);
  pthread_attr_destroy(&attr);
  return rc == 0 && addr != nullptr ? reinterpret_cast<std::uintptr_t>(addr) : 1;
}

// Constant-initialised (0: not read yet), so that a read is a plain TLS load on every wait.
constinit thread_local std::uintptr_t stack_low = 0;

}  // namespace

std::size_t stack_headroom() noexcept {
  std::uintptr_t low = stack_low;
  if (low == 0) low = stack_low = read_stack_low_end();
  if (low == 1) return std::numeric_limits<std::size_t>::max();
  const auto here = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  return here > low ? here - low : 0;
}

}  // namespace corral::detail
