// localvolctl: command line client of localvold. See agent/ctl.h.
#include <iostream>

#include "agent/ctl.h"

int main(int argc, char** argv) {
  return localvol::agent::RunCtl(argc, argv, std::cout, std::cerr);
}
