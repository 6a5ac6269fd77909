// blocking_scope: wrap code that is about to block (I/O, a lock, a sleep, a foreign future). On a
// worker thread that holds a slot, the slot is handed to another thread for the duration (a parked
// worker, or a spare thread started for the purpose when work is waiting), so the CPU keeps
// working. On the way out the thread takes the next free slot ahead of any new task: running tasks
// yield to it at their next task boundary. Nested scopes, and scopes off worker threads, do
// nothing.
#pragma once

namespace corral {

class scheduler;

class blocking_scope {
 public:
  blocking_scope() noexcept;
  ~blocking_scope();
  blocking_scope(const blocking_scope&) = delete;
  blocking_scope& operator=(const blocking_scope&) = delete;

 private:
  scheduler* released_from_ = nullptr;  // set when this scope gave a slot away
};

}  // namespace corral
