#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/capture/netns_executor.h"
#include "agent/capture/pod_network.h"
#include "agent/capture/socket_origin.h"
#include "bpf/capture_dataplane.h"
#include "common/net_address.h"

namespace nodeward::capture {

struct PodMetadata {
  std::string netns_path;
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string service_account;
  std::vector<IpAddress> ips;
  std::map<std::string, std::string> labels;
};

// The agent's connection to a pod's application in the making: its socket inside the pod,
// bound (to the client's address when the pod's routing lets it be kept, else to the pod's
// own) and announced to the pod's inbound steering, which lets exactly this connection
// through to the application instead of back to the agent. The announcement ends with this
// object: keep it until the connect has completed.
class Delivery {
 public:
  Delivery(int fd, SocketAddress application, SocketAddress agent_side, bool source_kept,
           bpf::CaptureDataplane* dataplane);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // The socket, to connect to application(); the caller owns it from then on.
  int TakeFd();
  const SocketAddress& application() const { return application_; }
  // Where the connection comes from as the application sees it.
  const SocketAddress& agent_side() const { return agent_side_; }
  bool source_kept() const { return source_kept_; }

 private:
  int fd_;
  const SocketAddress application_;
  const SocketAddress agent_side_;
  const bool source_kept_;
  bpf::CaptureDataplane* const dataplane_;
};

// An enrolled pod as the data path sees it. Connections hold it by shared_ptr, so a pod that
// is unenrolled while connections are open keeps its netns reachable until they finish.
class CapturedPod : public SocketOrigin {
 public:
  // Takes ownership of `netns_fd`. `dataplane` (when set) announces deliveries to the pod's
  // inbound steering; `routing` says for which families a delivery can keep the client's
  // address.
  CapturedPod(PodMetadata metadata, int netns_fd, uint64_t netns_cookie, NetnsExecutor* executor,
              bpf::CaptureDataplane* dataplane = nullptr, DeliveryRouting routing = {});
  ~CapturedPod() override;
  CapturedPod(const CapturedPod&) = delete;
  CapturedPod& operator=(const CapturedPod&) = delete;

  const PodMetadata& metadata() const { return metadata_; }
  uint64_t netns_cookie() const override { return netns_cookie_; }
  int netns_fd() const { return netns_fd_; }
  // "namespace/name" for logs.
  const std::string& display_name() const override { return display_name_; }

  // A non-blocking TCP socket inside the pod's netns carrying the agent's socket mark, so the
  // capture programs let it through (no loop back into the agent), with Nagle off.
  // Thread safe. Sockets come from a small stock refilled in batches: making one means a trip
  // into the pod's netns on the executor thread, which would otherwise be paid per connection.
  absl::StatusOr<int> CreateAgentSocket(int family) const override;

  // A connection to be made to `application`, one of this pod's addresses, on behalf of a
  // client at `client` (nullopt when there is none to keep, e.g. a loopback client): bound to
  // the client's address when the routing allows it (never to the client's own port, whose
  // 4-tuple the agent's accepted socket may hold in this netns), else to the pod's address.
  absl::StatusOr<std::unique_ptr<Delivery>> OpenDelivery(
      const SocketAddress& application, const std::optional<SocketAddress>& client) const;
  // The client address a delivery to `application` keeps, when it can keep one: same family,
  // routing in place for it, and an address that means the same inside the pod (not
  // loopback or link-local).
  std::optional<IpAddress> KeptSource(const SocketAddress& application,
                                      const std::optional<SocketAddress>& client) const;
  const DeliveryRouting& routing() const { return routing_; }

  // How many sockets one refill makes (the most a pod holds unused).
  static constexpr std::size_t kSocketBatch = 16;

 private:
  const PodMetadata metadata_;
  const int netns_fd_;
  const uint64_t netns_cookie_;
  NetnsExecutor* const executor_;
  bpf::CaptureDataplane* const dataplane_;
  const DeliveryRouting routing_;
  const std::string display_name_;
  mutable absl::Mutex stock_mutex_;
  mutable std::vector<int> ipv4_stock_ ABSL_GUARDED_BY(stock_mutex_);
  mutable std::vector<int> ipv6_stock_ ABSL_GUARDED_BY(stock_mutex_);
};

}  // namespace nodeward::capture
