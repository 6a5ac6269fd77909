// CORRAL_ASSERT(condition): an internal invariant of the library, checked at run time only when it
// is built with the CMake option CORRAL_ASSERTIONS=ON (the asan and tsan presets); elsewhere
// (release, bench, the pip build) it compiles to nothing and the condition is not evaluated. A
// failed check is a bug in corral, never a user's error: it prints the condition and where it
// failed, and aborts. Only cheap conditions belong here (a load, a comparison): they run on the
// scheduler's hot paths.
#pragma once

#if defined(CORRAL_ASSERTIONS) && CORRAL_ASSERTIONS

#include <cstdio>
#include <cstdlib>

namespace corral::detail {

[[noreturn]] inline void assertion_failed(const char* condition, const char* file,
                                          int line) noexcept {
  std::fprintf(stderr, "corral: internal invariant failed: %s (%s:%d)\n", condition, file, line);
  std::abort();
}

}  // namespace corral::detail

#define CORRAL_ASSERT(condition)      \
  ((condition) ? static_cast<void>(0) \
               : ::corral::detail::assertion_failed(#condition, __FILE__, __LINE__))

#else

// Not evaluated, but its names count as used (no unused-variable warnings in release builds).
#define CORRAL_ASSERT(condition) static_cast<void>(sizeof((condition) ? 1 : 0))

#endif
