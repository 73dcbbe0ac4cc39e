// The running ingress gateway: io_uring worker loops accepting clients from outside the mesh on
// every port the workload's Gateways serve, and carrying each connection as the gateway's
// decisions say, into the mesh as a workload of its own. The path of one connection:
//   accept (admission, a handshake ticket) -> the ClientHello, peeked (MSG_PEEK, SO_RCVLOWAT
//   so a split hello costs one wakeup per step, not a spin) -> policy::DecideGateway ->
//   policy::DecideOutbound with the gateway workload as the source -> proxy::ChooseUpstream ->
//   for PASSTHROUGH and TCP the client's bytes, hello included, go upstream unchanged; for a
//   terminating server the handshake finishes first (no upstream is opened for a client that
//   fails it) -> proxy::Upstreams::Open (HBONE with the gateway's own identity, TLS
//   origination or plain TCP) -> proxy::RelayFlow.
// What is shared with the agent's data plane: ProxyContext (admission, the handshake budget,
// flows, metrics, origination contexts, credentials), Upstreams and its tunnel pool, the relay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/capture/captured_pod.h"
#include "agent/capture/socket_origin.h"
#include "agent/gateway/client_hello.h"
#include "agent/gateway/gateway_config.h"
#include "agent/gateway/listener_contexts.h"
#include "agent/proxy/context.h"
#include "agent/proxy/upstream.h"
#include "agent/proxy/workers.h"
#include "common/spiffe_id.h"
#include "crypto/gateway_tls.h"
#include "policy/gateway_decisions.h"
#include "policy/source.h"

namespace nodeward::gateway {

struct GatewayServerOptions {
  // Loops, timeouts, the connection limit, the pending-handshake budget, the trust domain.
  proxy::ProxyOptions proxy;
  // Who the gateway is: its namespace and labels select Gateways, its service account is the
  // identity the mesh sees. The snapshot's Pod of that name, when it has one, is used instead.
  capture::PodMetadata workload;
  policy::GatewayOptions policy;
  // Every port of the resolved listeners is bound on this address; "::" takes IPv4 too.
  std::string listen_address = "::";
  ListenerContexts::Options tls;
};

// What the gateway refused before carrying, by typed reason (metric labels).
class GatewayMetrics {
 public:
  void ClientHelloFailed(ClientHelloError error);
  void Refused(policy::GatewayRefusal refusal);
  void HandshakeFailed(crypto::GatewayHandshakeFailure failure);
  void Render(std::string& out) const;

 private:
  mutable absl::Mutex mutex_;
  std::map<std::string, std::uint64_t> client_hello_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::uint64_t> refused_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::uint64_t> handshakes_ ABSL_GUARDED_BY(mutex_);
};

// A port the gateway should serve and whether it does.
struct ServedPort {
  uint32_t port = 0;
  policy::ListenerKind kind = policy::ListenerKind::kPlaintext;
  std::size_t chains = 0;
  absl::Status bound;  // why it could not be bound, on some loop
};

class GatewayServer {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Create(GatewayServerOptions options,
                                                               policy::ConfigSource* config,
                                                               proxy::MeshCredentials* credentials,
                                                               proxy::AccessLog* access_log);
  ~GatewayServer();
  GatewayServer(const GatewayServer&) = delete;
  GatewayServer& operator=(const GatewayServer&) = delete;

  const SpiffeId& identity() const { return identity_; }
  // Null until the first configuration has loaded.
  std::shared_ptr<const GatewayConfig> config() const;
  std::vector<ServedPort> Ports() const;
  ListenerContexts& contexts() { return contexts_; }
  std::size_t live_connections() const { return context_.live(); }
  std::vector<proxy::LiveConnection> Connections(absl::Duration timeout = absl::Seconds(2)) {
    return proxy::GatherConnections(workers_, timeout);
  }
  const GatewayServerOptions& options() const { return options_; }
  std::size_t pending_handshakes() { return context_.handshakes().pending(); }
  // The mesh metrics (reporter="source", the gateway's workload labels), the gateway's own
  // refusals and the served certificates' expiry, in the Prometheus text format.
  std::string RenderMetrics();

  // New connections are refused, live ones get until `grace`; then the rest are cut. Returns
  // how many were cut.
  std::size_t Drain(absl::Duration grace);

 private:
  struct Pending;
  struct PortSocket {
    int fd = -1;
    io::EventLoop::OpId accept = 0;
    bool closing = false;  // no longer served: the accept's last completion closes it
  };
  // One worker's listening sockets, by port; touched on its loop only.
  using WorkerPorts = std::map<uint32_t, std::shared_ptr<PortSocket>>;

  GatewayServer(GatewayServerOptions options, policy::ConfigSource* config,
                proxy::MeshCredentials* credentials, proxy::AccessLog* access_log,
                SpiffeId identity);
  void OnSnapshot(std::shared_ptr<const policy::Snapshot> snapshot);
  void Reconcile(std::size_t worker_index, std::set<uint32_t> ports);
  void ArmAccept(proxy::Worker& worker, uint32_t port, std::shared_ptr<PortSocket> socket);
  void OnAccepted(proxy::Worker& worker, uint32_t port, int fd);
  // Waits (a poll) until the peeked bytes can answer, then decides.
  void ReadHello(proxy::Worker& worker, std::shared_ptr<Pending> pending);
  void OnHelloBytes(proxy::Worker& worker, std::shared_ptr<Pending> pending, unsigned revents);
  void Decide(proxy::Worker& worker, std::shared_ptr<Pending> pending,
              const policy::GatewayConnection& connection);
  void Terminate(proxy::Worker& worker, std::shared_ptr<Pending> pending,
                 proxy::UpstreamTarget target);
  void Carry(proxy::Worker& worker, std::shared_ptr<proxy::Flow> flow,
             std::shared_ptr<io::Stream> client, proxy::UpstreamTarget target);

  const GatewayServerOptions options_;
  const SpiffeId identity_;
  proxy::ProxyContext context_;
  proxy::Upstreams upstreams_;
  ListenerContexts contexts_;
  GatewayMetrics metrics_;
  std::shared_ptr<const capture::SocketOrigin> origin_;
  std::vector<std::unique_ptr<proxy::Worker>> workers_;
  std::vector<WorkerPorts> ports_;  // per worker, on its loop
  std::optional<uint64_t> config_subscription_;

  mutable absl::Mutex mutex_;
  std::shared_ptr<const GatewayConfig> config_ ABSL_GUARDED_BY(mutex_);
  std::map<uint32_t, absl::Status> bind_errors_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::gateway
