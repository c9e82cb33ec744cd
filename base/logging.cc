#include "base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace localvol {

std::shared_ptr<spdlog::logger> GetLogger(const std::string& component) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = spdlog::get(component)) return existing;
  // stderr keeps stdout free for command output; journald captures stderr.
  auto logger = spdlog::stderr_color_mt(component);
  logger->set_level(spdlog::get_level());
  return logger;
}

}  // namespace localvol
