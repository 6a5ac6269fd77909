// The scheduler's worker threads: the thread records (claimed under spawn_mutex, never freed),
// starting workers and spares, a worker's loop and its sleep, spare retirement, running one task,
// the calling thread's thread_state, and the global scheduler with its fork handlers.
// docs/scheduler.md "Blocking scopes", "Queues" (records), "Fork".
//
// Invariant: a worker record, once made, lives as long as the scheduler (thieves and the wait
// monitor read any record at any time); records are claimed and threads started only under
// spawn_mutex, never beyond max_threads; a spare retires only while threads > slots + blocked +
// returners.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <mutex>

#include "scheduler_state.hpp"

namespace corral {

using detail::task;
using detail::worker;

namespace detail {
constinit thread_local thread_state tls_state;

int create_thread_without_async_signals(pthread_t* thread, const pthread_attr_t* attributes,
                                        void* (*entry)(void*), void* arg) noexcept {
  sigset_t all, previous;
  sigfillset(&all);
  for (int sync_signal : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT})
    sigdelset(&all, sync_signal);
  pthread_sigmask(SIG_SETMASK, &all, &previous);  // the new thread inherits the mask
  int rc = pthread_create(thread, attributes, entry, arg);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return rc;
}
}  // namespace detail

namespace {

using detail::bump;
using detail::kernel_thread_id;
using detail::this_thread;

constexpr std::size_t default_stack_size = std::size_t{64} << 20;

void* worker_entry(void* arg) {
  auto* w = static_cast<worker*>(arg);
  w->owner.run_worker(*w);
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Records and threads.

worker* scheduler::state::claim_record_locked() {
  for (unsigned i = 0; i < record_capacity; ++i) {
    worker* candidate = workers[i].load(std::memory_order_relaxed);
    if (candidate == nullptr) {
      worker_storage[i] = std::make_unique<worker>(*this, i);
      worker* w = worker_storage[i].get();
      w->alive.store(true, std::memory_order_relaxed);
      workers[i].store(w, std::memory_order_release);
      if (high_water.load(std::memory_order_relaxed) < i + 1)
        high_water.store(i + 1, std::memory_order_release);
      return w;
    }
    if (!candidate->alive.load(std::memory_order_acquire)) {
      if (candidate->joinable) {  // its previous thread retired; reap it (it is at most finishing
                                  // its return)
        pthread_join(candidate->thread, nullptr);
        candidate->joinable = false;
      }
      candidate->alive.store(true, std::memory_order_relaxed);
      return candidate;
    }
  }
  return nullptr;
}

bool scheduler::state::start_thread_locked() {
  if (stopping.load(std::memory_order_relaxed)) return false;
  if (threads.load(std::memory_order_relaxed) >= max_threads) return false;
  worker* w = claim_record_locked();
  if (w == nullptr) return false;

  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setstacksize(&attributes,
                            opts.stack_size != 0 ? opts.stack_size : default_stack_size);
  unsigned now = threads.fetch_add(1, std::memory_order_relaxed) + 1;
  int rc = detail::create_thread_without_async_signals(&w->thread, &attributes, &worker_entry, w);
  pthread_attr_destroy(&attributes);
  if (rc != 0) {
    threads.fetch_sub(1, std::memory_order_relaxed);
    w->alive.store(false, std::memory_order_relaxed);
    return false;
  }
  w->joinable = true;
  // spawn_mutex is held: the only writer, as for high_water.
  if (peak_threads.load(std::memory_order_relaxed) < now)
    peak_threads.store(now, std::memory_order_relaxed);
  return true;
}

void scheduler::state::start_spare() noexcept {
  try {
    std::lock_guard<std::mutex> lock(spawn_mutex);
    // Re-check under the lock: someone else may have started one, or a worker may have woken.
    if (start_thread_locked()) spares_started.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {  // out of memory for a thread record: the existing workers will get to the work
  }
}

void scheduler::state::run_worker(worker& w) {
  detail::thread_state& me = this_thread();
  me = {this, &w, false, false};
  w.tid.store(kernel_thread_id(), std::memory_order_relaxed);
  {
    char name[16];
    std::snprintf(name, sizeof name, "corral-%u", w.index);
    pthread_setname_np(pthread_self(), name);
  }
  bool retired = false;
  for (;;) {
    if (!me.has_slot && !wait_for_slot_and_work(w, retired)) break;
    task* t = find_task(w);
    if (t == nullptr) t = search(w);
    if (t == nullptr) {  // nothing anywhere: give the slot back and go to sleep
      release_slot();
      continue;
    }
    execute(w, t);
    // A task boundary: give the slot to a returning blocked thread, or shed it after set_slots
    // shrank.
    if (should_yield()) release_slot();
  }
  if (retired) {
    // Nobody will join a retired spare (the global scheduler is never destroyed): detach. The
    // destructor waits for `alive` to drop instead; after that store this thread touches nothing of
    // ours.
    std::lock_guard<std::mutex> lock(spawn_mutex);
    if (w.joinable) {
      pthread_detach(w.thread);
      w.joinable = false;
    }
  } else {
    threads.fetch_sub(1, std::memory_order_relaxed);
  }
  me = {};
  w.alive.store(false, std::memory_order_release);
}

// Sleeps until there is work and a slot for it; returns true holding a slot. Returns false when the
// scheduler stops or this thread retires (a spare, idle for options::spare_idle).
bool scheduler::state::wait_for_slot_and_work(worker& w, bool& retired) {
  detail::thread_state& me = this_thread();
  for (;;) {
    if (stopping.load(std::memory_order_acquire)) return false;
    if (work_available() && try_acquire_slot(false)) {
      me.has_slot = true;
      return true;
    }
    std::uint32_t key = work_ec.prepare_wait();
    // Re-check after announcing ourselves: a push or slot release that our first check missed has
    // now either become visible here or will see us as a waiter and bump the epoch
    // (event_count.hpp).
    if (stopping.load(std::memory_order_acquire) || (slot_free_for_new() && work_available())) {
      work_ec.cancel_wait();
      wake_pending.store(0, std::memory_order_relaxed);
      continue;
    }
    bump(w.parks);
    // More threads than slots: this one may be a spare, surplus now or once the threads blocked in
    // scopes return, which wakes no one: it looks again every spare_idle (an untimed wait here left
    // a spare parked for good when the last scope ended after it parked).
    if (threads.load(std::memory_order_relaxed) > slots.load(std::memory_order_relaxed)) {
      bool notified = work_ec.commit_wait_for(key, opts.spare_idle);
      wake_pending.store(0, std::memory_order_relaxed);
      if (!notified) {
        unsigned n = threads.load(std::memory_order_relaxed);
        while (surplus_threads()) {
          if (threads.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
            retired = true;
            return false;
          }
        }
      }
    } else {
      work_ec.commit_wait(key);
      wake_pending.store(0, std::memory_order_relaxed);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The global scheduler and fork.
//
// After fork() the child has one thread: the parent's workers do not exist there, and any lock they
// held stays held. So the child forgets the parent's global scheduler (leaked on purpose:
// destroying it would join threads that do not exist) and makes a fresh one on first use. The
// prepare handler takes the global mutex so that the child never inherits it locked by a thread
// that is gone.

namespace {
std::mutex global_mutex;
std::atomic<scheduler*> global_scheduler{nullptr};
std::once_flag fork_handlers_installed;

void before_fork() {
  global_mutex.lock();
}

void after_fork_in_parent() {
  global_mutex.unlock();
}

void after_fork_in_child() {
  global_scheduler.store(nullptr, std::memory_order_relaxed);
  this_thread() = {};  // if fork was called from a worker, this thread is no worker in the child
  global_mutex.unlock();
}
}  // namespace

scheduler& scheduler::global() {
  scheduler* s = global_scheduler.load(std::memory_order_acquire);
  if (s != nullptr) return *s;
  std::call_once(fork_handlers_installed,
                 [] { pthread_atfork(&before_fork, &after_fork_in_parent, &after_fork_in_child); });
  std::lock_guard<std::mutex> lock(global_mutex);
  s = global_scheduler.load(std::memory_order_relaxed);
  if (s == nullptr) {
    s = new scheduler();  // never destroyed: workers may still run tasks while the process exits
    global_scheduler.store(s, std::memory_order_release);
  }
  return *s;
}

}  // namespace corral
