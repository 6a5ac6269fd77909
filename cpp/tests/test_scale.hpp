// How much work the stress tests do: full size in optimised builds, a fraction under sanitizers
// (10-50x slower) and in Debug builds, so that the whole suite stays within minutes on 2 cores.
// CORRAL_TEST_SCALE=<divisor> in the environment overrides.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace corral::testing {

inline std::size_t scale_divisor() {
  if (const char* text = std::getenv("CORRAL_TEST_SCALE")) {
    long value = std::strtol(text, nullptr, 10);
    if (value > 0) return static_cast<std::size_t>(value);
  }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return 50;
#elif !defined(NDEBUG) && !defined(__OPTIMIZE__)
  return 10;
#else
  return 1;
#endif
}

// `full` scaled down, never below `floor`.
inline std::size_t scaled(std::size_t full, std::size_t floor = 1) {
  std::size_t n = full / scale_divisor();
  return n < floor ? floor : n;
}

inline bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

}  // namespace corral::testing
