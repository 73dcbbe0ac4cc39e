// The data plane behind the in-pod listeners: every captured connection gets a policy decision
// and is carried accordingly, on io_uring worker loops.
//   outbound (15001): HBONE mTLS through a pooled tunnel to the destination pod's 15008, the
//     same-node shortcut when the destination pod is enrolled here, TLS origination, plaintext,
//     or a refusal (RST);
//   inbound 15008: mTLS with the pod's own certificate, one CONNECT per stream, each checked
//     against the pod's PeerAuthentication and delivered to the application on loopback;
//   inbound 15006: plaintext, delivered only where PeerAuthentication allows it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/capture/connection_handler.h"
#include "agent/io/connection.h"
#include "agent/io/loop_thread.h"
#include "agent/io/transform.h"
#include "agent/proxy/access_log.h"
#include "agent/proxy/credentials.h"
#include "agent/proxy/hbone_tunnel.h"
#include "agent/proxy/origination_contexts.h"
#include "agent/proxy/traffic_metrics.h"
#include "policy/source.h"

namespace nodeward::proxy {

// The pod as the policy engine sees it: from the configuration when it lists the pod, else
// described from its enrollment, so decisions about it still follow its namespace's policy.
policy::Pod PolicyPodFor(const policy::Snapshot& snapshot, const capture::PodMetadata& metadata);

// The agent's worker loops give memory back after a burst once idle for 10 s.
inline io::EventLoop::Options DefaultLoopOptions() {
  io::EventLoop::Options options;
  options.idle_trim_interval = absl::Seconds(10);
  return options;
}

class MeshHandler : public capture::ConnectionHandler {
 public:
  struct Options {
    std::string trust_domain = "cluster.local";
    // io_uring worker loops; 0 means one per core.
    int workers = 0;
    absl::Duration connect_timeout = absl::Seconds(5);
    // An application connection with no byte either way for this long is closed.
    absl::Duration idle_timeout = absl::Hours(1);
    // How long a connection may wait for its pod's first certificate.
    absl::Duration credentials_wait = absl::Seconds(10);
    // Live connections (application side) beyond this are refused at once.
    std::size_t max_connections = 65536;
    HboneTunnel::Options tunnel;
    io::EventLoop::Options loop = DefaultLoopOptions();
    // TLS origination's roots when a DestinationRule gives no caCertificates.
    std::string system_ca_bundle = kDefaultSystemCaBundle;
  };

  static absl::StatusOr<std::unique_ptr<MeshHandler>> Create(const Options& options,
                                                             policy::ConfigSource* config,
                                                             MeshCredentials* credentials,
                                                             AccessLog* access_log);
  ~MeshHandler() override;

  void OnOutbound(std::shared_ptr<const capture::CapturedPod> pod, int client_fd,
                  const SocketAddress& original_destination) override;
  void OnInbound(std::shared_ptr<const capture::CapturedPod> pod, int fd, uint16_t original_port,
                 bool via_tunnel_port) override;
  // Each pod's listeners are served by the loop that carries its connections.
  bool ServesListeners() const override { return true; }
  void ServeListener(std::shared_ptr<capture::InPodListener> listener) override;
  void OnPodEnrolled(std::shared_ptr<const capture::CapturedPod> pod) override;
  void OnPodUnenrolled(std::shared_ptr<const capture::CapturedPod> pod) override;

  // Graceful drain: new connections are refused, tunnels send GOAWAY, live connections get
  // until `grace` to finish; then everything left is cut. Returns how many were cut.
  std::size_t Drain(absl::Duration grace);

  std::size_t live_connections() const { return live_.load(); }
  std::size_t pooled_tunnels() const;
  bool draining() const { return draining_.load(); }

  // What the debug CLI shows. Gathered from every loop; a loop that does not answer within
  // `timeout` is left out.
  struct ConnectionInfo {
    AccessRecord record;  // bytes so far
    absl::Duration age;
  };
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
  const TrafficMetrics& metrics() const { return metrics_; }

 private:
  struct Worker;
  struct Flow;
  struct PendingStream;

  MeshHandler(const Options& options, policy::ConfigSource* config, MeshCredentials* credentials,
              AccessLog* access_log);
  Worker& WorkerFor(const capture::CapturedPod& pod);
  absl::StatusOr<crypto::SpiffeId> IdentityOf(const capture::CapturedPod& pod) const;
  std::shared_ptr<const capture::CapturedPod> LocalPodByIp(const std::string& ip) const;
  // `description` names the connection in the log line of a refusal.
  bool Admit(int fd, absl::FunctionRef<std::string()> description);
  bool AdmitOutbound(const capture::CapturedPod& pod, int fd, const SocketAddress& destination);
  bool AdmitInbound(const capture::CapturedPod& pod, int fd, uint16_t port);
  void ArmPodAccept(Worker& worker, std::shared_ptr<capture::InPodListener> listener);
  void OnPodAccepted(Worker& worker, const capture::InPodListener& listener, int fd);

  // `source_address`: the application's address when the caller already has it.
  void HandleOutbound(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd,
                      const SocketAddress& destination,
                      std::optional<SocketAddress> source_address = std::nullopt);
  void HandleInbound(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd,
                     uint16_t port, bool via_tunnel);
  void OpenHboneStream(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                       std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                       const crypto::SpiffeId& source, const crypto::SpiffeId& peer,
                       const std::string& address, uint32_t port, absl::Time deadline);
  static std::string PoolKey(const PendingStream& pending);
  void RouteStream(Worker& worker, PendingStream pending);
  void ConnectTunnel(Worker& worker, const std::string& key, const PendingStream& first);
  static void ForgetClosedTunnels(Worker& worker, const std::string& key);
  void StartTunnelStream(const std::shared_ptr<HboneTunnel>& tunnel, PendingStream pending);
  void ServeTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                   std::shared_ptr<io::Connection> wire, absl::Time deadline);
  void AnswerConnect(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                     std::weak_ptr<HboneTunnel> tunnel, const SocketAddress& tunnel_peer,
                     hbone::StreamId stream, const std::string& authority);
  // Connects from inside `pod`'s netns (with the agent's socket mark) to `address`.
  void ConnectFromPod(Worker& worker, const capture::CapturedPod& pod, const std::string& address,
                      uint32_t port, io::Connection::ConnectCallback done);
  // Connects from `pod` to address:port and relays `app` there, through TLS when
  // `origination` is set; the flow ends when the relay does.
  void ConnectAndRelay(Worker& worker, const capture::CapturedPod& pod, const std::string& address,
                       uint32_t port, std::shared_ptr<Flow> flow,
                       std::shared_ptr<io::Connection> app,
                       std::shared_ptr<const crypto::TlsContext> origination);
  // Connects to `application` (one of `pod`'s addresses) from inside the pod, from the
  // client's address when the pod's routing lets it be kept, past the pod's inbound steering.
  void Deliver(Worker& worker, const capture::CapturedPod& pod, const SocketAddress& application,
               const std::optional<SocketAddress>& client, io::Connection::ConnectCallback done);
  // Delivers and relays `app` there; the flow ends when the relay does.
  void DeliverAndRelay(Worker& worker, const capture::CapturedPod& pod,
                       const SocketAddress& application, const std::optional<SocketAddress>& client,
                       std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app);
  void RelayPlain(std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                  std::shared_ptr<io::Connection> upstream, std::unique_ptr<io::Transform> tls);
  void Refuse(std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
              const std::string& reason);
  void Finish(Flow& flow, const std::string& result, const std::string& reason);
  std::shared_ptr<Flow> NewFlow(Worker& worker, const char* direction);
  // The connection is being carried: counted as opened; `counted` is the connection whose
  // byte counters show progress (toward the source when `counted_is_source`).
  void MarkCarried(Flow& flow, const std::shared_ptr<io::Connection>& counted,
                   bool counted_is_source);
  template <typename T>
  std::vector<T> Gather(absl::AnyInvocable<void(Worker&, std::vector<T>&)> collect,
                        absl::Duration timeout);

  const Options options_;
  policy::ConfigSource* const config_;
  MeshCredentials* const credentials_;
  AccessLog* const access_log_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<std::size_t> live_{0};
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> endpoint_hint_{0};
  TrafficMetrics metrics_;
  OriginationContexts origination_contexts_;

  mutable absl::Mutex pods_mutex_;
  absl::flat_hash_map<std::string, std::shared_ptr<const capture::CapturedPod>> pods_by_ip_
      ABSL_GUARDED_BY(pods_mutex_);
};

}  // namespace nodeward::proxy
