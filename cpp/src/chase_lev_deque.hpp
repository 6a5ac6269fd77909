// The Chase-Lev work-stealing deque with the memory orderings of Lê, Pop, Cohen and Zappa Nardelli,
// "Correct and Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013), figure 1.
//
// One owner thread pushes and pops at the bottom; any thread steals from the top. Elements are
// pointers. The array grows when full; old arrays are kept until the deque dies because a thief may
// still be reading one (they are small: the sum of all old arrays is less than the current one).
//
// Orderings (and where we differ from the paper, and why):
//  * push: the element is stored relaxed, then bottom is stored with release. The paper writes a
//    release fence followed by a relaxed store; a release store is the same on x86 and ARMv8 and,
//    unlike a standalone fence, is understood by ThreadSanitizer. A thief that acquires bottom
//    therefore sees the element and everything the owner wrote into the task before pushing it.
//  * pop (the paper's take): the lowered bottom is written with a seq_cst exchange and top is read
//    seq_cst (the paper: relaxed store, seq_cst fence, relaxed load; an exchange is a locked
//    instruction, about half the cost of mfence on x86, and this is on every task's path). With the
//    seq_cst fence in steal, between "thief read top" and "thief read bottom", at least one of
//    owner and thief sees the other's claim: either the thief sees the lowered bottom and backs
//    off, or the owner sees the raised top. In C++20 terms: if the thief's bottom read misses the
//    exchange, its fence precedes the exchange in the single order S ([atomics.order] p4,
//    coherence-ordered before a seq_cst operation), the exchange precedes the owner's seq_cst top
//    read, and every top CAS the thief read from (seq_cst, read by its seq_cst top load: strongly
//    happens before the fence) precedes the fence, so the owner's read sees them. When exactly one
//    element is left both may see it; they then race with a seq_cst CAS on top and exactly one
//    wins.
//  * steal: top seq_cst (the paper: acquire; the same instruction on x86 and ARMv8, and it puts the
//    CASes it reads from before the fence in S), seq_cst fence, bottom acquire, array acquire
//    (paper: consume), element relaxed, then CAS top seq_cst. The CAS makes the claim exclusive; a
//    thief that loses returns `lost` so the caller can retry or move on.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "assert.hpp"
#include "fence.hpp"

namespace corral::detail {

template <class T>
class chase_lev_deque {
  static_assert(std::is_pointer_v<T>, "chase_lev_deque holds pointers");

 public:
  enum class steal_result { success, empty, lost };

  explicit chase_lev_deque(std::int64_t initial_capacity = 1024) {
    std::int64_t capacity = 1;
    while (capacity < initial_capacity) capacity *= 2;
    arrays_.push_back(std::make_unique<ring>(capacity));
    array_.store(arrays_.back().get(), std::memory_order_relaxed);
  }

  chase_lev_deque(const chase_lev_deque&) = delete;
  chase_lev_deque& operator=(const chase_lev_deque&) = delete;

  // Owner only.
  void push(T item) {
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    std::int64_t t = top_.load(std::memory_order_acquire);
    ring* a = array_.load(std::memory_order_relaxed);
    CORRAL_ASSERT(t <= b);  // the size is never negative outside a pop
    if (b - t > a->capacity - 1) a = grow(a, t, b);
    a->put(b, item);
    bottom_.store(b + 1, std::memory_order_release);
  }

  // Owner only. Returns nullptr when empty (or when a thief took the last element).
  T pop() noexcept {
    std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    ring* a = array_.load(std::memory_order_relaxed);
    // A seq_cst exchange then a seq_cst load, in place of the paper's store, fence, load: the same
    // store-buffering guarantee against steal's fence (see the header comment), with a locked
    // instruction instead of mfence (on x86 about half the cost).
    bottom_.exchange(b, std::memory_order_seq_cst);
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    CORRAL_ASSERT(t <= b + 1);  // at most empty: thieves never take past the bottom they saw
    if (t > b) {                // was empty
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T item = a->get(b);
    if (t == b) {  // the last element: race the thieves for it
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
        item = nullptr;
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return item;
  }

  // Any thread.
  steal_result steal(T& out) noexcept {
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    seq_cst_fence();
    std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t >= b) return steal_result::empty;
    ring* a = array_.load(std::memory_order_acquire);
    T item = a->get(t);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed))
      return steal_result::lost;
    out = item;
    return steal_result::success;
  }

  // A snapshot for heuristics and for "is there work anywhere" checks made after a seq_cst fence.
  std::int64_t size_hint() const noexcept {
    std::int64_t b = bottom_.load(std::memory_order_relaxed);
    std::int64_t t = top_.load(std::memory_order_relaxed);
    return b > t ? b - t : 0;
  }
  bool empty_hint() const noexcept { return size_hint() == 0; }

 private:
  struct ring {
    explicit ring(std::int64_t cap)
        : capacity(cap), mask(cap - 1), slots(new std::atomic<T>[cap]) {}
    T get(std::int64_t i) const noexcept { return slots[i & mask].load(std::memory_order_relaxed); }
    void put(std::int64_t i, T v) noexcept { slots[i & mask].store(v, std::memory_order_relaxed); }
    std::int64_t capacity;
    std::int64_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
  };

  [[gnu::noinline, gnu::cold]] ring* grow(ring* old, std::int64_t t, std::int64_t b) {
    arrays_.push_back(std::make_unique<ring>(old->capacity * 2));
    ring* bigger = arrays_.back().get();
    for (std::int64_t i = t; i < b; ++i) bigger->put(i, old->get(i));
    array_.store(bigger, std::memory_order_release);
    return bigger;
  }

  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  std::atomic<ring*> array_{nullptr};
  std::vector<std::unique_ptr<ring>>
      arrays_;  // owner only; every array ever used, freed with the deque
};

}  // namespace corral::detail
