// Test support: a fresh network namespace with loopback up, owned by an fd (no name, nothing
// to clean up beyond closing it). Needs root.
#pragma once

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace nodeward::capture {

class TestNetns {
 public:
  static absl::StatusOr<std::unique_ptr<TestNetns>> Create() {
    int fd = -1;
    absl::Status status;
    // Only this short-lived thread changes namespace.
    std::thread([&] {
      if (unshare(CLONE_NEWNET) != 0) {
        status = ErrnoStatus(errno, "unshare(CLONE_NEWNET)");
        return;
      }
      int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      ifreq request{};
      std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
      if (control < 0 || ioctl(control, SIOCGIFFLAGS, &request) != 0) {
        status = ErrnoStatus(errno, "read lo flags");
      } else {
        request.ifr_flags |= IFF_UP;
        if (ioctl(control, SIOCSIFFLAGS, &request) != 0) {
          status = ErrnoStatus(errno, "bring lo up");
        }
      }
      if (control >= 0) close(control);
      fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
      if (fd < 0 && status.ok()) status = ErrnoStatus(errno, "open new netns");
    }).join();
    if (!status.ok()) {
      if (fd >= 0) close(fd);
      return status;
    }
    return std::unique_ptr<TestNetns>(new TestNetns(fd));
  }

  ~TestNetns() { close(fd_); }
  int fd() const { return fd_; }
  // A path that opens this namespace for as long as the object lives.
  std::string path() const { return absl::StrCat("/proc/", getpid(), "/fd/", fd_); }

 private:
  explicit TestNetns(int fd) : fd_(fd) {}
  const int fd_;
};

}  // namespace nodeward::capture
