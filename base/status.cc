#include "base/status.h"

#include <cstring>

namespace localvol {

std::string Status::ToString() const {
  if (ok()) return "ok";
  return context_ + ": " + std::strerror(err_);
}

}  // namespace localvol
