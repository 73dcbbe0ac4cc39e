#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/net_address.h"

namespace nodeward::bpf {

enum class ListenerSlot { kInboundPlaintext, kTunnel };

std::string ListenerSlotName(ListenerSlot slot);

struct EnrolledNetnsEntry {
  uint64_t netns_cookie = 0;
  uint32_t pod_id = 0;
};

struct PodAddressEntry {
  IpAddress address;
  uint64_t netns_cookie = 0;
};

struct InboundListenerEntry {
  IpAddress address;
  ListenerSlot slot = ListenerSlot::kInboundPlaintext;
  uint64_t socket_cookie = 0;
};

// Everything the kernel side holds, for the debug CLI and for reconciliation after a restart.
struct DataplaneSnapshot {
  std::vector<EnrolledNetnsEntry> enrolled;
  std::vector<PodAddressEntry> pod_addresses;
  std::vector<InboundListenerEntry> inbound_listeners;
  std::vector<uint64_t> linked_netns_cookies;  // netns with a pinned sk_lookup link
  uint64_t pending_original_destinations = 0;
  std::map<std::string, uint64_t> counters;
};

// What the enrollment layer needs from the kernel side. The libbpf implementation is
// CaptureLoader; keeping this small lets the layers above be tested without root.
class CaptureDataplane {
 public:
  virtual ~CaptureDataplane() = default;

  // Connects from this netns are redirected to the in-pod outbound listener from now on.
  virtual absl::Status EnrollNetns(uint64_t netns_cookie, uint32_t pod_id) = 0;
  virtual absl::Status UnenrollNetns(uint64_t netns_cookie) = 0;

  // Links the inbound steering program into the netns (or adopts the pinned link).
  virtual absl::Status LinkNetns(uint64_t netns_cookie, int netns_fd) = 0;
  virtual absl::Status UnlinkNetns(uint64_t netns_cookie) = 0;

  // Inbound connections to `address` are steered to the agent from now on; without a listener
  // set for a slot they are refused.
  virtual absl::Status AddPodAddress(const IpAddress& address, uint64_t netns_cookie) = 0;
  // Removes the address and its listener entries.
  virtual absl::Status RemovePodAddress(const IpAddress& address) = 0;
  virtual absl::Status SetInboundListener(const IpAddress& address, ListenerSlot slot,
                                          int listener_fd) = 0;

  // The agent's connection from `agent_side` to `application` (one of a pod's addresses, where
  // the pod's application listens) bypasses the pod's inbound steering until it is forgotten:
  // announce it after binding and before connecting, forget it once connected.
  virtual absl::Status AnnounceDelivery(const SocketAddress& application,
                                        const SocketAddress& agent_side) = 0;
  virtual absl::Status ForgetDelivery(const SocketAddress& application,
                                      const SocketAddress& agent_side) = 0;

  // The destination the client at `client` (the accepted connection's peer) in the netns with
  // `netns_cookie` dialled, for a connection accepted on an outbound listener. Consumes the
  // record: a second call for the same connection fails with NotFound. Takes what accept()
  // already returned rather than the socket, so the lookup is the only system call.
  virtual absl::StatusOr<SocketAddress> TakeOriginalDestination(const SocketAddress& client,
                                                                uint64_t netns_cookie) = 0;

  virtual absl::StatusOr<DataplaneSnapshot> Snapshot() const = 0;
};

}  // namespace nodeward::bpf
