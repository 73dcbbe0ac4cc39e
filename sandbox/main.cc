// nodeward-sandbox: a multi-node cluster on one machine, with real agents and SDS servers.
//   nodeward-sandbox up FILE.yaml [--bin-dir=DIR]   build it; returns once everything is ready
//   nodeward-sandbox down NAME                      remove everything of it (idempotent)
//   nodeward-sandbox status NAME                    nodes, pods and processes
//   nodeward-sandbox exec NAME POD -- CMD ARGS...   run CMD in the pod's netns and cgroup
//   nodeward-sandbox demo FILE.yaml [--keep]        up, the file's traffic under capture, down
//   nodeward-sandbox restart NAME NODE [--down-for=3s]  kill a node's agent, start it again
//   nodeward-sandbox pki --out=DIR --dns=NAME,...   a CA and a server certificate (DNS SANs)
//   nodeward-sandbox app serve --port=N [--listen=IP] [--tls-cert=F --tls-key=K] [--echo-lines]
//   nodeward-sandbox app call --to=IP:PORT --send=TEXT
//   nodeward-sandbox app chat --to=IP:PORT --send=TEXT [--lines=10] [--interval=1s]
//   nodeward-sandbox app load --to=IP:PORT --send=TEXT [--connections=1000]
#include <unistd.h>

#include <algorithm>
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
#include "sandbox/pki.h"

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
ABSL_FLAG(int, port, 0, "app serve: TCP port to listen on");
ABSL_FLAG(std::string, listen, "0.0.0.0",
          "app serve: address to listen on (0.0.0.0, :: for dual-stack, or one address)");
ABSL_FLAG(std::string, to, "", "app call: destination IP:PORT");
ABSL_FLAG(std::string, send, "", "app call: text to send before half-closing");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3),
          "app call: deadline of the whole exchange; app serve: how long to wait for a "
          "client's text; app chat: per line; app load: for all connections (default 30s)");
ABSL_FLAG(std::string, tls_cert, "", "app serve: PEM certificate chain; serve TLS");
ABSL_FLAG(std::string, tls_key, "", "app serve: PEM private key of --tls-cert");
ABSL_FLAG(bool, echo_lines, false,
          "app serve: answer every line with echo=<line> until the client closes");
ABSL_FLAG(int, lines, 10, "app chat: lines to send over the one connection");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1), "app chat: pause between lines");
ABSL_FLAG(int, connections, 1000, "app load: connections opened at once");
ABSL_FLAG(absl::Duration, down_for, absl::Seconds(3), "restart: how long the agent stays down");
ABSL_FLAG(std::string, out, "", "pki: output directory");
ABSL_FLAG(std::vector<std::string>, dns, {}, "pki: DNS names of the server certificate");

namespace {

constexpr char kUsage[] =
    "nodeward-sandbox: a multi-node nodeward cluster on one machine (root).\n"
    "  nodeward-sandbox up FILE.yaml [--bin-dir=DIR] [--keep-on-failure]\n"
    "  nodeward-sandbox down NAME\n"
    "  nodeward-sandbox status NAME\n"
    "  nodeward-sandbox exec NAME POD -- CMD [ARGS...]\n"
    "  nodeward-sandbox demo FILE.yaml [--bin-dir=DIR] [--name=NAME] [--keep]\n"
    "  nodeward-sandbox restart NAME NODE [--down-for=3s]\n"
    "  nodeward-sandbox pki --out=DIR --dns=NAME[,NAME...]\n"
    "  nodeward-sandbox app serve --port=N [--listen=IP] [--tls-cert=FILE --tls-key=FILE]\n"
    "                             [--echo-lines]\n"
    "  nodeward-sandbox app call --to=IP:PORT --send=TEXT [--timeout=3s]\n"
    "  nodeward-sandbox app chat --to=IP:PORT --send=TEXT [--lines=10] [--interval=1s]\n"
    "  nodeward-sandbox app load --to=IP:PORT --send=TEXT [--connections=1000] [--timeout=30s]";

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
  if (command == "restart") {
    if (args.size() != 3) return Usage("restart NAME NODE [--down-for=3s]");
    return Report(RestartAgent(args[1], args[2], absl::GetFlag(FLAGS_down_for),
                               absl::GetFlag(FLAGS_ready_timeout)));
  }
  if (command == "pki") {
    if (args.size() != 1 || absl::GetFlag(FLAGS_out).empty() || absl::GetFlag(FLAGS_dns).empty()) {
      return Usage("pki --out=DIR --dns=NAME[,NAME...]");
    }
    absl::Status made = MakeServerPki(absl::GetFlag(FLAGS_out), absl::GetFlag(FLAGS_dns));
    if (made.ok()) {
      std::cout << absl::GetFlag(FLAGS_out)
                << ": ca.pem, server-cert.pem, server-key.pem written\n";
    }
    return Report(made);
  }
  if (command == "app") {
    if (args.size() != 2) return Usage("app serve|call|chat|load");
    if (args[1] == "serve") {
      ServeOptions options;
      options.port = absl::GetFlag(FLAGS_port);
      options.listen = absl::GetFlag(FLAGS_listen);
      if (options.port < 1 || options.port > 65535) return Usage("app serve needs --port=1..65535");
      options.read_timeout = absl::GetFlag(FLAGS_timeout);
      options.echo_lines = absl::GetFlag(FLAGS_echo_lines);
      options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
      options.tls_key = absl::GetFlag(FLAGS_tls_key);
      if (options.tls_cert.empty() != options.tls_key.empty()) {
        return Usage("app serve: --tls-cert and --tls-key go together");
      }
      return ServeApp(options);
    }
    if (args[1] == "chat" || args[1] == "load") {
      if (absl::GetFlag(FLAGS_to).empty()) return Usage("app chat|load needs --to=IP:PORT");
      if (args[1] == "chat") {
        return ChatApp({.to = absl::GetFlag(FLAGS_to),
                        .text = absl::GetFlag(FLAGS_send),
                        .lines = absl::GetFlag(FLAGS_lines),
                        .interval = absl::GetFlag(FLAGS_interval),
                        .timeout = absl::GetFlag(FLAGS_timeout)});
      }
      // --timeout defaults to 3s for the other commands; a load run gets 30s unless told.
      absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
      if (timeout == absl::Seconds(3)) timeout = absl::Seconds(30);
      return LoadApp({.to = absl::GetFlag(FLAGS_to),
                      .text = absl::GetFlag(FLAGS_send),
                      .connections = std::max(1, absl::GetFlag(FLAGS_connections)),
                      .timeout = timeout});
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
