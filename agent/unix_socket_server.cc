// clang-format off
#include "agent/grpcpp.h"  // first: see there
// clang-format on

#include "agent/unix_socket_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "agent/system.h"
#include "base/logging.h"
#include "base/unique_fd.h"

namespace localvol::agent {
namespace {

// True if a process accepts connections on the Unix socket at `path`.
bool SomeoneListens(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

Status UnixSocketServer::CheckSocketFree(const std::string& socket_path) {
  struct stat st;
  if (::lstat(socket_path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) {
    return Status::Error(
        EEXIST,
        socket_path + " exists and is not a socket; remove it or choose another socket path");
  }
  if (SomeoneListens(socket_path)) {
    return Status::Error(EADDRINUSE, "another process (a running localvold?) serves " +
                                         socket_path +
                                         "; stop it, or give this one another socket path");
  }
  return Status::Ok();
}

Result<std::unique_ptr<UnixSocketServer>> UnixSocketServer::Start(
    const std::string& socket_path, const std::vector<grpc::Service*>& services,
    const std::string& what) {
  if (socket_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::Error(ENAMETOOLONG,
                         "socket path " + socket_path + " is too long for a Unix socket");
  }
  const std::string dir = socket_path.substr(0, socket_path.rfind('/'));
  if (!dir.empty()) {
    Status st = MakeDirs(dir, 0755);
    if (!st.ok()) return st;
  }
  if (Status s = CheckSocketFree(socket_path); !s.ok()) return s;
  ::unlink(socket_path.c_str());  // a stale socket left by a crashed agent
  std::unique_ptr<UnixSocketServer> server(new UnixSocketServer());
  server->socket_path_ = socket_path;
  server->what_ = what;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  for (grpc::Service* s : services) builder.RegisterService(s);
  // The socket is born 0600: nobody else can connect in the window before chmod.
  const mode_t old_umask = ::umask(077);
  server->server_ = builder.BuildAndStart();
  ::umask(old_umask);
  if (!server->server_) {
    return Status::Error(EADDRNOTAVAIL, "could not serve gRPC on unix:" + socket_path);
  }
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    const int err = errno;
    server->Shutdown();
    return Status::Error(err, "chmod 0600 " + socket_path);
  }
  GetLogger("api")->info("serving {} on unix:{}", what, socket_path);
  return server;
}

UnixSocketServer::~UnixSocketServer() { Shutdown(); }

void UnixSocketServer::Shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
  server_->Wait();
  server_.reset();
  ::unlink(socket_path_.c_str());
  GetLogger("api")->info("{} on unix:{} stopped", what_, socket_path_);
}

}  // namespace localvol::agent
