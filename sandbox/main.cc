// nodeward-sandbox: a multi-node cluster on one machine, with real agents and SDS servers.
//   nodeward-sandbox up FILE.yaml [--bin-dir=DIR]   build it; returns once everything is ready
//   nodeward-sandbox down NAME                      remove everything of it (idempotent)
//   nodeward-sandbox status NAME                    nodes, pods and processes
//   nodeward-sandbox exec NAME POD -- CMD ARGS...   run CMD in the pod's netns and cgroup
//   nodeward-sandbox demo FILE.yaml [--keep]        up, the file's traffic under capture, down
//   nodeward-sandbox app serve --port=N             the pods' application
//   nodeward-sandbox app call --to=IP:PORT --send=TEXT
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/dashed_flags.h"
#include "sandbox/app.h"
#include "sandbox/cluster.h"
#include "sandbox/demo.h"

ABSL_FLAG(std::string, bin_dir, "",
          "up: directory of nodeward-agent, nodeward-sds and nodeward-enroll (default: the "
          "directory of this binary)");
ABSL_FLAG(bool, keep_on_failure, false,
          "up: leave what was created in place when up fails (remove it with down)");
ABSL_FLAG(std::string, name, "",
          "up, demo: sandbox name to use instead of the file's (to run a file twice at once)");
ABSL_FLAG(bool, keep, false, "demo: leave the sandbox in place afterwards (remove it with down)");
ABSL_FLAG(absl::Duration, ready_timeout, absl::Seconds(30),
          "up: how long each process may take to become ready");
ABSL_FLAG(int, port, 0, "app serve: TCP port to listen on (0.0.0.0)");
ABSL_FLAG(std::string, to, "", "app call: destination IP:PORT");
ABSL_FLAG(std::string, send, "", "app call: text to send before half-closing");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3),
          "app call: deadline of the whole exchange; app serve: how long to wait for a "
          "client's text");

namespace {

constexpr char kUsage[] =
    "nodeward-sandbox: a multi-node nodeward cluster on one machine (root).\n"
    "  nodeward-sandbox up FILE.yaml [--bin-dir=DIR] [--keep-on-failure]\n"
    "  nodeward-sandbox down NAME\n"
    "  nodeward-sandbox status NAME\n"
    "  nodeward-sandbox exec NAME POD -- CMD [ARGS...]\n"
    "  nodeward-sandbox demo FILE.yaml [--bin-dir=DIR] [--name=NAME] [--keep]\n"
    "  nodeward-sandbox app serve --port=N\n"
    "  nodeward-sandbox app call --to=IP:PORT --send=TEXT [--timeout=3s]";

int Usage(const std::string& problem) {
  std::cerr << "nodeward-sandbox: " << problem << "\n" << kUsage << "\n";
  return 2;
}

int Report(const absl::Status& status) {
  if (status.ok()) return 0;
  std::cerr << "nodeward-sandbox: " << status.message() << "\n";
  return 1;
}

std::string SelfPath() {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "";
  return std::string(path, n);
}

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  bool has_separator = false;
  for (int i = 1; i < argc; ++i) has_separator |= std::string(argv[i]) == "--";
  std::vector<std::string> store;
  std::vector<char*> normalized = nodeward::DashedFlagsToUnderscores(argc, argv, store);
  std::vector<char*> parsed =
      absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  std::vector<std::string> args(parsed.begin() + 1, parsed.end());
  if (args.empty()) return Usage("no command");
  const std::string command = args[0];
  using namespace nodeward::sandbox;

  if (command == "up" || command == "demo") {
    if (args.size() != 2) return Usage(absl::StrCat(command, " takes one sandbox file"));
    UpOptions options;
    options.file = args[1];
    options.self = SelfPath();
    options.name = absl::GetFlag(FLAGS_name);
    options.bin_dir = absl::GetFlag(FLAGS_bin_dir);
    if (options.bin_dir.empty()) options.bin_dir = DirectoryOf(options.self);
    options.keep_on_failure = absl::GetFlag(FLAGS_keep_on_failure);
    options.ready_timeout = absl::GetFlag(FLAGS_ready_timeout);
    if (command == "demo") return RunDemo({.up = options, .keep = absl::GetFlag(FLAGS_keep)});
    return Report(Up(options));
  }
  if (command == "down") {
    if (args.size() != 2) return Usage("down takes a sandbox name");
    return Report(Down(args[1]));
  }
  if (command == "status") {
    if (args.size() != 2) return Usage("status takes a sandbox name");
    return Report(PrintStatus(args[1]));
  }
  if (command == "exec") {
    if (!has_separator || args.size() < 4) return Usage("exec NAME POD -- CMD [ARGS...]");
    std::vector<std::string> command_argv(args.begin() + 3, args.end());
    absl::Status status = ExecInPod(args[1], args[2], command_argv);
    std::cerr << "nodeward-sandbox: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kNotFound ? 127 : 126;
  }
  if (command == "app") {
    if (args.size() != 2) return Usage("app serve|call");
    if (args[1] == "serve") {
      int port = absl::GetFlag(FLAGS_port);
      if (port < 1 || port > 65535) return Usage("app serve needs --port=1..65535");
      return ServeApp(port, absl::GetFlag(FLAGS_timeout));
    }
    if (args[1] == "call") {
      if (absl::GetFlag(FLAGS_to).empty()) return Usage("app call needs --to=IP:PORT");
      return CallApp(absl::GetFlag(FLAGS_to), absl::GetFlag(FLAGS_send),
                     absl::GetFlag(FLAGS_timeout));
    }
    return Usage(absl::StrCat("unknown app command \"", args[1], "\""));
  }
  return Usage(absl::StrCat("unknown command \"", command, "\""));
}
