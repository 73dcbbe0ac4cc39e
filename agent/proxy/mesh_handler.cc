#include "agent/proxy/mesh_handler.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/capture/capture_log.h"
#include "agent/capture/captured_pod.h"
#include "agent/io/relay.h"
#include "agent/io/socket.h"
#include "agent/io/tls_transform.h"
#include "bpf/nodeward_maps.h"
#include "policy/decisions.h"

namespace nodeward::proxy {
namespace {

using capture::Log;
using capture::LogLevel;

constexpr absl::Duration kPodAcceptRetryDelay = absl::Milliseconds(100);
// The node-side ports of the agent (admin, metrics, readiness), reserved inside pods too.
constexpr uint16_t kAdminPort = 15000;
constexpr uint16_t kMetricsPort = 15020;
constexpr uint16_t kReadinessPort = 15021;

void ResetFd(int fd) {
  linger option{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
  close(fd);
}

void ResetConnection(io::Connection& connection, const absl::Status& reason) {
  if (connection.closed()) return;
  linger option{1, 0};
  setsockopt(connection.fd(), SOL_SOCKET, SO_LINGER, &option, sizeof(option));
  connection.Close(reason);
}

std::string HostPort(const std::string& address, uint32_t port) {
  return address.find(':') == std::string::npos ? absl::StrCat(address, ":", port)
                                                : absl::StrCat("[", address, "]:", port);
}

// The agent's own ports inside a pod: never a place to deliver to. Delivering there would
// hand the connection back to the agent (or to whatever squats on its port).
bool IsAgentPort(uint16_t port) {
  switch (port) {
    case NW_PORT_OUTBOUND:
    case NW_PORT_INBOUND_PLAINTEXT:
    case NW_PORT_TUNNEL:
    case kAdminPort:
    case kMetricsPort:
    case kReadinessPort:
      return true;
    default:
      return false;
  }
}

std::string AgentPortReason(uint16_t port) {
  return absl::StrCat("port ", port, " is the agent's own and never a delivery target");
}

// The source pod's address the destination is reached from (same node: the agent sees the
// application on loopback).
std::optional<SocketAddress> PodAddressOfFamily(const capture::CapturedPod& pod, int family) {
  for (const std::string& ip : pod.metadata().ips) {
    absl::StatusOr<IpAddress> address = IpAddress::Parse(ip);
    if (address.ok() && address->family == family) return SocketAddress{*address, 0, 0};
  }
  return std::nullopt;
}

// What the application will see as the connection's source, for the access log: the client's
// address when the delivery can keep it, the pod's own address otherwise.
std::string ClientAsDelivered(const capture::CapturedPod& pod, const SocketAddress& application,
                              const std::optional<SocketAddress>& client) {
  if (std::optional<IpAddress> kept = pod.KeptSource(application, client)) {
    return kept->ToString();
  }
  return absl::StrCat(application.ip.ToString(), " (the pod's own: client address not kept)");
}

}  // namespace

policy::Pod PolicyPodFor(const policy::Snapshot& snapshot, const capture::PodMetadata& metadata) {
  if (const policy::Pod* known = snapshot.FindPod(metadata.namespace_name, metadata.name)) {
    return *known;
  }
  policy::Pod synthesized;
  synthesized.meta.name = metadata.name;
  synthesized.meta.ns = metadata.namespace_name;
  synthesized.meta.uid = metadata.uid;
  synthesized.meta.origin = "enrollment";
  for (const auto& [key, value] : metadata.labels) synthesized.meta.labels[key] = value;
  synthesized.service_account = metadata.service_account;
  synthesized.ips = metadata.ips;
  synthesized.ready = true;
  synthesized.phase = "Running";
  return synthesized;
}

namespace {
policy::Pod PolicyPod(const policy::Snapshot& snapshot, const capture::CapturedPod& pod) {
  return PolicyPodFor(snapshot, pod.metadata());
}
}  // namespace

struct MeshHandler::Worker {
  std::unique_ptr<io::LoopThread> thread;
  // Loop-thread only from here on.
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<HboneTunnel>>> pool;
  absl::flat_hash_map<std::string, std::vector<PendingStream>> connecting;
  std::vector<std::weak_ptr<HboneTunnel>> server_tunnels;
  std::atomic<std::size_t> pooled{0};
  absl::flat_hash_set<Flow*> flows;  // live ones, for the debug CLI
};

// One application connection, from capture to its access-log line.
struct MeshHandler::Flow {
  Worker* worker = nullptr;
  AccessRecord record;
  absl::Time start = absl::Now();
  bool finished = false;
  bool carried = false;
  std::weak_ptr<io::Connection> counted;
  bool counted_is_source = true;
};

// A captured connection waiting for (or being given) a stream on a pooled tunnel.
struct MeshHandler::PendingStream {
  std::shared_ptr<Flow> flow;
  std::shared_ptr<io::Connection> app;
  std::string authority;  // CONNECT target, ip:port
  std::shared_ptr<const capture::CapturedPod> pod;
  crypto::SpiffeId source;
  crypto::SpiffeId peer;
  std::string address;  // destination pod address: the tunnel goes to its 15008
  std::shared_ptr<const crypto::TlsContext> context;
};

absl::StatusOr<std::unique_ptr<MeshHandler>> MeshHandler::Create(const Options& options,
                                                                 policy::ConfigSource* config,
                                                                 MeshCredentials* credentials,
                                                                 AccessLog* access_log) {
  std::unique_ptr<MeshHandler> handler(new MeshHandler(options, config, credentials, access_log));
  int workers =
      options.workers > 0 ? options.workers : static_cast<int>(std::thread::hardware_concurrency());
  if (workers <= 0) workers = 1;
  for (int i = 0; i < workers; ++i) {
    auto worker = std::make_unique<Worker>();
    absl::StatusOr<std::unique_ptr<io::LoopThread>> thread = io::LoopThread::Start(options.loop);
    if (!thread.ok()) return thread.status();
    worker->thread = *std::move(thread);
    handler->workers_.push_back(std::move(worker));
  }
  return handler;
}

MeshHandler::MeshHandler(const Options& options, policy::ConfigSource* config,
                         MeshCredentials* credentials, AccessLog* access_log)
    : options_(options),
      config_(config),
      credentials_(credentials),
      access_log_(access_log),
      origination_contexts_({.system_ca_bundle = options.system_ca_bundle}) {}

MeshHandler::~MeshHandler() {
  for (auto& worker : workers_) worker->thread->Stop().IgnoreError();
  workers_.clear();
}

MeshHandler::Worker& MeshHandler::WorkerFor(const capture::CapturedPod& pod) {
  // One pod's connections share a loop, so they share that loop's pooled tunnels.
  return *workers_[pod.netns_cookie() % workers_.size()];
}

absl::StatusOr<crypto::SpiffeId> MeshHandler::IdentityOf(const capture::CapturedPod& pod) const {
  return crypto::SpiffeId::Make(options_.trust_domain, pod.metadata().namespace_name,
                                pod.metadata().service_account);
}

std::shared_ptr<const capture::CapturedPod> MeshHandler::LocalPodByIp(const std::string& ip) const {
  absl::MutexLock lock(&pods_mutex_);
  auto it = pods_by_ip_.find(ip);
  return it == pods_by_ip_.end() ? nullptr : it->second;
}

void MeshHandler::OnPodEnrolled(std::shared_ptr<const capture::CapturedPod> pod) {
  absl::StatusOr<crypto::SpiffeId> identity = IdentityOf(*pod);
  if (!identity.ok()) {
    Log(LogLevel::kError, "pod=", pod->display_name(),
        " has no valid identity: ", identity.status().ToString());
  } else {
    credentials_->Acquire(*identity);
  }
  absl::MutexLock lock(&pods_mutex_);
  for (const std::string& ip : pod->metadata().ips) pods_by_ip_[ip] = pod;
}

void MeshHandler::OnPodUnenrolled(std::shared_ptr<const capture::CapturedPod> pod) {
  if (absl::StatusOr<crypto::SpiffeId> identity = IdentityOf(*pod); identity.ok()) {
    credentials_->Release(*identity);
  }
  absl::MutexLock lock(&pods_mutex_);
  for (const std::string& ip : pod->metadata().ips) {
    auto it = pods_by_ip_.find(ip);
    if (it != pods_by_ip_.end() && it->second == pod) pods_by_ip_.erase(it);
  }
}

bool MeshHandler::Admit(int fd, absl::FunctionRef<std::string()> description) {
  if (draining_.load()) {
    Log(LogLevel::kInfo, description(), " refused reason=agent is draining");
    ResetFd(fd);
    return false;
  }
  if (live_.fetch_add(1) >= options_.max_connections) {
    live_.fetch_sub(1);
    Log(LogLevel::kWarning, description(), " refused reason=connection limit ",
        options_.max_connections, " reached");
    ResetFd(fd);
    return false;
  }
  return true;
}

bool MeshHandler::AdmitOutbound(const capture::CapturedPod& pod, int fd,
                                const SocketAddress& destination) {
  return Admit(fd, [&] {
    return absl::StrCat("pod=", pod.display_name(), " outbound to ", destination.ToString());
  });
}

bool MeshHandler::AdmitInbound(const capture::CapturedPod& pod, int fd, uint16_t port) {
  return Admit(fd,
               [&] { return absl::StrCat("pod=", pod.display_name(), " inbound port ", port); });
}

void MeshHandler::OnOutbound(std::shared_ptr<const capture::CapturedPod> pod, int client_fd,
                             const SocketAddress& original_destination) {
  if (!AdmitOutbound(*pod, client_fd, original_destination)) return;
  Worker& worker = WorkerFor(*pod);
  worker.thread->Post([this, &worker, pod = std::move(pod), client_fd, original_destination] {
    HandleOutbound(worker, pod, client_fd, original_destination);
  });
}

void MeshHandler::OnInbound(std::shared_ptr<const capture::CapturedPod> pod, int fd,
                            uint16_t original_port, bool via_tunnel_port) {
  if (!AdmitInbound(*pod, fd, original_port)) return;
  Worker& worker = WorkerFor(*pod);
  worker.thread->Post([this, &worker, pod = std::move(pod), fd, original_port, via_tunnel_port] {
    HandleInbound(worker, pod, fd, original_port, via_tunnel_port);
  });
}

void MeshHandler::ServeListener(std::shared_ptr<capture::InPodListener> listener) {
  Worker& worker = WorkerFor(*listener->pod());
  worker.thread->Post([this, &worker, listener = std::move(listener)]() mutable {
    ArmPodAccept(worker, std::move(listener));
  });
}

void MeshHandler::ArmPodAccept(Worker& worker, std::shared_ptr<capture::InPodListener> listener) {
  if (listener->closed()) return;
  const int listen_fd = listener->fd();
  worker.thread->loop().AcceptMultishot(
      listen_fd,
      [this, &worker, listener = std::move(listener)](io::Completion& completion) {
        if (completion.result >= 0) OnPodAccepted(worker, *listener, completion.result);
        if (completion.more() || listener->closed()) return;
        const int error = completion.result < 0 ? -completion.result : 0;
        if (error != 0 && error != ECONNABORTED && error != EPROTO && error != EPERM) {
          // Out of descriptors or memory, or a listener in a bad state: accepting again at once
          // would spin on the same error.
          Log(LogLevel::kWarning, "pod=", listener->pod()->display_name(), " accept on ",
              listener->address(), ": ", std::strerror(error), "; retrying in ",
              absl::FormatDuration(kPodAcceptRetryDelay));
          worker.thread->loop().Timer(
              kPodAcceptRetryDelay,
              [this, &worker, listener](io::Completion&) { ArmPodAccept(worker, listener); });
          return;
        }
        // Ended by one client's failure (or by the kernel): the listener itself is fine.
        ArmPodAccept(worker, listener);
      },
      SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void MeshHandler::OnPodAccepted(Worker& worker, const capture::InPodListener& listener, int fd) {
  // A multishot accept does not return the peer: the socket is asked, for outbound only.
  std::optional<capture::InPodListener::Accepted> accepted =
      listener.Resolve(fd, [fd] { return SocketAddress::PeerOf(fd); });
  if (!accepted.has_value()) return;
  const capture::CapturedPod& pod = *listener.pod();
  if (listener.kind() == capture::InPodListener::Kind::kOutbound) {
    if (!AdmitOutbound(pod, fd, accepted->destination)) return;
    HandleOutbound(worker, listener.pod(), fd, accepted->destination, accepted->client);
    return;
  }
  if (!AdmitInbound(pod, fd, accepted->port)) return;
  HandleInbound(worker, listener.pod(), fd, accepted->port,
                listener.kind() == capture::InPodListener::Kind::kTunnel);
}

std::shared_ptr<MeshHandler::Flow> MeshHandler::NewFlow(Worker& worker, const char* direction) {
  auto flow = std::make_shared<Flow>();
  flow->worker = &worker;
  flow->record.direction = direction;
  worker.flows.insert(flow.get());
  return flow;
}

void MeshHandler::MarkCarried(Flow& flow, const std::shared_ptr<io::Connection>& counted,
                              bool counted_is_source) {
  flow.counted = counted;
  flow.counted_is_source = counted_is_source;
  if (flow.carried) return;
  flow.carried = true;
  metrics_.Opened(flow.record);
}

void MeshHandler::Finish(Flow& flow, const std::string& result, const std::string& reason) {
  if (flow.finished) return;
  flow.finished = true;
  flow.worker->flows.erase(&flow);
  flow.record.result = result;
  if (!reason.empty()) {
    // A failure after the decision keeps the decision in the line: an operator needs both
    // why the agent chose this path (say, plaintext by a DestinationRule) and what broke.
    flow.record.reason = result == "error" && !flow.record.reason.empty()
                             ? absl::StrCat(flow.record.reason, "; failed: ", reason)
                             : reason;
  }
  flow.record.duration = absl::Now() - flow.start;
  live_.fetch_sub(1);
  if (result != "refused" && !flow.carried) {
    flow.carried = true;
    metrics_.Opened(flow.record);
  }
  metrics_.Closed(flow.record);
  if (access_log_ != nullptr) access_log_->Write(flow.record);
  const AccessRecord& r = flow.record;
  Log(result == "ok" ? LogLevel::kDebug : LogLevel::kInfo, r.direction,
      " source=", r.source_workload.empty() ? r.source_address : r.source_workload,
      " source_principal=", r.source_principal, " destination=", r.destination_address,
      " destination_principal=", r.destination_principal, " mode=", r.mode, " result=", result,
      " reason=", r.reason);
}

void MeshHandler::Refuse(std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                         const std::string& reason) {
  flow->record.mode = "refused";
  flow->record.connection_security_policy = "none";
  ResetConnection(*app, absl::PermissionDeniedError(reason));
  Finish(*flow, "refused", reason);
}

void MeshHandler::ConnectFromPod(Worker& worker, const capture::CapturedPod& pod,
                                 const std::string& address, uint32_t port,
                                 io::Connection::ConnectCallback done) {
  absl::StatusOr<SocketAddress> peer = SocketAddress::Parse(HostPort(address, port));
  if (!peer.ok()) {
    done(peer.status());
    return;
  }
  absl::StatusOr<int> fd = pod.CreateAgentSocket(peer->ip.family);
  if (!fd.ok()) {
    done(fd.status());
    return;
  }
  io::Connection::Options connection;
  connection.idle_timeout = options_.idle_timeout;
  connection.set_nodelay = false;  // CreateAgentSocket did
  io::Connection::ConnectSocket(worker.thread->loop(), *fd, *peer, options_.connect_timeout,
                                connection, std::move(done));
}

void MeshHandler::ConnectAndRelay(Worker& worker, const capture::CapturedPod& pod,
                                  const std::string& address, uint32_t port,
                                  std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                                  std::shared_ptr<const crypto::TlsContext> origination) {
  ConnectFromPod(worker, pod, address, port,
                 [this, flow, app, origination = std::move(origination)](
                     absl::StatusOr<std::shared_ptr<io::Connection>> upstream) {
                   if (!upstream.ok()) {
                     ResetConnection(*app, upstream.status());
                     Finish(*flow, "error", std::string(upstream.status().message()));
                     return;
                   }
                   std::unique_ptr<io::Transform> tls;
                   if (origination != nullptr) {
                     tls =
                         std::make_unique<io::TlsTransform>(crypto::TlsEngine::Client(origination));
                   }
                   RelayPlain(flow, app, *std::move(upstream), std::move(tls));
                 });
}

void MeshHandler::Deliver(Worker& worker, const capture::CapturedPod& pod,
                          const SocketAddress& application,
                          const std::optional<SocketAddress>& client,
                          io::Connection::ConnectCallback done) {
  absl::StatusOr<std::unique_ptr<capture::Delivery>> delivery =
      pod.OpenDelivery(application, client);
  if (!delivery.ok()) {
    done(delivery.status());
    return;
  }
  const int fd = (*delivery)->TakeFd();
  io::Connection::Options connection;
  connection.idle_timeout = options_.idle_timeout;
  connection.set_nodelay = false;  // CreateAgentSocket did
  // The announcement must outlive the handshake: the application's SYN-ACK is what it lets in.
  std::shared_ptr<capture::Delivery> held = *std::move(delivery);
  io::Connection::ConnectSocket(
      worker.thread->loop(), fd, application, options_.connect_timeout, connection,
      [held = std::move(held),
       done = std::move(done)](absl::StatusOr<std::shared_ptr<io::Connection>> result) mutable {
        held.reset();
        done(std::move(result));
      });
}

void MeshHandler::DeliverAndRelay(Worker& worker, const capture::CapturedPod& pod,
                                  const SocketAddress& application,
                                  const std::optional<SocketAddress>& client,
                                  std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app) {
  flow->record.delivered_from = ClientAsDelivered(pod, application, client);
  Deliver(worker, pod, application, client,
          [this, flow, app](absl::StatusOr<std::shared_ptr<io::Connection>> upstream) {
            if (!upstream.ok()) {
              ResetConnection(*app, upstream.status());
              Finish(*flow, "error", std::string(upstream.status().message()));
              return;
            }
            RelayPlain(flow, app, *std::move(upstream), nullptr);
          });
}

void MeshHandler::RelayPlain(std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                             std::shared_ptr<io::Connection> upstream,
                             std::unique_ptr<io::Transform> tls) {
  // The transform, when there is one, sits on side A: the upstream is then A.
  const bool upstream_is_a = tls != nullptr;
  MarkCarried(*flow, app, /*counted_is_source=*/true);
  auto done = [this, flow, upstream_is_a](const io::Relay::Result& result) {
    flow->record.sent_bytes = upstream_is_a ? result.b_to_a_bytes : result.a_to_b_bytes;
    flow->record.received_bytes = upstream_is_a ? result.a_to_b_bytes : result.b_to_a_bytes;
    Finish(*flow, result.status.ok() ? "ok" : "error",
           result.status.ok() ? "" : std::string(result.status.message()));
  };
  if (upstream_is_a) {
    io::Relay::Start(std::move(upstream), std::move(app), std::move(tls), std::move(done));
  } else {
    io::Relay::Start(std::move(app), std::move(upstream), nullptr, std::move(done));
  }
}

void MeshHandler::HandleOutbound(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                                 int fd, const SocketAddress& destination,
                                 std::optional<SocketAddress> source_address) {
  io::Connection::Options connection_options;
  connection_options.idle_timeout = options_.idle_timeout;
  connection_options.set_nodelay = false;  // inherited from the in-pod listener
  std::shared_ptr<io::Connection> app =
      io::Connection::Adopt(worker.thread->loop(), fd, connection_options);
  std::shared_ptr<Flow> flow = NewFlow(worker, "outbound");
  flow->record.source_workload =
      absl::StrCat(pod->metadata().namespace_name, "/", pod->metadata().name);
  if (!source_address.has_value()) {
    if (auto peer = SocketAddress::PeerOf(fd); peer.ok()) source_address = *peer;
  }
  if (source_address.has_value()) flow->record.source_address = source_address->ToString();
  flow->record.destination_address = destination.ToString();

  absl::StatusOr<crypto::SpiffeId> source = IdentityOf(*pod);
  if (!source.ok()) {
    Refuse(flow, app, absl::StrCat("source identity: ", source.status().message()));
    return;
  }
  flow->record.source_principal = source->ToString();
  std::shared_ptr<const policy::Snapshot> snapshot = config_->Current();
  if (snapshot == nullptr) {
    Refuse(flow, app, "no configuration loaded yet");
    return;
  }
  const policy::Pod source_pod = PolicyPod(*snapshot, *pod);
  policy::OutboundDecision decision =
      policy::DecideOutbound(*snapshot, source_pod, destination.ip.Unmapped().ToString(),
                             destination.port, endpoint_hint_.fetch_add(1));
  flow->record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  flow->record.reason = decision.reason;
  if (decision.destination_pod != nullptr) {
    flow->record.destination_workload =
        absl::StrCat(decision.destination_pod->meta.ns, "/", decision.destination_pod->meta.name);
  }
  const absl::Time deadline = absl::Now() + options_.credentials_wait;

  switch (decision.action) {
    case policy::OutboundAction::kRefuse:
      Log(LogLevel::kInfo, "pod=", pod->display_name(), " identity=", source->ToString(),
          " peer=", destination.ToString(), " refused: ", decision.trace.ToString());
      Refuse(flow, app, decision.reason);
      return;

    case policy::OutboundAction::kPlaintext: {
      flow->record.mode = "plaintext";
      flow->record.connection_security_policy = "none";
      ConnectAndRelay(worker, *pod, decision.address, decision.port, flow, app, nullptr);
      return;
    }

    case policy::OutboundAction::kTlsOrigination: {
      flow->record.mode = "tls_origination";
      flow->record.connection_security_policy = "none";
      absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
          origination_contexts_.Get(*decision.origination);
      if (!context.ok()) {
        Refuse(flow, app, absl::StrCat("TLS origination: ", context.status().message()));
        return;
      }
      ConnectAndRelay(worker, *pod, decision.address, decision.port, flow, app, *context);
      return;
    }

    case policy::OutboundAction::kHbone: {
      absl::StatusOr<crypto::SpiffeId> peer =
          crypto::SpiffeId::Parse(decision.expected_peer_identity);
      if (!peer.ok()) {
        Refuse(flow, app, absl::StrCat("expected peer identity: ", peer.status().message()));
        return;
      }
      flow->record.destination_principal = peer->ToString();
      flow->record.connection_security_policy = "mutual_tls";
      if (std::shared_ptr<const capture::CapturedPod> local = LocalPodByIp(decision.address)) {
        // Both ends are pods of this agent: it has authenticated both, so the bytes stay on
        // the node, but the destination's inbound policy still decides.
        flow->record.mode = "same_node";
        const policy::Pod destination_pod = PolicyPod(*snapshot, *local);
        policy::InboundDecision inbound =
            policy::DecideInbound(*snapshot, destination_pod, decision.port,
                                  policy::InboundTransport::kMtls, source->ToString());
        if (!inbound.allow) {
          flow->record.policy = absl::StrJoin(inbound.trace.deciding, "; ");
          Refuse(flow, app, inbound.reason);
          return;
        }
        absl::StatusOr<SocketAddress> application =
            SocketAddress::Parse(HostPort(decision.address, decision.port));
        if (!application.ok() || IsAgentPort(application->port)) {
          Refuse(flow, app,
                 application.ok() ? AgentPortReason(application->port)
                                  : std::string(application.status().message()));
          return;
        }
        // The agent sees the application's connection come from loopback: the source pod's
        // address (of the destination's family) is what the server should see.
        DeliverAndRelay(worker, *local, *application,
                        PodAddressOfFamily(*pod, application->ip.family), flow, app);
        return;
      }
      flow->record.mode = "hbone_mtls";
      OpenHboneStream(worker, pod, flow, app, *source, *peer, decision.address, decision.port,
                      deadline);
      return;
    }
  }
}

void MeshHandler::OpenHboneStream(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                                  std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                                  const crypto::SpiffeId& source, const crypto::SpiffeId& peer,
                                  const std::string& address, uint32_t port, absl::Time deadline) {
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
      credentials_->ClientContext(source);
  if (!context.ok()) {
    if (absl::Now() >= deadline || app->closed()) {
      ResetConnection(*app, context.status());
      Finish(*flow, "error", std::string(context.status().message()));
      return;
    }
    // The pod was just enrolled and its first certificate is on its way.
    worker.thread->loop().Timer(
        absl::Milliseconds(50),
        [this, &worker, pod, flow, app, source, peer, address, port, deadline](io::Completion&) {
          OpenHboneStream(worker, pod, flow, app, source, peer, address, port, deadline);
        });
    return;
  }
  PendingStream pending{flow, app, HostPort(address, port), pod, source, peer, address, *context};
  RouteStream(worker, std::move(pending));
}

std::string MeshHandler::PoolKey(const PendingStream& pending) {
  // Tunnels are shared per source pod (its netns is where the tunnel's socket lives), source
  // identity, destination identity and destination address.
  return absl::StrCat(pending.pod->netns_cookie(), "|", pending.source.ToString(), "|",
                      pending.peer.ToString(), "|", pending.address);
}

void MeshHandler::RouteStream(Worker& worker, PendingStream pending) {
  const std::string key = PoolKey(pending);
  if (auto pooled = worker.pool.find(key); pooled != worker.pool.end()) {
    for (const std::shared_ptr<HboneTunnel>& tunnel : pooled->second) {
      if (tunnel->AcceptsNewStreams()) {
        StartTunnelStream(tunnel, std::move(pending));
        return;
      }
    }
  }
  // Every pooled tunnel is full or going away: this stream waits for a new one.
  auto [waiting, first] = worker.connecting.try_emplace(key);
  waiting->second.push_back(std::move(pending));
  if (first) ConnectTunnel(worker, key, waiting->second.front());
}

void MeshHandler::ConnectTunnel(Worker& worker, const std::string& key,
                                const PendingStream& first) {
  const HboneTunnel::Description description{
      absl::StrCat(first.pod->metadata().namespace_name, "/", first.pod->metadata().name),
      first.source.ToString(), HostPort(first.address, 15008)};
  ConnectFromPod(
      worker, *first.pod, first.address, 15008,
      [this, &worker, key, context = first.context, peer = first.peer,
       description](absl::StatusOr<std::shared_ptr<io::Connection>> wire) {
        std::vector<PendingStream> waiters = std::move(worker.connecting[key]);
        worker.connecting.erase(key);
        absl::StatusOr<std::shared_ptr<HboneTunnel>> tunnel =
            wire.ok() ? absl::StatusOr<std::shared_ptr<HboneTunnel>>(absl::UnknownError(""))
                      : wire.status();
        if (wire.ok()) {
          crypto::TlsEngine::ClientOptions client_options;
          client_options.expected_peer = peer;
          tunnel = HboneTunnel::Start(
              HboneTunnel::Role::kClient, *wire, crypto::TlsEngine::Client(context, client_options),
              options_.tunnel, nullptr,
              [&worker, key](const absl::Status&) { ForgetClosedTunnels(worker, key); });
        }
        if (!tunnel.ok()) {
          const std::string reason =
              absl::StrCat("tunnel to ", peer.ToString(), ": ", tunnel.status().message());
          for (PendingStream& waiter : waiters) {
            ResetConnection(*waiter.app, tunnel.status());
            Finish(*waiter.flow, "error", reason);
          }
          return;
        }
        (*tunnel)->set_description(description);
        worker.pool[key].push_back(*tunnel);
        worker.pooled.fetch_add(1);
        // Those beyond this tunnel's stream limit queue for the next one.
        for (PendingStream& waiter : waiters) RouteStream(worker, std::move(waiter));
      });
}

void MeshHandler::ForgetClosedTunnels(Worker& worker, const std::string& key) {
  auto it = worker.pool.find(key);
  if (it == worker.pool.end()) return;
  std::erase_if(it->second, [](const std::shared_ptr<HboneTunnel>& t) { return t->closed(); });
  if (it->second.empty()) worker.pool.erase(it);
  std::size_t count = 0;
  for (const auto& [unused, list] : worker.pool) count += list.size();
  worker.pooled.store(count);
}

void MeshHandler::StartTunnelStream(const std::shared_ptr<HboneTunnel>& tunnel,
                                    PendingStream pending) {
  std::shared_ptr<Flow> flow = pending.flow;
  if (pending.app->closed()) {
    Finish(*flow, "error", "application closed before the tunnel was up");
    return;
  }
  MarkCarried(*flow, pending.app, /*counted_is_source=*/true);
  absl::Status opened =
      tunnel->OpenStream(pending.authority, pending.app, [this, flow](const StreamResult& result) {
        flow->record.sent_bytes = result.from_app_bytes;
        flow->record.received_bytes = result.to_app_bytes;
        const bool refused = absl::IsPermissionDenied(result.status);
        Finish(*flow, result.status.ok() ? "ok" : (refused ? "refused" : "error"),
               result.status.ok() ? "" : std::string(result.status.message()));
      });
  if (!opened.ok()) {
    ResetConnection(*pending.app, opened);
    Finish(*flow, "error", std::string(opened.message()));
  }
}

void MeshHandler::HandleInbound(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                                int fd, uint16_t port, bool via_tunnel) {
  io::Connection::Options connection_options;
  connection_options.idle_timeout = options_.idle_timeout;
  connection_options.set_nodelay = false;  // inherited from the in-pod listener
  std::shared_ptr<io::Connection> app =
      io::Connection::Adopt(worker.thread->loop(), fd, connection_options);
  if (via_tunnel) {
    // The tunnel itself is not an application connection: its streams are.
    live_.fetch_sub(1);
    ServeTunnel(worker, pod, app, absl::Now() + options_.credentials_wait);
    return;
  }
  std::shared_ptr<Flow> flow = NewFlow(worker, "inbound");
  flow->record.mode = "plaintext";
  flow->record.connection_security_policy = "none";
  flow->record.destination_workload =
      absl::StrCat(pod->metadata().namespace_name, "/", pod->metadata().name);
  if (auto identity = IdentityOf(*pod); identity.ok()) {
    flow->record.destination_principal = identity->ToString();
  }
  absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(fd);
  if (peer.ok()) flow->record.source_address = peer->ToString();
  // The address the client dialled: the only one delivery may use, so an application
  // listening on loopback only stays private.
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  if (!local.ok()) {
    Refuse(flow, app, absl::StrCat("original destination: ", local.status().message()));
    return;
  }
  flow->record.destination_address = local->ToString();
  if (IsAgentPort(port)) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(), " peer=", flow->record.source_address,
        " plaintext to the agent's own port refused");
    Refuse(flow, app, AgentPortReason(port));
    return;
  }
  std::shared_ptr<const policy::Snapshot> snapshot = config_->Current();
  if (snapshot == nullptr) {
    Refuse(flow, app, "no configuration loaded yet");
    return;
  }
  policy::InboundDecision decision = policy::DecideInbound(
      *snapshot, PolicyPod(*snapshot, *pod), port, policy::InboundTransport::kPlaintext);
  flow->record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  flow->record.reason = decision.reason;
  if (!decision.allow) {
    Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", flow->record.source_address,
        " plaintext refused: ", decision.trace.ToString());
    Refuse(flow, app, decision.reason);
    return;
  }
  DeliverAndRelay(worker, *pod, *local,
                  peer.ok() ? std::optional<SocketAddress>(*peer) : std::nullopt, flow, app);
}

void MeshHandler::ServeTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                              std::shared_ptr<io::Connection> wire, absl::Time deadline) {
  absl::StatusOr<crypto::SpiffeId> identity = IdentityOf(*pod);
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
      identity.ok() ? credentials_->ServerContext(*identity)
                    : absl::StatusOr<std::shared_ptr<const crypto::TlsContext>>(identity.status());
  if (!context.ok()) {
    if (absl::Now() < deadline && identity.ok()) {
      worker.thread->loop().Timer(absl::Milliseconds(50),
                                  [this, &worker, pod, wire, deadline](io::Completion&) {
                                    ServeTunnel(worker, pod, wire, deadline);
                                  });
      return;
    }
    Log(LogLevel::kWarning, "pod=", pod->display_name(),
        " tunnel refused: ", context.status().ToString());
    ResetConnection(*wire, context.status());
    return;
  }
  auto holder = std::make_shared<std::weak_ptr<HboneTunnel>>();
  absl::StatusOr<SocketAddress> peer_address = SocketAddress::PeerOf(wire->fd());
  if (!peer_address.ok()) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(),
        " tunnel refused: ", peer_address.status().ToString());
    ResetConnection(*wire, peer_address.status());
    return;
  }
  const SocketAddress peer = *peer_address;
  absl::StatusOr<std::shared_ptr<HboneTunnel>> tunnel = HboneTunnel::Start(
      HboneTunnel::Role::kServer, wire, crypto::TlsEngine::Server(*context), options_.tunnel,
      [this, &worker, pod, holder, peer](hbone::StreamId stream, const std::string& authority) {
        AnswerConnect(worker, pod, *holder, peer, stream, authority);
      },
      [pod](const absl::Status& status) {
        if (!status.ok() && !absl::IsUnavailable(status)) {
          Log(LogLevel::kInfo, "pod=", pod->display_name(), " tunnel ended: ", status.ToString());
        }
      });
  if (!tunnel.ok()) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(), " tunnel: ", tunnel.status().ToString());
    return;
  }
  *holder = *tunnel;
  (*tunnel)->set_description(
      {absl::StrCat(pod->metadata().namespace_name, "/", pod->metadata().name),
       identity->ToString(), peer.ToString()});
  std::erase_if(worker.server_tunnels,
                [](const std::weak_ptr<HboneTunnel>& t) { return t.expired(); });
  worker.server_tunnels.push_back(*tunnel);
}

void MeshHandler::AnswerConnect(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                                std::weak_ptr<HboneTunnel> weak_tunnel,
                                const SocketAddress& tunnel_peer, hbone::StreamId stream,
                                const std::string& authority) {
  std::shared_ptr<HboneTunnel> tunnel = weak_tunnel.lock();
  if (tunnel == nullptr) return;
  if (draining_.load()) {
    tunnel->RefuseStream(stream, 503, "agent is draining").IgnoreError();
    return;
  }
  live_.fetch_add(1);
  std::shared_ptr<Flow> flow = NewFlow(worker, "inbound");
  flow->record.mode = "hbone_mtls";
  flow->record.connection_security_policy = "mutual_tls";
  flow->record.destination_workload =
      absl::StrCat(pod->metadata().namespace_name, "/", pod->metadata().name);
  flow->record.destination_address = authority;
  if (auto identity = IdentityOf(*pod); identity.ok()) {
    flow->record.destination_principal = identity->ToString();
  }
  const std::optional<crypto::SpiffeId>& peer = tunnel->peer_identity();
  flow->record.source_principal = peer.has_value() ? peer->ToString() : "";
  flow->record.source_address = tunnel_peer.ToString();
  auto refuse = [&](int http_status, const std::string& reason) {
    Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", flow->record.source_principal,
        " CONNECT ", authority, " refused: ", reason);
    tunnel->RefuseStream(stream, http_status, reason).IgnoreError();
    flow->record.mode = "refused";
    Finish(*flow, "refused", reason);
  };
  absl::StatusOr<std::pair<std::string, std::uint16_t>> target = hbone::ParseAuthority(authority);
  if (!target.ok()) {
    refuse(400, std::string(target.status().message()));
    return;
  }
  const std::vector<std::string>& ips = pod->metadata().ips;
  if (std::find(ips.begin(), ips.end(), target->first) == ips.end()) {
    refuse(400, absl::StrCat("CONNECT target ", target->first, " is not an address of pod ",
                             pod->display_name()));
    return;
  }
  if (IsAgentPort(target->second)) {
    refuse(400, AgentPortReason(target->second));
    return;
  }
  absl::StatusOr<SocketAddress> application =
      SocketAddress::Parse(HostPort(target->first, target->second));
  if (!application.ok()) {
    refuse(400, std::string(application.status().message()));
    return;
  }
  std::shared_ptr<const policy::Snapshot> snapshot = config_->Current();
  if (snapshot == nullptr) {
    refuse(503, "no configuration loaded yet");
    return;
  }
  if (const policy::Pod* source = snapshot->FindPodByIp(tunnel_peer.ip.Unmapped().ToString())) {
    flow->record.source_workload = absl::StrCat(source->meta.ns, "/", source->meta.name);
  }
  policy::InboundDecision decision =
      policy::DecideInbound(*snapshot, PolicyPod(*snapshot, *pod), target->second,
                            policy::InboundTransport::kMtls, flow->record.source_principal);
  flow->record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  flow->record.reason = decision.reason;
  if (!decision.allow) {
    refuse(403, decision.reason);
    return;
  }
  // The tunnel was dialled from inside the client pod: its peer is the client pod's address.
  flow->record.delivered_from = ClientAsDelivered(*pod, *application, tunnel_peer);
  Deliver(worker, *pod, *application, tunnel_peer,
          [this, weak_tunnel, stream, flow](absl::StatusOr<std::shared_ptr<io::Connection>> app) {
            std::shared_ptr<HboneTunnel> tunnel = weak_tunnel.lock();
            if (!app.ok() || tunnel == nullptr) {
              const std::string reason =
                  app.ok() ? "tunnel closed" : std::string(app.status().message());
              if (tunnel != nullptr) tunnel->RefuseStream(stream, 503, reason).IgnoreError();
              if (app.ok()) (*app)->Close();
              Finish(*flow, "error", reason);
              return;
            }
            MarkCarried(*flow, *app, /*counted_is_source=*/false);
            absl::Status accepted =
                tunnel->AcceptStream(stream, *app, [this, flow](const StreamResult& result) {
                  flow->record.sent_bytes = result.to_app_bytes;
                  flow->record.received_bytes = result.from_app_bytes;
                  Finish(*flow, result.status.ok() ? "ok" : "error",
                         result.status.ok() ? "" : std::string(result.status.message()));
                });
            if (!accepted.ok()) {
              (*app)->Close();
              Finish(*flow, "error", std::string(accepted.message()));
            }
          });
}

template <typename T>
std::vector<T> MeshHandler::Gather(absl::AnyInvocable<void(Worker&, std::vector<T>&)> collect,
                                   absl::Duration timeout) {
  struct Shared {
    absl::Mutex mutex;
    std::vector<T> out;
    std::size_t remaining = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->remaining = workers_.size();
  auto collector =
      std::make_shared<absl::AnyInvocable<void(Worker&, std::vector<T>&)>>(std::move(collect));
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->thread->Post([shared, collector, w] {
      std::vector<T> part;
      (*collector)(*w, part);
      absl::MutexLock lock(&shared->mutex);
      for (T& item : part) shared->out.push_back(std::move(item));
      --shared->remaining;
    });
  }
  absl::MutexLock lock(&shared->mutex);
  shared->mutex.AwaitWithTimeout(
      absl::Condition(
          +[](std::size_t* remaining) { return *remaining == 0; }, &shared->remaining),
      timeout);
  return shared->out;
}

std::vector<MeshHandler::ConnectionInfo> MeshHandler::Connections(absl::Duration timeout) {
  return Gather<ConnectionInfo>(
      [](Worker& worker, std::vector<ConnectionInfo>& out) {
        const absl::Time now = absl::Now();
        for (Flow* flow : worker.flows) {
          ConnectionInfo info{flow->record, now - flow->start};
          if (auto counted = flow->counted.lock()) {
            const io::Connection::Stats& stats = counted->stats();
            info.record.sent_bytes =
                flow->counted_is_source ? stats.bytes_received : stats.bytes_sent;
            info.record.received_bytes =
                flow->counted_is_source ? stats.bytes_sent : stats.bytes_received;
          }
          out.push_back(std::move(info));
        }
      },
      timeout);
}

std::vector<MeshHandler::TunnelInfo> MeshHandler::Tunnels(absl::Duration timeout) {
  return Gather<TunnelInfo>(
      [](Worker& worker, std::vector<TunnelInfo>& out) {
        const absl::Time now = absl::Now();
        auto describe = [&](const HboneTunnel& tunnel, const char* role) {
          TunnelInfo info;
          info.role = role;
          info.description = tunnel.description();
          if (tunnel.peer_identity().has_value()) {
            info.peer_identity = tunnel.peer_identity()->ToString();
          }
          info.established = tunnel.established();
          info.draining = tunnel.draining();
          info.active_streams = tunnel.active_streams();
          info.streams_opened = tunnel.streams_opened();
          info.age = now - tunnel.created();
          out.push_back(std::move(info));
        };
        for (const auto& [key, tunnels] : worker.pool) {
          for (const auto& tunnel : tunnels) {
            if (!tunnel->closed()) describe(*tunnel, "client");
          }
        }
        for (const std::weak_ptr<HboneTunnel>& weak : worker.server_tunnels) {
          if (auto tunnel = weak.lock(); tunnel != nullptr && !tunnel->closed()) {
            describe(*tunnel, "server");
          }
        }
      },
      timeout);
}

std::vector<std::size_t> MeshHandler::LoopPendingOperations(absl::Duration timeout) {
  return Gather<std::size_t>(
      [](Worker& worker, std::vector<std::size_t>& out) {
        out.push_back(worker.thread->loop().pending_operations());
      },
      timeout);
}

std::size_t MeshHandler::pooled_tunnels() const {
  std::size_t total = 0;
  for (const auto& worker : workers_) total += worker->pooled.load();
  return total;
}

std::size_t MeshHandler::Drain(absl::Duration grace) {
  draining_.store(true);
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->thread->Post([w] {
      for (auto& [key, tunnels] : w->pool) {
        for (const std::shared_ptr<HboneTunnel>& tunnel : tunnels) tunnel->Drain("agent draining");
      }
      for (const std::weak_ptr<HboneTunnel>& weak : w->server_tunnels) {
        if (auto tunnel = weak.lock()) tunnel->Drain("agent draining");
      }
    });
  }
  const absl::Time deadline = absl::Now() + grace;
  while (live_.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  return live_.load();
}

}  // namespace nodeward::proxy
