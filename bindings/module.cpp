#include "bindings.hpp"

#include "corral/version.hpp"

NB_MODULE(_core, m) {
  m.doc() = "corral's C++ core (thin bindings; see src/corral for the Python API)";
  m.attr("__version__") = corral::version();
  corral::bindings::bind_budget(m);
  corral::bindings::bind_native(m);
  corral::bindings::bind_partition(m);
  corral::bindings::bind_scheduler(m);
}
