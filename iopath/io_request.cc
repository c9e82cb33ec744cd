#include "iopath/io_request.h"

namespace localvol::iopath {

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "read";
    case IoOp::kWrite:
      return "write";
    case IoOp::kFsync:
      return "fsync";
    case IoOp::kFdatasync:
      return "fdatasync";
    case IoOp::kFallocate:
      return "fallocate";
  }
  return "unknown";
}

}  // namespace localvol::iopath
