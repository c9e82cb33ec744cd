// One named spdlog logger per component ("iopath", "fuse", ...), created on
// first use and shared. Thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace localvol {

std::shared_ptr<spdlog::logger> GetLogger(const std::string& component);

}  // namespace localvol
