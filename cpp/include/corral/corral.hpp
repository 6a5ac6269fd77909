// The whole public C++ API of corral in one include. Each header below is one facility and can be
// included on its own; what lives in corral/detail/ (and in cpp/src) is internal.
#pragma once

// The budget: how many CPUs this process may keep busy, and where that figure came from.
#include "corral/budget.hpp"         // read_budget, budget, budget_options
#include "corral/budget_source.hpp"  // budget_source: one figure and where it came from
#include "corral/cgroup.hpp"         // cgroup v1/v2 CPU quotas and cpusets
#include "corral/cpu_set.hpp"        // cpu_set and the kernel's cpu-list text format
#include "corral/topology.hpp"       // cpu_topology: cores, SMT siblings, NUMA nodes

// The permit table: one budget of permits shared by every pool of a process.
#include "corral/jobserver.hpp"      // jobserver: GNU make's tokens as permits
#include "corral/machine_share.hpp"  // machine_share: one pool of permits for programs side by side
#include "corral/permit_source.hpp"  // permit_source: permits from beyond the process
#include "corral/permit_table.hpp"   // permit_table, permit, permit_pause, permit_stats

// BLAS/OpenMP thread limits.
#include "corral/native.hpp"          // the native libraries loaded, and their thread counts
#include "corral/native_library.hpp"  // one library's controls
#include "corral/native_policy.hpp"   // task_native_limits, native_limit_observer

// CPU sets for the workers of a process pool.
#include "corral/partition.hpp"  // partition_cpus, partition_order, flat_topology

// The work-stealing scheduler.
#include "corral/blocking.hpp"      // blocking_scope
#include "corral/event.hpp"         // event
#include "corral/parallel_for.hpp"  // parallel_for
#include "corral/scheduler.hpp"     // scheduler, scheduler_stats, task_observer
#include "corral/task_group.hpp"    // task_group

#include "corral/version.hpp"  // version()
