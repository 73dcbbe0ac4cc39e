#include "agent/capture/in_pod_listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <utility>

namespace nodeward::capture {

InPodListener::InPodListener(int fd, Kind kind, std::shared_ptr<const CapturedPod> pod,
                             std::string address, bpf::CaptureDataplane* dataplane)
    : fd_(fd),
      kind_(kind),
      pod_(std::move(pod)),
      address_(std::move(address)),
      dataplane_(dataplane) {}

InPodListener::~InPodListener() { close(fd_); }

void InPodListener::Close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  shutdown(fd_, SHUT_RDWR);
}

absl::StatusOr<bpf::SocketAddress> InPodListener::OriginalDestination(
    const bpf::SocketAddress& client) const {
  // The listener lives in the pod's netns, so the client does too.
  return dataplane_->TakeOriginalDestination(client, pod_->netns_cookie());
}

}  // namespace nodeward::capture
