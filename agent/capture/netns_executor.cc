#include "agent/capture/netns_executor.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/errno_status.h"
#include "common/log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace nodeward::capture {

NetnsExecutor::NetnsExecutor() {
  worker_ = std::thread([this] { Loop(); });
  absl::MutexLock lock(&mutex_);
  mutex_.Await(absl::Condition(&started_));
}

NetnsExecutor::~NetnsExecutor() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  worker_.join();
}

void NetnsExecutor::Loop() {
  {
    absl::MutexLock lock(&mutex_);
    node_netns_fd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (node_netns_fd_ < 0) start_status_ = ErrnoStatus(errno, "open node netns");
    started_ = true;
  }
  while (true) {
    absl::MutexLock lock(&mutex_);
    auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
      return stopping_ || (work_ != nullptr && !done_);
    };
    mutex_.Await(absl::Condition(&has_work));
    if (stopping_) break;
    if (setns(target_netns_fd_, CLONE_NEWNET) != 0) {
      result_ = ErrnoStatus(errno, "enter pod netns");
    } else {
      (*work_)();
      if (setns(node_netns_fd_, CLONE_NEWNET) != 0) {
        // Staying in a pod's namespace would put the next pod's sockets in the wrong place.
        Log(LogLevel::kError,
            "cannot return to the node netns: ", ErrnoStatus(errno, "setns").ToString());
        std::abort();
      }
      result_ = absl::OkStatus();
    }
    done_ = true;
  }
  absl::MutexLock lock(&mutex_);
  if (node_netns_fd_ >= 0) close(node_netns_fd_);
}

absl::Status NetnsExecutor::Run(int netns_fd, absl::FunctionRef<void()> work) {
  absl::MutexLock call_lock(&call_mutex_);
  absl::MutexLock lock(&mutex_);
  if (!start_status_.ok()) return start_status_;
  work_ = &work;
  target_netns_fd_ = netns_fd;
  done_ = false;
  mutex_.Await(absl::Condition(&done_));
  work_ = nullptr;
  return result_;
}

absl::StatusOr<int> NetnsExecutor::CreateSocket(int netns_fd, int family, int type) {
  absl::StatusOr<std::vector<int>> fds = CreateSockets(netns_fd, family, type, 1);
  if (!fds.ok()) return fds.status();
  return fds->front();
}

absl::StatusOr<std::vector<int>> NetnsExecutor::CreateSockets(int netns_fd, int family, int type,
                                                              std::size_t count) {
  std::vector<int> fds;
  fds.reserve(count);
  int error = 0;
  absl::Status status = Run(netns_fd, [&] {
    while (fds.size() < count) {
      const int fd = socket(family, type | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        error = errno;
        return;
      }
      fds.push_back(fd);
    }
  });
  if (status.ok() && fds.empty()) status = ErrnoStatus(error, "socket in pod netns");
  if (!status.ok()) {
    for (int fd : fds) close(fd);
    return status;
  }
  return fds;  // possibly fewer than asked when the process ran out of descriptors
}

absl::StatusOr<uint64_t> NetnsCookieOfSocket(int socket_fd) {
  uint64_t cookie = 0;
  socklen_t length = sizeof(cookie);
  if (getsockopt(socket_fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0) {
    return ErrnoStatus(errno, "SO_NETNS_COOKIE");
  }
  return cookie;
}

}  // namespace nodeward::capture
