// localvold: the node agent process.
//
//   localvold [--config PATH] [--log-level LEVEL]
//
// Threading model (set up in RunDaemon, in this order):
//   * main thread: blocks SIGTERM/SIGINT/SIGHUP before any other thread
//     exists, so only it receives them (sigtimedwait). It loads the config,
//     attaches the disks, mounts the volumes, starts the API and metrics,
//     tells systemd READY=1, then waits for signals; between signals it pings
//     the systemd watchdog after checking that the VolumeManager's locks can
//     be taken (a deadlocked agent stops pinging and systemd restarts it).
//   * iopath completion thread (Engine), and per volume the FUSE worker
//     threads (fuse::Volume): the data path.
//   * gRPC's thread pool: API handlers, calling the VolumeManager.
//   * the metrics thread (MetricsServer) and the trash thread
//     (VolumeManager): background work.
// On SIGTERM/SIGINT: STOPPING=1, the API stops taking calls (in-flight ones
// finish), metrics stop, every volume is unmounted (in parallel; a busy one
// gets the fuse layer's 10 s grace, then its users see ENOTCONN), the disks
// are unmounted, and the process exits 0.
#pragma once

namespace localvol::agent {

// Runs the daemon; returns the process exit status (0 after a clean stop,
// 1 when start-up fails, 2 for bad arguments or configuration).
int RunDaemon(int argc, char** argv);

}  // namespace localvol::agent
