// nodeward-cni: the chained CNI plugin (run by the container runtime with CNI_COMMAND set),
// and its installer, run by the DaemonSet's init container:
//   nodeward-cni install   --cni-bin-dir=DIR --cni-net-dir=DIR [--agent-socket=PATH]
//                          [--enrolled-namespaces-file=PATH] [--pod-state-dir=DIR]
//                          [--log-file=PATH] [--timeout-seconds=N] [--wait-seconds=N]
//   nodeward-cni uninstall --cni-bin-dir=DIR --cni-net-dir=DIR
// Built static: the runtime runs it on the host, where the image's libraries are not.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/cni/conflist.h"
#include "agent/cni/invocation.h"
#include "agent/cni/plugin.h"

extern char** environ;

namespace {

using nodeward::JsonValue;

constexpr std::size_t kMaxStdin = (1 << 20) + 1;

// One line per call; kept to about 2 MiB on the node by turning the file over at 1 MiB.
void AppendLine(const std::string& path, const std::string& line) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && st.st_size > (1 << 20)) {
    rename(path.c_str(), (path + ".1").c_str());
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const std::string text = line + "\n";
  (void)!write(fd, text.data(), text.size());
  close(fd);
}

int Plugin() {
  nodeward::cni::Environment environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const std::size_t equals = text.find('=');
    if (equals != std::string::npos && absl::StartsWith(text, "CNI_")) {
      environment[text.substr(0, equals)] = text.substr(equals + 1);
    }
  }
  std::string input;
  if (environment["CNI_COMMAND"] != "VERSION") {
    char buffer[16384];
    ssize_t n;
    while (input.size() < kMaxStdin && (n = read(0, buffer, sizeof(buffer))) > 0) {
      input.append(buffer, static_cast<std::size_t>(n));
    }
  }
  const nodeward::cni::PluginRun run = nodeward::cni::RunPlugin(environment, input);
  std::fwrite(run.stdout_text.data(), 1, run.stdout_text.size(), stdout);
  std::fflush(stdout);
  if (!run.log_line.empty()) {
    std::cerr << "nodeward-cni: " << run.log_line << "\n";
    if (!run.log_file.empty()) AppendLine(run.log_file, run.log_line);
  }
  return run.exit_code;
}

int Usage(const std::string& problem) {
  std::cerr << "nodeward-cni: " << problem
            << "\nusage: nodeward-cni install --cni-bin-dir=DIR --cni-net-dir=DIR [--agent-socket="
               "PATH] [--enrolled-namespaces-file=PATH] [--pod-state-dir=DIR] [--log-file=PATH] "
               "[--timeout-seconds=N] [--wait-seconds=N]\n"
               "       nodeward-cni uninstall --cni-bin-dir=DIR --cni-net-dir=DIR\n";
  return 2;
}

int Installer(const std::string& command, const std::vector<std::string>& arguments) {
  const std::vector<std::string> known =
      command == "install" ? std::vector<std::string>{"cni-bin-dir",     "cni-net-dir",
                                                      "agent-socket",    "enrolled-namespaces-file",
                                                      "pod-state-dir",   "log-file",
                                                      "timeout-seconds", "wait-seconds"}
                           : std::vector<std::string>{"cni-bin-dir", "cni-net-dir"};
  std::map<std::string, std::string> flags;
  for (const std::string& argument : arguments) {
    const std::size_t equals = argument.find('=');
    if (!absl::StartsWith(argument, "--") || equals == std::string::npos) {
      return Usage(absl::StrCat("\"", argument, "\" is not --flag=value"));
    }
    const std::string name = argument.substr(2, equals - 2);
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return Usage(absl::StrCat("unknown flag --", name, " for ", command));
    }
    flags[name] = argument.substr(equals + 1);
  }
  for (const char* required : {"cni-bin-dir", "cni-net-dir"}) {
    if (flags[required].empty() || flags[required].front() != '/') {
      return Usage(absl::StrCat("--", required, " must be an absolute path"));
    }
  }
  if (command == "uninstall") {
    absl::Status status = nodeward::cni::Uninstall(flags["cni-net-dir"], flags["cni-bin-dir"]);
    if (!status.ok()) {
      std::cerr << "nodeward-cni: uninstall: " << status.message() << "\n";
      return 1;
    }
    std::cerr << "nodeward-cni: removed from " << flags["cni-net-dir"] << " and "
              << flags["cni-bin-dir"] << "\n";
    return 0;
  }

  nodeward::cni::InstallOptions options;
  options.net_dir = flags["cni-net-dir"];
  options.bin_dir = flags["cni-bin-dir"];
  options.binary = "/proc/self/exe";
  for (const char* path :
       {"agent-socket", "enrolled-namespaces-file", "pod-state-dir", "log-file"}) {
    if (flags.contains(path) && (flags[path].empty() || flags[path].front() != '/')) {
      return Usage(absl::StrCat("--", path, " must be an absolute path"));
    }
  }
  options.entry.Set("name", JsonValue::String("nodeward"));
  if (flags.contains("agent-socket")) {
    options.entry.Set("agentSocket", JsonValue::String(flags["agent-socket"]));
  }
  if (flags.contains("enrolled-namespaces-file")) {
    options.entry.Set("enrolledNamespacesFile",
                      JsonValue::String(flags["enrolled-namespaces-file"]));
  }
  if (flags.contains("pod-state-dir")) {
    options.entry.Set("podStateDir", JsonValue::String(flags["pod-state-dir"]));
  }
  if (flags.contains("log-file"))
    options.entry.Set("logFile", JsonValue::String(flags["log-file"]));
  if (flags.contains("timeout-seconds")) {
    int seconds = 0;
    if (!absl::SimpleAtoi(flags["timeout-seconds"], &seconds) || seconds < 1 || seconds > 300) {
      return Usage("--timeout-seconds must be 1 to 300");
    }
    options.entry.Set("timeoutSeconds", JsonValue::Number(absl::StrCat(seconds)));
  }
  int wait_seconds = 300;
  if (flags.contains("wait-seconds") &&
      (!absl::SimpleAtoi(flags["wait-seconds"], &wait_seconds) || wait_seconds < 0)) {
    return Usage("--wait-seconds must be a number of seconds");
  }
  // The node's own CNI may write its configuration after we start: wait for it.
  const absl::Time deadline = absl::Now() + absl::Seconds(wait_seconds);
  while (true) {
    absl::Status status = nodeward::cni::Install(options);
    if (status.ok()) break;
    if (status.code() != absl::StatusCode::kNotFound || absl::Now() >= deadline) {
      std::cerr << "nodeward-cni: install: " << status.message() << "\n";
      return 1;
    }
    absl::SleepFor(absl::Seconds(1));
  }
  absl::StatusOr<std::string> primary = nodeward::cni::FindPrimaryConfig(options.net_dir);
  std::cerr << "nodeward-cni: installed into " << options.bin_dir << " and "
            << (primary.ok() ? *primary : options.net_dir) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "install" || std::string(argv[1]) == "uninstall")) {
    return Installer(argv[1], std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2) return Usage(absl::StrCat("unknown command \"", argv[1], "\""));
  return Plugin();
}
