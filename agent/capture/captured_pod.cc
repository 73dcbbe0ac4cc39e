#include "agent/capture/captured_pod.h"

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

CapturedPod::~CapturedPod() { close(netns_fd_); }

absl::StatusOr<int> CapturedPod::CreateAgentSocket(int family) const {
  absl::StatusOr<int> fd = executor_->CreateSocket(netns_fd_, family, SOCK_STREAM | SOCK_NONBLOCK);
  if (!fd.ok()) return fd.status();
  int mark = NW_AGENT_SOCKET_MARK;
  if (setsockopt(*fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    int error = errno;
    close(*fd);
    return bpf::ErrnoStatus(error, "SO_MARK on agent socket");
  }
  return fd;
}

}  // namespace nodeward::capture
