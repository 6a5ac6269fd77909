// A machine share: one pool of permits for every corral process of one user that joins it by name
// (docs/share.md). The share is a file (0600) in a private per-user directory; holding permit i is
// holding an open-file-description lock (F_OFD_SETLK) on byte i of its permit range, so the kernel
// gives back every permit of a process that dies, SIGKILL included, with no cleanup by anyone.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "corral/permit_source.hpp"

namespace corral {

struct share_member {
  pid_t pid = 0;
  unsigned permits = 0;  // permits it holds now, beyond its own first
};

struct share_status {
  std::string name;
  std::string path;
  unsigned size = 0;                  // permits in the share
  unsigned held = 0;                  // permit bytes locked now (counted through the locks)
  std::vector<share_member> members;  // live members (their record's lock is held)
  bool stale = false;  // a file no member holds (its last member was killed); removed by inspect()
};

class machine_share final : public permit_source {
 public:
  static constexpr unsigned max_size = 65536;
  static constexpr std::string_view default_name = "default";

  // Joins (creating if need be) the share `name` of the calling user. `size` 0: the creator's CPU
  // budget (budget.hpp); a share that exists keeps the size its creator gave it.
  // std::invalid_argument: a name that is not [A-Za-z0-9_.-]{1,64} without a leading dot, or a size
  // above max_size. std::system_error: the directory or the file is not private to this user
  // (another owner, group or other permissions, a symbolic link), or cannot be made.
  static std::unique_ptr<machine_share> join(const std::string& name, unsigned size = 0);
  // std::invalid_argument unless `name` is a plain share name (see join).
  static void check_name(std::string_view name);
  // The directory shares live in, checked (see join) when it exists, created 0700 when missing and
  // `create`: $XDG_RUNTIME_DIR/corral, else /tmp/corral-$UID. The last member of the last share
  // removes it, so nothing of corral's is left once no share has a member.
  static std::string directory(bool create = true);
  // The share `name` as it stands, without joining; nullopt when there is no such file. A stale
  // file (no member) is removed and reported with stale = true.
  static std::optional<share_status> inspect(const std::string& name);
  // The names of the shares in directory().
  static std::vector<std::string> list();
  // Leaves the share this process joined last, as at exit (a no-op when there is none): for an
  // interpreter that may end by re-raising a signal after its own exit handlers, where the C
  // runtime's atexit never runs.
  static void leave_joined() noexcept;

  ~machine_share() override;
  machine_share(const machine_share&) = delete;
  machine_share& operator=(const machine_share&) = delete;

  bool try_take() noexcept override;
  void give_back() noexcept override;
  void after_fork_child() noexcept override;
  std::string describe() const override;

  const std::string& name() const noexcept { return name_; }
  const std::string& path() const noexcept { return path_; }
  unsigned size() const noexcept { return size_; }
  // Permits this process holds from the share now.
  unsigned held() const noexcept;
  // Leaves the share: gives back every permit, and removes the file when this was its last member.
  // Also run at exit. Later calls to try_take fail.
  void leave() noexcept;

 private:
  machine_share(std::string name, std::string path, unsigned requested_size);
  void open_locked();  // (re)joins: after construction, and lazily in a forked child
  void write_record_locked() noexcept;
  void close_locked() noexcept;
  // Whether fd_ is still the file opened (dev, inode); forgets it (lost_) when the program closed
  // it.
  bool fd_still_ours_locked() noexcept;

  mutable std::mutex mutex_;
  std::string name_;
  std::string path_;
  unsigned requested_size_ = 0;
  unsigned size_ = 0;
  int fd_ = -1;
  pid_t opened_by_ = 0;             // the pid that opened fd_: a forked child opens its own
  std::pair<dev_t, ino_t> file_{};  // fd_'s device and inode, to tell it from a number reused
  bool lost_ = false;  // the program closed fd_: no share from then on (every take granted)
  long record_ = -1;   // this process's member record
  bool left_ = false;
  unsigned next_ = 0;             // where the next search for a free permit starts
  std::vector<unsigned> mine_;    // the permit bytes this process holds
  std::vector<bool> held_by_me_;  // mine_ as a bitmap (size_ entries)
};

}  // namespace corral
