// localvolctl: the command line client of the localvol.v1 API.
//
//   localvolctl [--socket PATH] [-o table|json] disk list
//   localvolctl ... volume create NAME --size SIZE [--inodes N] [--disk ID]
//   localvolctl ... volume list
//   localvolctl ... volume inspect NAME
//   localvolctl ... volume resize NAME --size SIZE [--inodes N]
//   localvolctl ... volume delete NAME
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
