// corral: one CPU budget for every layer of parallelism in a process.
#pragma once

namespace corral {

// The library's version, "MAJOR.MINOR.PATCH".
const char* version() noexcept;

}  // namespace corral
