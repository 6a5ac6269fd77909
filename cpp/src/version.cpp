#include "corral/version.hpp"

namespace corral {

const char* version() noexcept {
  return "0.1.0";
}

}  // namespace corral
