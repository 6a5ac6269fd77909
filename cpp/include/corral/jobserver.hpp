// GNU make's jobserver as a permit source (docs/share.md): under `make -jN`, a process takes each
// permit beyond its first as a token byte read from make's pipe or fifo, and writes the same byte
// back when the permit is returned (at exit, every one it still holds). make 4.4 passes
// `--jobserver-auth=fifo:PATH`, make 4.0-4.3 `--jobserver-auth=R,W` (older: `--jobserver-fds=R,W`)
// in MAKEFLAGS; the descriptors are open only in recipes make treats as recursive (`+`, $(MAKE)).
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "corral/permit_source.hpp"

namespace corral {

struct jobserver_auth {
  enum class kind { none, pipe, fifo } how = kind::none;
  int read_fd = -1;   // pipe
  int write_fd = -1;  // pipe
  std::string fifo;   // fifo
  int jobs = 0;       // -jN when MAKEFLAGS says it (0: not said)
};

// What MAKEFLAGS says; the last --jobserver-auth/--jobserver-fds wins, as in make.
jobserver_auth parse_makeflags(std::string_view makeflags);

class jobserver final : public permit_source {
 public:
  // A client of the jobserver `auth` names; nullptr with `why` set when its descriptors are not
  // open pipes in this process or its fifo cannot be opened.
  static std::unique_ptr<jobserver> connect(const jobserver_auth& auth, std::string* why);
  ~jobserver() override;
  jobserver(const jobserver&) = delete;
  jobserver& operator=(const jobserver&) = delete;

  bool try_take() noexcept override;
  void give_back() noexcept override;
  void after_fork_child() noexcept override;
  std::string describe() const override;
  // Tokens this process holds now.
  unsigned held() const noexcept;
  // Writes back every token still held (also run at exit); later give_back calls are no-ops.
  void return_all() noexcept;

 private:
  jobserver(jobserver_auth auth, int read_fd, int write_fd, bool own_write);
  mutable std::mutex mutex_;
  jobserver_auth auth_;
  int read_fd_ = -1;  // our own open file description, non-blocking (make's stays as make set it)
  int write_fd_ = -1;
  bool own_write_ = false;
  std::vector<char> tokens_;  // the bytes read, written back as they were
};

}  // namespace corral
