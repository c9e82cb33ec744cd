// localvold: the node agent process.
//
//   localvold [--config PATH] [--log-level LEVEL] [--csi-socket PATH]
//   localvold --csi-controller-only [--csi-socket PATH]   (agent/csi/csi_server.h)
//
// Threading model (set up in RunDaemon, in this order):
//   * main thread: blocks SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 before any
//     other thread exists, so only it receives them (sigtimedwait; the USR
//     signals are logged and ignored, SIGPIPE is ignored). It loads the config,
//     attaches the disks, mounts the volumes, starts the API and metrics,
//     tells systemd READY=1, then waits for signals; between signals it pings
//     the systemd watchdog after checking that the VolumeManager's locks can
//     be taken (a deadlocked agent stops pinging and systemd restarts it).
//   * the data path: one iopath::Engine per attached disk, each with its own
//     ring and completion thread (owned by the VolumeManager, created in
//     VolumeManager::Start, destroyed after the volumes in Shutdown), and per
//     volume the FUSE worker threads (fuse::Volume), which submit to their
//     disk's engine. Volumes on one disk share its engine by weight; disks
//     are independent. Before touching any disk, the main thread checks that
//     an engine can be created at all (a kernel without io_uring stops here).
//   * gRPC's thread pool: API handlers and, on the second socket, the CSI
//     driver's (agent/csi/), both calling the VolumeManager.
//   * the metrics exposer's threads (MetricsServer) and the trash thread
//     (VolumeManager): background work.
// On SIGTERM/SIGINT: STOPPING=1, the API stops taking calls (in-flight ones
// finish), metrics stop, every volume is unmounted (in parallel; a busy one
// gets the fuse layer's 10 s grace, then its users see ENOTCONN), the disks'
// engines stop, the disks are unmounted, and the process exits 0.
#pragma once

namespace localvol::agent {

// Runs the daemon; returns the process exit status (0 after a clean stop,
// 1 when start-up fails, 2 for bad arguments or configuration).
int RunDaemon(int argc, char** argv);

}  // namespace localvol::agent
