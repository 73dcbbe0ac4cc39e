#include "sandbox/system.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace nodeward::sandbox {
namespace {

absl::Status ErrnoError(int error, absl::string_view what) {
  return absl::ErrnoToStatus(error, what);
}

std::vector<char*> ArgvPointers(const std::vector<std::string>& argv) {
  std::vector<char*> pointers;
  for (const std::string& arg : argv) pointers.push_back(const_cast<char*>(arg.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

// Writes a failure reason to the parent over a close-on-exec pipe, then exits the child.
[[noreturn]] void ChildFail(int report_fd, const std::string& message) {
  (void)!write(report_fd, message.data(), message.size());
  _exit(127);
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, absl::Duration timeout) {
  CommandResult result;
  if (argv.empty()) return result;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    result.output = absl::StrCat("pipe: ", std::strerror(errno));
    return result;
  }
  std::vector<char*> args = ArgvPointers(argv);
  pid_t pid = fork();
  if (pid < 0) {
    result.output = absl::StrCat("fork: ", std::strerror(errno));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return result;
  }
  if (pid == 0) {
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    execvp(args[0], args.data());
    dprintf(2, "cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(pipe_fds[1]);
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[4096];
  while (true) {
    int remaining = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd entry{pipe_fds[0], POLLIN, 0};
    if (remaining <= 0 || poll(&entry, 1, remaining) <= 0) {
      kill(pid, SIGKILL);
      absl::StrAppend(&result.output, "\n<timed out after ", absl::FormatDuration(timeout), ">");
      break;
    }
    ssize_t n = read(pipe_fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buffer, n);
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

absl::Status MustRun(const std::vector<std::string>& argv, absl::Duration timeout) {
  CommandResult result = RunCommand(argv, timeout);
  if (result.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("`", absl::StrJoin(argv, " "), "` failed (exit ",
                                          result.exit_code,
                                          "): ", absl::StripAsciiWhitespace(result.output)));
}

absl::StatusOr<ProcessRef> Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("nothing to start");
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  std::vector<char*> args = ArgvPointers(options.argv);
  pid_t pid = fork();
  if (pid < 0) {
    int error = errno;
    close(report[0]);
    close(report[1]);
    return ErrnoError(error, "fork");
  }
  if (pid == 0) {
    close(report[0]);
    setsid();  // survives the end of `up` and a Ctrl-C in its terminal
    signal(SIGPIPE, SIG_DFL);
    int log_fd = open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      ChildFail(report[1], absl::StrCat("open ", options.log_path, ": ", std::strerror(errno)));
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
      ChildFail(report[1], absl::StrCat("redirecting stdio: ", std::strerror(errno)));
    }
    if (!options.cgroup_dir.empty()) {
      if (absl::Status joined = JoinCgroup(options.cgroup_dir); !joined.ok()) {
        ChildFail(report[1], joined.ToString());
      }
    }
    if (!options.netns_path.empty()) {
      if (absl::Status entered = EnterNetns(options.netns_path); !entered.ok()) {
        ChildFail(report[1], entered.ToString());
      }
    }
    execv(args[0], args.data());
    ChildFail(report[1], absl::StrCat("cannot execute ", args[0], ": ", std::strerror(errno)));
  }
  close(report[1]);
  std::string failure;
  char buffer[512];
  ssize_t n;
  while ((n = read(report[0], buffer, sizeof(buffer))) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    failure.append(buffer, n);
  }
  close(report[0]);
  if (!failure.empty()) {
    waitpid(pid, nullptr, 0);
    return absl::InternalError(
        absl::StrCat("starting ", absl::StrJoin(options.argv, " "), ": ", failure));
  }
  ProcessRef process{pid, ProcessStartTime(pid)};
  if (process.start_time == 0) {
    return absl::InternalError(absl::StrCat(options.argv[0], " exited at once; see ",
                                            options.log_path, ":\n", Tail(options.log_path, 20)));
  }
  return process;
}

namespace {

// Fields of /proc/PID/stat after the command name (which may contain spaces and parentheses).
std::vector<std::string> StatFields(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return {};
  size_t end = stat->rfind(')');
  if (end == std::string::npos) return {};
  return absl::StrSplit(stat->substr(end + 1), ' ', absl::SkipEmpty());
}

}  // namespace

uint64_t ProcessStartTime(pid_t pid) {
  std::vector<std::string> fields = StatFields(pid);
  // fields[0] is field 3 (state); the start time is field 22.
  uint64_t start = 0;
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &start)) return 0;
  return start;
}

namespace {

// Wait statuses of the children IsAlive reaped, for DescribeExit.
std::map<pid_t, int>& ReapedChildren() {
  static auto* reaped = new std::map<pid_t, int>();
  return *reaped;
}

}  // namespace

bool IsAlive(const ProcessRef& process) {
  if (process.pid <= 0) return false;
  if (ReapedChildren().contains(process.pid)) return false;
  int status = 0;
  if (waitpid(process.pid, &status, WNOHANG) == process.pid) {  // our child, reaped
    ReapedChildren()[process.pid] = status;
    return false;
  }
  std::vector<std::string> fields = StatFields(process.pid);
  if (fields.size() < 20) return false;
  if (fields[0] == "Z" || fields[0] == "X") return false;
  uint64_t start = 0;
  return absl::SimpleAtoi(fields[19], &start) && start == process.start_time;
}

std::string DescribeExit(const ProcessRef& process) {
  auto reaped = ReapedChildren().find(process.pid);
  if (reaped == ReapedChildren().end()) return "exited";
  const int status = reaped->second;
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "exited";
}

void Stop(const ProcessRef& process, absl::Duration grace) {
  if (!IsAlive(process)) return;
  kill(process.pid, SIGTERM);
  const absl::Time term_deadline = absl::Now() + grace;
  while (absl::Now() < term_deadline) {
    if (!IsAlive(process)) return;
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (!IsAlive(process)) return;
  kill(process.pid, SIGKILL);
  const absl::Time kill_deadline = absl::Now() + absl::Seconds(1);
  while (absl::Now() < kill_deadline && IsAlive(process)) {
    absl::SleepFor(absl::Milliseconds(20));
  }
}

absl::Status EnterNetns(const std::string& netns_path) {
  int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("open ", netns_path));
  int rc = setns(fd, CLONE_NEWNET);
  int error = errno;
  close(fd);
  if (rc != 0) return ErrnoError(error, absl::StrCat("setns ", netns_path));
  return absl::OkStatus();
}

absl::Status JoinCgroup(const std::string& cgroup_dir) {
  const std::string procs = absl::StrCat(cgroup_dir, "/cgroup.procs");
  int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("open ", procs));
  const std::string pid = absl::StrCat(getpid());
  ssize_t written = write(fd, pid.data(), pid.size());
  int error = errno;
  close(fd);
  if (written != static_cast<ssize_t>(pid.size())) {
    return ErrnoError(error, absl::StrCat("joining cgroup ", cgroup_dir));
  }
  return absl::OkStatus();
}

absl::Status WriteInNetns(const std::string& netns_path, const std::string& path,
                          const std::string& value) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) {
    int error = errno;
    close(report[0]);
    close(report[1]);
    return ErrnoError(error, "fork");
  }
  if (pid == 0) {
    close(report[0]);
    if (absl::Status entered = EnterNetns(netns_path); !entered.ok()) {
      ChildFail(report[1], entered.ToString());
    }
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
      ChildFail(report[1], absl::StrCat("writing ", path, ": ", std::strerror(errno)));
    }
    _exit(0);
  }
  close(report[1]);
  std::string failure;
  char buffer[512];
  ssize_t n;
  while ((n = read(report[0], buffer, sizeof(buffer))) > 0) failure.append(buffer, n);
  close(report[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!failure.empty() || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("in ", netns_path, ": ", failure.empty() ? "child failed" : failure));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status AppendLine(const std::string& path, const std::string& line) {
  // O_APPEND + fsync-free single write: a crash leaves whole lines.
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("open ", path));
  const std::string text = absl::StrCat(line, "\n");
  ssize_t written = write(fd, text.data(), text.size());
  int error = errno;
  close(fd);
  if (written != static_cast<ssize_t>(text.size())) {
    return ErrnoError(error, absl::StrCat("write ", path));
  }
  return absl::OkStatus();
}

bool Exists(const std::string& path) {
  struct stat info {};
  return lstat(path.c_str(), &info) == 0;
}

absl::Status MakeDirectories(const std::string& path, mode_t mode) {
  std::string prefix;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    absl::StrAppend(&prefix, "/", part);
    if (mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError(errno, absl::StrCat("mkdir ", prefix));
    }
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (S_ISDIR(info.st_mode)) {
    for (const std::string& entry : ListDirectory(path)) {
      if (absl::Status removed = RemoveTree(absl::StrCat(path, "/", entry)); !removed.ok()) {
        return removed;
      }
    }
    if (rmdir(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError(errno, absl::StrCat("rmdir ", path));
    }
    return absl::OkStatus();
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, absl::StrCat("unlink ", path));
  }
  return absl::OkStatus();
}

std::vector<std::string> ListDirectory(const std::string& directory) {
  std::vector<std::string> names;
  DIR* dir = opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  closedir(dir);
  return names;
}

std::string Tail(const std::string& path, int lines) {
  std::ifstream in(path);
  if (!in) return absl::StrCat("(", path, " is missing)");
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  if (last.empty()) return absl::StrCat("(", path, " is empty)");
  return absl::StrJoin(last, "\n");
}

uint64_t InodeOf(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 ? info.st_ino : 0;
}

}  // namespace nodeward::sandbox
