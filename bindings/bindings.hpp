// One bind_<concept>() per file in bindings/; module.cpp calls them all.
// Bindings stay thin: conversion only, and the GIL released around anything that waits.
#pragma once

#include <nanobind/nanobind.h>

namespace corral::bindings {

namespace nb = nanobind;

}  // namespace corral::bindings
