// nodewardctl: the node-local debug CLI of nodeward-agent, over its admin API.
//   nodewardctl [--socket=PATH | --address=HOST:PORT] [-o table|json|yaml] COMMAND [flags]
// See `nodewardctl --help`.
#include <iostream>
#include <string>
#include <vector>

#include "agent/ctl/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return nodeward::ctl::Main(args, std::cout, std::cerr);
}
