// One bind_<concept>() per file in bindings/; module.cpp calls them all.
// Bindings stay thin: conversion only, and the GIL released around anything that waits.
#pragma once

#include <nanobind/nanobind.h>

namespace corral::bindings {

namespace nb = nanobind;

void bind_budget(nb::module_& m);
void bind_native(nb::module_& m);
void bind_partition(nb::module_& m);
void bind_permits(nb::module_& m);
void bind_share(nb::module_& m);

}  // namespace corral::bindings
