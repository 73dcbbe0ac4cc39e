// Small operating-system helpers of the sandbox: running commands from argument vectors,
// starting long-lived processes inside a network namespace and a cgroup, identifying processes
// safely by pid and start time, and plain file operations. No shell is ever involved.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/files.h"

namespace nodeward::sandbox {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or not started
  std::string output;  // stdout and stderr together
};

// Runs argv (looked up in PATH) to completion, killed after `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(30));

// Like RunCommand, but a non-zero exit becomes an error naming the command and its output.
absl::Status MustRun(const std::vector<std::string>& argv,
                     absl::Duration timeout = absl::Seconds(30));

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is a path
  std::string netns_path;         // network namespace to enter; empty: stay
  std::string cgroup_dir;         // cgroup-v2 directory to join first; empty: stay
  std::string log_path;           // stdout and stderr (appended); stdin is /dev/null
};

// A process identified by pid and start time, so a recycled pid is never signalled.
struct ProcessRef {
  pid_t pid = 0;
  uint64_t start_time = 0;  // field 22 of /proc/PID/stat
};

// Starts a detached process (own session) with `options`; fails if it could not be executed.
absl::StatusOr<ProcessRef> Spawn(const SpawnOptions& options);

// Start time of `pid`, or 0 if there is no such process.
uint64_t ProcessStartTime(pid_t pid);

// True when `process` still runs (a zombie does not count). Reaps it if it is our child.
bool IsAlive(const ProcessRef& process);

// How a process that IsAlive found gone ended ("exited with code 1", "was killed by signal 9");
// just "exited" when it was not our child.
std::string DescribeExit(const ProcessRef& process);

// SIGTERM, then SIGKILL once `grace` has passed; returns once the process is gone (or after a
// further second). Does nothing for a process that is not alive.
void Stop(const ProcessRef& process, absl::Duration grace);

// Joins the calling process to the network namespace at `netns_path`.
absl::Status EnterNetns(const std::string& netns_path);

// Moves the calling process into the cgroup-v2 directory `cgroup_dir`.
absl::Status JoinCgroup(const std::string& cgroup_dir);

// Writes `value` to `path` from inside the network namespace `netns_path` (for per-netns
// /proc/sys settings), in a short-lived child so this process keeps its namespace.
absl::Status WriteInNetns(const std::string& netns_path, const std::string& path,
                          const std::string& value);

using ::nodeward::ReadFile;
absl::Status WriteFile(const std::string& path, const std::string& contents);
absl::Status AppendLine(const std::string& path, const std::string& line);
bool Exists(const std::string& path);
// mkdir -p.
absl::Status MakeDirectories(const std::string& path, mode_t mode = 0755);
// rm -rf, without following symbolic links; a missing path is fine.
absl::Status RemoveTree(const std::string& path);
// Names of the entries of `directory` (no "." and ".."); empty if it does not exist.
std::vector<std::string> ListDirectory(const std::string& directory);
// Last `lines` lines of a file, for error messages.
std::string Tail(const std::string& path, int lines);
// Inode of `path` (0 if it does not exist), following symbolic links.
uint64_t InodeOf(const std::string& path);

}  // namespace nodeward::sandbox
