#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "agent/capture/captured_pod.h"
#include "bpf/capture_dataplane.h"
#include "common/net_address.h"

namespace nodeward::capture {

// One of an enrolled pod's listening sockets (15001, 15006 or 15008, inside its netns). The
// enrollment manager creates it and decides when it ends; whoever accepts on it holds a
// reference. Close() shuts the socket down, which ends any accept pending on it (also one in an
// io_uring), while the descriptor itself is closed only when the last reference goes, so its
// number cannot be reused under an accept that is still armed.
class InPodListener {
 public:
  enum class Kind { kOutbound, kInboundPlaintext, kTunnel };

  // Takes ownership of `fd`. `dataplane` resolves original destinations; it outlives this.
  InPodListener(int fd, Kind kind, std::shared_ptr<const CapturedPod> pod, std::string address,
                bpf::CaptureDataplane* dataplane);
  ~InPodListener();
  InPodListener(const InPodListener&) = delete;
  InPodListener& operator=(const InPodListener&) = delete;

  int fd() const { return fd_; }
  Kind kind() const { return kind_; }
  const std::shared_ptr<const CapturedPod>& pod() const { return pod_; }
  // "ip:port" it listens on, for logs.
  const std::string& address() const { return address_; }

  // Thread safe. After it, accepts on the socket fail and must not be re-armed.
  void Close();
  bool closed() const { return closed_.load(std::memory_order_acquire); }

  // For a connection accepted here on an outbound listener: where the application was going.
  // `client` is the accepted connection's peer address.
  absl::StatusOr<SocketAddress> OriginalDestination(const SocketAddress& client) const;

  // What a connection accepted here is: on an outbound listener the application's address and
  // where it was going, on an inbound one the pod's port it arrived on.
  struct Accepted {
    SocketAddress client;       // outbound only
    SocketAddress destination;  // outbound only
    uint16_t port = 0;          // inbound only
  };
  // Resolves `fd`, just accepted here, whoever accepted it. `client` gives its peer (from what
  // accept returned, or by asking the socket) and is called for outbound listeners only. When
  // it cannot be resolved the connection is refused: logged with the pod, peer and reason,
  // closed, and nullopt returned.
  std::optional<Accepted> Resolve(int fd,
                                  absl::FunctionRef<absl::StatusOr<SocketAddress>()> client) const;

 private:
  const int fd_;
  const Kind kind_;
  const std::shared_ptr<const CapturedPod> pod_;
  const std::string address_;
  bpf::CaptureDataplane* const dataplane_;
  std::atomic<bool> closed_{false};
};

}  // namespace nodeward::capture
