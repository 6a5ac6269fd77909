// Where a process's running permits come from when it is not alone on the machine (docs/share.md).
// The permit table (permit_table.hpp) asks its source for one before it lets one more thread of the
// process run, and gives it back when that thread's permit comes back and nobody of the process
// waits for it; the process's first thread runs even when the source has none (its own permit, as
// make gives each job one), so a program always makes progress, whatever the others hold. oneTBB's
// permit_manager is the model: the process's budget caps what it may run, the source what the
// machine lets it run.
//
// Two sources: a machine share (machine_share.hpp: file locks in a per-user directory) and GNU
// make's jobserver (jobserver.hpp). The table calls a source under its own mutex, one call at a
// time; a source locks itself too, for its exit and fork paths.
#pragma once

#include <memory>
#include <string>

namespace corral {

class permit_source {
 public:
  virtual ~permit_source() = default;
  // One more permit for this process if the machine has one free now; never waits.
  virtual bool try_take() noexcept = 0;
  // Gives back one permit taken by try_take (a no-op once the process has given all back at exit).
  virtual void give_back() noexcept = 0;
  // In the child after fork(): the parent's permits stay the parent's; the child starts with none.
  virtual void after_fork_child() noexcept = 0;
  // One line for `-v` and `info`: which share or jobserver, and its size.
  virtual std::string describe() const = 0;
};

// The source the environment names, for permit_table::process(): CORRAL_SHARE=NAME (with
// CORRAL_SHARE_SIZE=N) joins that machine share; otherwise a usable jobserver in MAKEFLAGS;
// otherwise none (nullptr). std::invalid_argument for a malformed CORRAL_SHARE or
// CORRAL_SHARE_SIZE, std::system_error when the share cannot be opened safely. `note` receives why
// a jobserver named in MAKEFLAGS was not used (its descriptors not passed to this process), or is
// left empty.
std::unique_ptr<permit_source> permit_source_from_environment(std::string* note);

}  // namespace corral
