#include "stack_headroom.hpp"

#include <pthread.h>

#include <cstdint>
#include <limits>

namespace corral::detail {

namespace {

// The stack's low end, read once per thread (pthread_getattr_np takes a lock and, on the main
// thread, parses /proc/self/maps).
std::uintptr_t stack_low_end() noexcept {
  thread_local std::uintptr_t low = [] {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return std::uintptr_t{0};
    void* addr = nullptr;
    std::size_t size = 0;
    int rc = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    return rc == 0 ? reinterpret_cast<std::uintptr_t>(addr) : std::uintptr_t{0};
  }();
  return low;
}

}  // namespace

std::size_t stack_headroom() noexcept {
  const std::uintptr_t low = stack_low_end();
  const auto here = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  if (low == 0 || here <= low) return low == 0 ? std::numeric_limits<std::size_t>::max() : 0;
  return here - low;
}

}  // namespace corral::detail
