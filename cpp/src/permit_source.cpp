// The permit source the environment names (permit_source.hpp): CORRAL_SHARE, else make's jobserver.
#include "corral/permit_source.hpp"

#include <charconv>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "corral/jobserver.hpp"
#include "corral/machine_share.hpp"

namespace corral {

std::unique_ptr<permit_source> permit_source_from_environment(std::string* note) {
  const char* name = std::getenv("CORRAL_SHARE");
  if (name != nullptr && name[0] != '\0') {
    unsigned size = 0;
    const char* size_text = std::getenv("CORRAL_SHARE_SIZE");
    if (size_text != nullptr && size_text[0] != '\0') {
      const std::string_view text(size_text);
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), size);
      if (ec != std::errc() || end != text.data() + text.size() || size < 1 ||
          size > machine_share::max_size)
        throw std::invalid_argument(
            "corral: CORRAL_SHARE_SIZE must be a number of permits from 1 to " +
            std::to_string(machine_share::max_size) + ", got '" + std::string(text.substr(0, 40)) +
            "'");
    }
    return machine_share::join(name, size);
  }
  const char* makeflags = std::getenv("MAKEFLAGS");
  if (makeflags == nullptr) return nullptr;
  const jobserver_auth auth = parse_makeflags(makeflags);
  if (auth.how == jobserver_auth::kind::none) return nullptr;
  std::string why;
  auto js = jobserver::connect(auth, &why);
  if (js == nullptr && note != nullptr) *note = why;
  return js;
}

}  // namespace corral
