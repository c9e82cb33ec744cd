// localvolctl: the command line client of the localvol.v1 API.
//
//   localvolctl [--socket PATH] [-o table|json] disk list
//   localvolctl ... volume create NAME --size SIZE [--inodes N] [--disk ID] [LIMITS]
//   localvolctl ... volume list
//   localvolctl ... volume inspect NAME
//   localvolctl ... volume resize NAME --size SIZE [--inodes N]
//   localvolctl ... volume set-limits NAME [--unlimited] [LIMITS]
//   localvolctl ... volume delete NAME
//
// LIMITS are `--<key> VALUE` for every key of iopath::IoLimitKeys() (the
// manifest's spelling): --read-iops 500 --read-iops-burst 2000
// --read-iops-burst-seconds 10 --write-bps 100Mi --weight 200 ... set-limits
// merges: the volume's current limits (GetVolume), minus every rate limit with
// --unlimited, then the flags given; `--read-iops 0` removes that limit and
// its burst. Bad values, or limits that are invalid together, are usage
// errors (exit 2) and nothing is sent to change the volume.
//
// Output is a table (or key: value lines for one volume) by default, and the
// API's messages as JSON with -o json. Exit status: 0 on success, 1 when the
// agent refuses or fails (the message and the gRPC code go to `err`), 2 for
// bad command-line usage, 3 when the agent cannot be reached.
// Not thread-safe: one call per process.
#pragma once

#include <ostream>

namespace localvol::agent {

int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace localvol::agent
