// What tests of nodeward-sds from outside share, free of nodeward's protos (a test built from
// upstream's protos includes it too): temporary directories, waiting, the binary as a child
// process, loopback ports and a process's thread count.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nodeward::sds::testing {

// A fresh directory, removed with everything in it when the object dies (also on failure).
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "nodeward-sds-XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Polls `done` until it holds or `timeout` passes.
template <typename Predicate>
bool Eventually(Predicate done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

// A child process, ended (by PID, SIGKILL) when the object dies, also on failure, and by the
// kernel when this process dies.
class Process {
 public:
  // `environment` entries ("NAME=value") are added to this process's environment.
  explicit Process(std::vector<std::string> arguments, std::vector<std::string> environment = {}) {
    pid_ = ::fork();
    if (pid_ == 0) {
      // Ends with its parent, even when the parent crashes before ending it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (std::string& entry : environment) ::putenv(entry.data());
      std::vector<char*> argv;
      for (std::string& argument : arguments) argv.push_back(argument.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Process() { Stop(SIGKILL); }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  pid_t pid() const { return pid_; }
  bool Running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == 0) return true;
    pid_ = -1;  // reaped: never signal a PID that may have been reused
    return false;
  }
  void Signal(int signal_number) {
    if (pid_ > 0) ::kill(pid_, signal_number);
  }
  // The exit code, or -1 when it ended by a signal.
  int Stop(int signal_number = SIGTERM) {
    if (pid_ > 0) {
      ::kill(pid_, signal_number);
      ::waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

inline int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A field of /proc/<pid>/status ("Threads", "VmRSS" in kB), or -1.
inline long ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  }
  return -1;
}

}  // namespace nodeward::sds::testing
