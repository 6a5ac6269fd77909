// What `python -m corral report`'s in-program probe needs from C++: a write that cannot land in a
// file the program opened under the probe's descriptor number (src/corral/_report_probe.py).
#include <nanobind/stl/string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "bindings.hpp"

namespace corral::bindings {

void bind_report(nb::module_& m) {
  // The check and the write run without releasing the GIL: a Python program that closed the
  // descriptor (os.closerange, itself without the GIL) cannot open another file under its number
  // in between, as it could between the probe's own os.fstat and os.write.
  m.def(
      "write_if_same_file",
      [](int fd, unsigned long long dev, unsigned long long ino, nb::bytes data) {
        struct stat st{};
        if (::fstat(fd, &st) != 0) return false;
        if (static_cast<unsigned long long>(st.st_dev) != dev ||
            static_cast<unsigned long long>(st.st_ino) != ino)
          return false;
        const char* p = data.c_str();
        size_t left = data.size();
        while (left > 0) {
          const ssize_t n = ::write(fd, p, left);
          if (n <= 0) return false;
          p += n;
          left -= static_cast<size_t>(n);
        }
        return true;
      },
      nb::arg("fd"), nb::arg("dev"), nb::arg("ino"), nb::arg("data"),
      "Writes data to fd only if fd is still the file (st_dev, st_ino); True when written. The GIL "
      "is held throughout (see bind_report.cpp).");
}

}  // namespace corral::bindings
