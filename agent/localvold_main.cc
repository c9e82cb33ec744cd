// localvold: the localvol node agent. See agent/daemon.h.
#include "agent/daemon.h"

int main(int argc, char** argv) { return localvol::agent::RunDaemon(argc, argv); }
