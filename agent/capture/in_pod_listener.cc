#include "agent/capture/in_pod_listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "common/log.h"

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

absl::StatusOr<SocketAddress> InPodListener::OriginalDestination(
    const SocketAddress& client) const {
  // The listener lives in the pod's netns, so the client does too.
  return dataplane_->TakeOriginalDestination(client, pod_->netns_cookie());
}

std::optional<InPodListener::Accepted> InPodListener::Resolve(
    int fd, absl::FunctionRef<absl::StatusOr<SocketAddress>()> client) const {
  Accepted accepted;
  if (kind_ == Kind::kOutbound) {
    absl::StatusOr<SocketAddress> peer = client();
    absl::StatusOr<SocketAddress> destination =
        peer.ok() ? OriginalDestination(*peer) : peer.status();
    if (!destination.ok()) {
      Log(LogLevel::kWarning, "outbound pod=", pod_->display_name(),
          " peer=", peer.ok() ? peer->ToString() : "?",
          " refused reason=", destination.status().ToString());
      close(fd);
      return std::nullopt;
    }
    accepted.client = *peer;
    accepted.destination = *destination;
    return accepted;
  }
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  if (!local.ok()) {
    Log(LogLevel::kWarning, "inbound pod=", pod_->display_name(),
        " refused reason=", local.status().ToString());
    close(fd);
    return std::nullopt;
  }
  accepted.port = local->port;
  return accepted;
}

}  // namespace nodeward::capture
