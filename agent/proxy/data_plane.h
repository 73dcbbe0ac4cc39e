// The data plane behind the in-pod listeners: io_uring worker loops (one per core), each
// enrolled pod served by one of them, which accepts on the pod's listeners with a multishot
// accept and carries the pod's connections and pooled tunnels, so a new connection is never
// handed between threads. Accepts are admitted (draining, the connection limit) and dispatched
// to Outbound (15001) or Inbound (15006, 15008); what they share lives in ProxyContext.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/capture/connection_handler.h"
#include "agent/proxy/context.h"
#include "agent/proxy/inbound.h"
#include "agent/proxy/outbound.h"
#include "agent/proxy/upstream.h"
#include "agent/proxy/workers.h"

namespace nodeward::proxy {

class DataPlane : public capture::ConnectionHandler {
 public:
  // `config` and `credentials` may be null only with options.passthrough.
  static absl::StatusOr<std::unique_ptr<DataPlane>> Create(const ProxyOptions& options,
                                                           policy::ConfigSource* config,
                                                           MeshCredentials* credentials,
                                                           AccessLog* access_log);
  ~DataPlane() override;

  void ServeListener(std::shared_ptr<capture::InPodListener> listener) override;
  void OnPodEnrolled(std::shared_ptr<const capture::CapturedPod> pod) override;
  void OnPodUnenrolled(std::shared_ptr<const capture::CapturedPod> pod) override;

  // Graceful drain: new connections are refused, tunnels send GOAWAY, live connections get
  // until `grace` to finish; then everything left is cut. Returns how many were cut.
  std::size_t Drain(absl::Duration grace);

  std::size_t live_connections() const { return context_.live(); }
  std::size_t pooled_tunnels() const;
  // Whether `ip` is a pod this data plane serves (same-node destinations).
  bool ServesPod(const IpAddress& ip) const { return context_.ServesPod(ip); }
  // HBONE connections admitted and not yet past their handshake (HandshakeBudget).
  std::size_t pending_handshakes() { return context_.handshakes().pending(); }
  bool draining() const { return context_.draining(); }
  bool passthrough() const { return context_.options().passthrough; }
  const TrafficMetrics& metrics() { return context_.metrics(); }

  // What the debug CLI shows, gathered from every loop; a loop that does not answer within
  // `timeout` is left out.
  using ConnectionInfo = LiveConnection;
  std::vector<ConnectionInfo> Connections(absl::Duration timeout = absl::Seconds(2));
  struct TunnelInfo {
    std::string role;  // "client" or "server"
    HboneTunnel::Description description;
    std::string peer_identity;
    bool established = false;
    bool draining = false;
    std::size_t active_streams = 0;
    std::uint64_t streams_opened = 0;
    absl::Duration age;
  };
  std::vector<TunnelInfo> Tunnels(absl::Duration timeout = absl::Seconds(2));
  // Operations in flight per loop: how busy each io_uring is.
  std::vector<std::size_t> LoopPendingOperations(absl::Duration timeout = absl::Seconds(2));

 private:
  DataPlane(const ProxyOptions& options, policy::ConfigSource* config, MeshCredentials* credentials,
            AccessLog* access_log);
  Worker& WorkerFor(const capture::CapturedPod& pod);
  // A new configuration: each loop re-decides its admitted inbound flows a moment later (so
  // a burst of changes costs one pass) and closes those the policy now refuses.
  void OnSnapshot();
  void RecheckFlows(Worker& worker);
  // Resets every connection and tunnel left on every loop, and waits until each loop did.
  void CutEverything(const absl::Status& reason);
  void ArmPodAccept(Worker& worker, std::shared_ptr<capture::InPodListener> listener);
  void OnPodAccepted(Worker& worker, const capture::InPodListener& listener, int fd);

  ProxyContext context_;
  Upstreams upstreams_;
  Outbound outbound_;
  Inbound inbound_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::optional<std::uint64_t> config_subscription_;
};

}  // namespace nodeward::proxy
