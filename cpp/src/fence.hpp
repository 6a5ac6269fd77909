// A sequentially consistent fence that ThreadSanitizer can build.
//
// GCC refuses std::atomic_thread_fence under -fsanitize=thread (TSan does not model fences). There
// we use a seq_cst read-modify-write of one shared variable instead: on x86 it is the same full
// barrier, and TSan sees it as synchronisation between all fence users (stronger than a fence, so
// TSan may miss a race that needs the fence's weakness, but never reports a false one). Normal
// builds use the fence.
#pragma once

#include <atomic>

namespace corral::detail {

#if defined(__SANITIZE_THREAD__)
inline std::atomic<int> tsan_fence_word{0};
inline void seq_cst_fence() noexcept {
  tsan_fence_word.fetch_add(0, std::memory_order_seq_cst);
}
#else
inline void seq_cst_fence() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
#endif

}  // namespace corral::detail
