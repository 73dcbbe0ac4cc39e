#include "agent/capture/captured_pod.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bpf/errno_status.h"
#include "bpf/nodeward_maps.h"

namespace nodeward::capture {

CapturedPod::CapturedPod(PodMetadata metadata, int netns_fd, uint64_t netns_cookie,
                         NetnsExecutor* executor)
    : metadata_(std::move(metadata)),
      netns_fd_(netns_fd),
      netns_cookie_(netns_cookie),
      executor_(executor),
      display_name_(absl::StrCat(metadata_.namespace_name, "/", metadata_.name)) {}

CapturedPod::~CapturedPod() {
  absl::MutexLock lock(&stock_mutex_);
  for (int fd : ipv4_stock_) close(fd);
  for (int fd : ipv6_stock_) close(fd);
  close(netns_fd_);
}

absl::StatusOr<int> CapturedPod::CreateAgentSocket(int family) const {
  absl::MutexLock lock(&stock_mutex_);
  std::vector<int>& stock = family == AF_INET6 ? ipv6_stock_ : ipv4_stock_;
  if (stock.empty()) {
    absl::StatusOr<std::vector<int>> made =
        executor_->CreateSockets(netns_fd_, family, SOCK_STREAM | SOCK_NONBLOCK, kSocketBatch);
    if (!made.ok()) return made.status();
    for (int fd : *made) {
      int mark = NW_AGENT_SOCKET_MARK;
      if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        const int error = errno;
        for (int unused : *made) close(unused);
        return bpf::ErrnoStatus(error, "SO_MARK on agent socket");
      }
      // Kept through connect(); the relay forwards at once.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    stock = *std::move(made);
  }
  const int fd = stock.back();
  stock.pop_back();
  return fd;
}

}  // namespace nodeward::capture
