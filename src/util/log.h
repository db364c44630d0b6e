// Logging goes through spdlog; this header only fixes the include and names
// the project's helpers so that layers do not each configure it.
#pragma once

#include <spdlog/spdlog.h>

namespace vfsd::log {
using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;
}  // namespace vfsd::log
