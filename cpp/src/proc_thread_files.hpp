// The /proc files through which a monitor samples the threads it watches
// (/proc/self/task/<tid>/{stat,syscall}, and schedstat where the run delay is asked for), each
// opened once per thread and read with pread; and /proc/self/task itself, listed with getdents64
// where all of the process's threads are looked at.
//
// Why not open, read and close at each sample: the monitor runs beside the program, and a program
// that closes descriptors it did not open (os.closerange(3, ...)) and then opens its own could be
// handed, between the monitor's open and close, the number of the monitor's file; the monitor then
// read from the program's file (moving its offset) and closed it. Here a file is opened once per
// watched thread, so that window opens once per thread instead of at every sample, and a number the
// program has taken over is never read with a moving offset nor closed:
//  * reads use pread, which moves no offset and fails with ESPIPE on pipes, sockets and terminals;
//  * a stat file must begin with "<tid> (", and a syscall or schedstat file is used only while
//  fstat
//    says it is the inode opened (else the files are dropped and opened again at the next sample);
//  * a file is closed only while fstat says it is still the inode opened; a number that is not is
//    the program's now and is left alone.
// Every open file is also listed in a process-wide table that a forked child empties at once: the
// monitor's thread does not exist there, and the child must not inherit its files (a program's
// child sees the descriptors plain python's would).
#pragma once

#include <sys/types.h>

#include <vector>

namespace corral::detail {

enum class sleep_kind { none, futex, other };

struct thread_sample {
  bool readable = false;  // false: the thread is gone or /proc is not there
  bool asleep = false;    // state S (interruptible) or D (uninterruptible)
  sleep_kind kind = sleep_kind::none;
  unsigned long long cpu_ns = 0;  // CPU time so far (thread_cpu_ns), read when asleep
};

class proc_thread_files {
 public:
  proc_thread_files() noexcept;
  ~proc_thread_files();  // closes every file still open (those that are still ours)
  proc_thread_files(const proc_thread_files&) = delete;
  proc_thread_files& operator=(const proc_thread_files&) = delete;

  // How thread `tid` of this process is now: its state, and when asleep its CPU time and the kind
  // of system call it sleeps in. Never throws; a file that cannot be opened or read, or that is
  // not ours any more, reads as "not asleep" (never guess).
  thread_sample sample(pid_t tid) noexcept;

  // How long thread `tid` has been runnable but not running so far (ns; the second field of its
  // schedstat, CONFIG_SCHED_INFO), in `delay_ns`. False when it cannot be read: no such file, the
  // thread is gone, the file is not ours any more.
  bool run_delay_ns(pid_t tid, unsigned long long& delay_ns) noexcept;

  // How many threads of this process other than `except_tid` are runnable now (state R: running,
  // or waiting on a runqueue), listed through /proc/self/task (a directory kept open as the files
  // are). -1 when that cannot be told: no /proc, the directory is not ours any more, or a thread's
  // file cannot be opened (the table is full).
  int runnable_threads_besides(pid_t except_tid) noexcept;

  // Ends one pass of the monitor: closes the files of threads not sampled for idle_passes_to_close
  // passes (threads that finished their task, compute, or exited).
  void end_pass() noexcept;

  // Closes them all: the monitor has nothing to watch and goes to sleep (or ends).
  void close_all() noexcept;

  // The descriptors open now (tests).
  std::vector<int> open_descriptors() const;

  static constexpr unsigned idle_passes_to_close = 64;

 private:
  struct entry {  // slots in the process-wide table (proc_thread_files.cpp); -1: not open
    pid_t tid = 0;
    int stat_slot = -1;
    int syscall_slot = -1;    // opened at the first sample that finds the thread asleep
    int schedstat_slot = -1;  // opened at the first run_delay_ns
    unsigned idle_passes = 0;
  };

  // The entry of `tid`, with its stat file open (the others are opened when first read); nullptr
  // when it cannot be opened.
  entry* open_entry(pid_t tid) noexcept;
  static void close_entry(entry& e) noexcept;
  // Closes e's files and forgets it (e points into entries_).
  void drop(entry* e) noexcept;
  // In a forked child: drops the entries made in the parent (the child's handler closed them).
  void forget_if_forked() noexcept;

  std::vector<entry> entries_;
  int task_dir_slot_ = -1;  // /proc/self/task, opened at the first runnable_threads_besides
  unsigned epoch_;          // the table's epoch when the entries were opened
};

}  // namespace corral::detail
