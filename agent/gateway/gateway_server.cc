#include "agent/gateway/gateway_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/capture/netns_executor.h"
#include "agent/io/connection.h"
#include "agent/io/socket.h"
#include "agent/io/tls_connection.h"
#include "agent/proxy/traffic_metrics.h"
#include "agent/proxy/workers.h"
#include "common/errno_status.h"
#include "common/log.h"

namespace nodeward::gateway {
namespace {

constexpr absl::Duration kAcceptRetryDelay = absl::Milliseconds(100);
constexpr int kListenBacklog = 4096;

// The gateway's upstream sockets live in its own netns (its pod's). Its pod is not enrolled,
// so nothing captures them and they need no mark, nor the privileges setting one takes.
class OwnNetns : public capture::SocketOrigin {
 public:
  static absl::StatusOr<std::shared_ptr<const OwnNetns>> Create(std::string display_name) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus(errno, "socket");
    absl::StatusOr<uint64_t> cookie = capture::NetnsCookieOfSocket(fd);
    close(fd);
    if (!cookie.ok()) return cookie.status();
    return std::make_shared<const OwnNetns>(std::move(display_name), *cookie);
  }
  OwnNetns(std::string display_name, uint64_t cookie)
      : display_name_(std::move(display_name)), cookie_(cookie) {}

  absl::StatusOr<int> CreateAgentSocket(int family) const override {
    const int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus(errno, "socket");
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  uint64_t netns_cookie() const override { return cookie_; }
  const std::string& display_name() const override { return display_name_; }

 private:
  const std::string display_name_;
  const uint64_t cookie_;
};

void Count(absl::Mutex& mutex, std::map<std::string, std::uint64_t>& counters,
           absl::string_view reason) {
  absl::MutexLock lock(&mutex);
  ++counters[std::string(reason)];
}

void RenderCounters(std::string& out, const std::string& name, const std::string& help,
                    const std::map<std::string, std::uint64_t>& counters) {
  proxy::AppendMetricHeader(out, name, "counter", help);
  for (const auto& [reason, count] : counters) {
    absl::StrAppend(&out, name, proxy::PrometheusLabels({{"reason", reason}}), " ", count, "\n");
  }
}

void SetReceiveLowWater(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes));
}

}  // namespace

void GatewayMetrics::ClientHelloFailed(ClientHelloError error) {
  Count(mutex_, client_hello_, ClientHelloErrorName(error));
}
void GatewayMetrics::Refused(policy::GatewayRefusal refusal) {
  Count(mutex_, refused_, policy::GatewayRefusalName(refusal));
}
void GatewayMetrics::HandshakeFailed(crypto::GatewayHandshakeFailure failure) {
  Count(mutex_, handshakes_, crypto::GatewayHandshakeFailureName(failure));
}

void GatewayMetrics::Render(std::string& out) const {
  absl::MutexLock lock(&mutex_);
  RenderCounters(out, "nodeward_gateway_client_hello_failures_total",
                 "Connections closed because their first bytes were no usable ClientHello.",
                 client_hello_);
  RenderCounters(out, "nodeward_gateway_refusals_total",
                 "Connections no gateway server, route or destination takes.", refused_);
  RenderCounters(out, "nodeward_gateway_tls_handshake_failures_total",
                 "Client TLS handshakes of terminating servers that failed, by reason.",
                 handshakes_);
}

// A connection from accept until a stream owns its socket.
struct GatewayServer::Pending {
  uint32_t port = 0;
  int fd = -1;
  SocketAddress client;
  std::shared_ptr<const GatewayConfig> config;
  const policy::GatewayListener* listener = nullptr;  // in `config`
  std::shared_ptr<proxy::Flow> flow;
  std::optional<proxy::HandshakeBudget::Ticket> ticket;
  std::optional<policy::GatewayDecision> decision;
  bool low_water_raised = false;  // SO_RCVLOWAT set above 1 while the ClientHello arrives

  ~Pending() {
    // Refused or failed before a stream took it: the client learns at once.
    if (fd >= 0) {
      io::SetResetOnClose(fd);
      close(fd);
    }
  }
  int TakeFd() { return std::exchange(fd, -1); }
  void Refuse(proxy::RefusalReason refusal, absl::string_view reason) {
    if (flow != nullptr) flow->Refuse(refusal, reason);
  }
};

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Create(
    GatewayServerOptions options, policy::ConfigSource* config, proxy::MeshCredentials* credentials,
    proxy::AccessLog* access_log) {
  if (config == nullptr || credentials == nullptr) {
    return absl::InvalidArgumentError("the gateway needs a configuration and credentials");
  }
  if (options.workload.namespace_name.empty() || options.workload.name.empty()) {
    return absl::InvalidArgumentError("the gateway needs its pod's namespace and name");
  }
  if (options.workload.service_account.empty()) options.workload.service_account = "default";
  absl::StatusOr<SpiffeId> identity =
      SpiffeId::Make(options.proxy.trust_domain, options.workload.namespace_name,
                     options.workload.service_account);
  if (!identity.ok()) return identity.status();
  if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(options.listen_address); !ip.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address ", options.listen_address, ": ", ip.status().message()));
  }
  std::unique_ptr<GatewayServer> server(
      new GatewayServer(std::move(options), config, credentials, access_log, *identity));
  absl::StatusOr<std::shared_ptr<const OwnNetns>> origin = OwnNetns::Create(
      absl::StrCat(server->options_.workload.namespace_name, "/", server->options_.workload.name));
  if (!origin.ok()) return origin.status();
  server->origin_ = *std::move(origin);
  absl::StatusOr<std::vector<std::unique_ptr<proxy::Worker>>> workers =
      proxy::StartWorkers(server->options_.proxy.workers, server->options_.proxy.loop);
  if (!workers.ok()) return workers.status();
  server->workers_ = *std::move(workers);
  server->ports_.resize(server->workers_.size());
  // The gateway's own certificate: what it presents to the mesh.
  credentials->Acquire(*identity);
  GatewayServer* raw = server.get();
  server->config_subscription_ = config->Subscribe(
      [raw](std::shared_ptr<const policy::Snapshot> snapshot) { raw->OnSnapshot(snapshot); });
  return server;
}

GatewayServer::GatewayServer(GatewayServerOptions options, policy::ConfigSource* config,
                             proxy::MeshCredentials* credentials, proxy::AccessLog* access_log,
                             SpiffeId identity)
    : options_(std::move(options)),
      identity_(std::move(identity)),
      context_(options_.proxy, config, credentials, access_log),
      upstreams_(context_),
      contexts_(options_.tls) {}

GatewayServer::~GatewayServer() {
  if (config_subscription_.has_value()) context_.config()->Unsubscribe(*config_subscription_);
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->thread->Post([this, i] { Reconcile(i, {}); });
  }
  proxy::CutWorkers(workers_, absl::CancelledError("gateway stopping"));
  for (auto& worker : workers_) worker->poster->Detach();
  for (auto& worker : workers_) worker->thread->Stop().IgnoreError();
  workers_.clear();
  if (context_.credentials() != nullptr) context_.credentials()->Release(identity_);
}

std::shared_ptr<const GatewayConfig> GatewayServer::config() const {
  absl::MutexLock lock(&mutex_);
  return config_;
}

std::vector<ServedPort> GatewayServer::Ports() const {
  absl::MutexLock lock(&mutex_);
  std::vector<ServedPort> out;
  if (config_ == nullptr) return out;
  for (const policy::GatewayListener& listener : config_->listeners.listeners) {
    ServedPort port{listener.port, listener.kind, listener.chains.size(), absl::OkStatus()};
    if (auto it = bind_errors_.find(listener.port); it != bind_errors_.end()) {
      port.bound = it->second;
    }
    out.push_back(std::move(port));
  }
  return out;
}

void GatewayServer::OnSnapshot(std::shared_ptr<const policy::Snapshot> snapshot) {
  if (snapshot == nullptr) return;
  std::shared_ptr<const GatewayConfig> config = GatewayConfig::Resolve(
      snapshot, proxy::PolicyPodFor(*snapshot, options_.workload), options_.policy);
  contexts_.Update(config);
  std::set<uint32_t> ports;
  std::vector<std::string> described;
  for (const policy::GatewayListener& listener : config->listeners.listeners) {
    ports.insert(listener.port);
    described.push_back(absl::StrCat(listener.port, " (",
                                     listener.kind == policy::ListenerKind::kTls ? "TLS" : "TCP",
                                     ", ", listener.chains.size(), " chains)"));
  }
  {
    absl::MutexLock lock(&mutex_);
    config_ = config;
  }
  Log(LogLevel::kInfo, "gateway=", origin_->display_name(), " configuration ",
      snapshot->generation(), ": ", config->listeners.gateways.size(), " Gateways, ports ",
      described.empty() ? "none" : absl::StrJoin(described, ", "));
  for (const std::string& warning : config->listeners.trace.warnings) {
    Log(LogLevel::kWarning, "gateway=", origin_->display_name(), " ", warning);
  }
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->poster->Post([this, i, ports] { Reconcile(i, ports); });
  }
}

void GatewayServer::Reconcile(std::size_t worker_index, std::set<uint32_t> ports) {
  proxy::Worker& worker = *workers_[worker_index];
  WorkerPorts& mine = ports_[worker_index];
  for (auto it = mine.begin(); it != mine.end();) {
    if (ports.contains(it->first)) {
      ++it;
      continue;
    }
    // The accept's last completion closes the socket.
    it->second->closing = true;
    worker.loop().Cancel(it->second->accept);
    it = mine.erase(it);
  }
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(options_.listen_address);
  for (uint32_t port : ports) {
    if (mine.contains(port)) continue;
    const SocketAddress address{*ip, static_cast<uint16_t>(port), 0};
    absl::StatusOr<int> fd = io::ListenTcpShared(address, kListenBacklog);
    {
      absl::MutexLock lock(&mutex_);
      if (fd.ok()) {
        bind_errors_.erase(port);
      } else {
        bind_errors_[port] = fd.status();
      }
    }
    if (!fd.ok()) {
      Log(LogLevel::kError, "gateway=", origin_->display_name(), " port ", port,
          " not served: ", fd.status().ToString());
      continue;
    }
    // Accepted sockets inherit it: the client's small handshake messages go at once.
    const int one = 1;
    setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto socket = std::make_shared<PortSocket>();
    socket->fd = *fd;
    mine[port] = socket;
    ArmAccept(worker, port, std::move(socket));
  }
}

void GatewayServer::ArmAccept(proxy::Worker& worker, uint32_t port,
                              std::shared_ptr<PortSocket> socket) {
  socket->accept = worker.loop().AcceptMultishot(
      socket->fd,
      [this, &worker, port, socket](io::Completion& completion) {
        if (completion.result >= 0) {
          if (socket->closing) {
            close(completion.result);
          } else {
            OnAccepted(worker, port, completion.result);
          }
        }
        if (completion.more()) return;
        if (socket->closing) {
          close(std::exchange(socket->fd, -1));
          return;
        }
        const int error = completion.result < 0 ? -completion.result : 0;
        if (error != 0 && error != ECONNABORTED && error != EPROTO && error != EPERM) {
          // Out of descriptors or memory: accepting again at once would spin on it.
          Log(LogLevel::kWarning, "gateway port ", port, " accept: ", std::strerror(error),
              "; retrying in ", absl::FormatDuration(kAcceptRetryDelay));
          worker.loop().Timer(kAcceptRetryDelay, [this, &worker, port, socket](io::Completion&) {
            if (socket->closing) {
              close(std::exchange(socket->fd, -1));
              return;
            }
            ArmAccept(worker, port, socket);
          });
          return;
        }
        ArmAccept(worker, port, socket);
      },
      SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void GatewayServer::OnAccepted(proxy::Worker& worker, uint32_t port, int fd) {
  auto pending = std::make_shared<Pending>();
  pending->port = port;
  pending->fd = fd;
  if (absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(fd); peer.ok()) {
    pending->client = *peer;
  }
  proxy::RefusalReason why = proxy::RefusalReason::kNone;
  std::optional<proxy::LiveSlot> slot = context_.Admit(&why);
  if (!slot.has_value()) {
    Log(LogLevel::kWarning, "gateway port ", port, " client=", pending->client.ToString(),
        " refused reason=", proxy::RefusalReasonName(why));
    return;
  }
  pending->flow = context_.NewFlow(worker, proxy::Direction::kOutbound, *std::move(slot));
  proxy::AccessRecord& record = pending->flow->record();
  record.source_workload = origin_->display_name();
  record.source_principal = identity_.ToString();
  record.source_address = pending->client.ToString();
  record.destination_address = absl::StrCat("gateway port ", port);
  pending->config = config();
  if (pending->config == nullptr) {
    pending->Refuse(proxy::RefusalReason::kNoConfiguration, "no configuration loaded yet");
    return;
  }
  pending->listener = pending->config->listeners.ForPort(port);
  if (pending->listener == nullptr) {
    metrics_.Refused(policy::GatewayRefusal::kNoListener);
    pending->Refuse(proxy::RefusalReason::kGatewayRoute,
                    absl::StrCat("no Gateway server on port ", port));
    return;
  }
  if (pending->listener->kind == policy::ListenerKind::kPlaintext) {
    Decide(worker, std::move(pending), {});
    return;
  }
  proxy::HandshakeBudget::Refusal refusal;
  pending->ticket =
      context_.handshakes().TryAdmit(pending->client.ip.Unmapped(), absl::Now(), &refusal);
  if (!pending->ticket.has_value()) {
    context_.metrics().HandshakeDropped(proxy::HandshakeBudget::RefusalName(refusal));
    pending->Refuse(proxy::RefusalReason::kConnectionLimit,
                    absl::StrCat("too many pending TLS handshakes (",
                                 proxy::HandshakeBudget::RefusalName(refusal), ")"));
    return;
  }
  // Most clients' ClientHello is queued by the time the accept completes: look before
  // paying for a poll.
  OnHelloBytes(worker, std::move(pending), /*revents=*/0);
}

void GatewayServer::ReadHello(proxy::Worker& worker, std::shared_ptr<Pending> pending) {
  const absl::Duration left = pending->ticket->deadline() - absl::Now();
  auto timed_out = [this](Pending& pending) {
    context_.metrics().HandshakeDropped("timeout");
    pending.Refuse(proxy::RefusalReason::kClientHello,
                   absl::StrCat("no complete ClientHello within ",
                                absl::FormatDuration(context_.handshakes().options().timeout)));
  };
  if (left <= absl::ZeroDuration()) {
    timed_out(*pending);
    return;
  }
  const int fd = pending->fd;
  worker.loop().Poll(
      fd, POLLIN | POLLRDHUP, left,
      [this, &worker, pending = std::move(pending), timed_out](io::Completion& completion) mutable {
        if (completion.result == -ECANCELED) {
          timed_out(*pending);
          return;
        }
        if (completion.result < 0) {
          pending->flow->Finish(
              proxy::Result::kError,
              absl::StrCat("waiting for the ClientHello: ", std::strerror(-completion.result)));
          return;
        }
        OnHelloBytes(worker, std::move(pending), static_cast<unsigned>(completion.result));
      });
}

void GatewayServer::OnHelloBytes(proxy::Worker& worker, std::shared_ptr<Pending> pending,
                                 unsigned revents) {
  // The bytes stay in the socket: whoever takes the connection next reads them from there
  // (the TLS engine that terminates, or the relay that passes them through unchanged).
  // Every peek starts again from the first byte, so one buffer per loop thread serves all.
  ClientHelloReader::Options reader_options;
  thread_local std::vector<uint8_t> peeked;
  peeked.resize(reader_options.max_buffered_bytes + 1);
  const ssize_t n = recv(pending->fd, peeked.data(), peeked.size(), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      ReadHello(worker, std::move(pending));
      return;
    }
    pending->flow->Finish(proxy::Result::kError,
                          absl::StrCat("reading the ClientHello: ", std::strerror(errno)));
    return;
  }
  ClientHelloReader reader(reader_options);
  ClientHelloReader::State state =
      reader.Feed(absl::MakeConstSpan(peeked.data(), static_cast<std::size_t>(n)));
  // Nothing more comes once the peer has ended its side (or closed before sending anything).
  if (state == ClientHelloReader::State::kNeedMore &&
      (n == 0 || (revents & (POLLRDHUP | POLLHUP)) != 0)) {
    state = reader.FeedEof();
  }
  switch (state) {
    case ClientHelloReader::State::kNeedMore: {
      // Wake up only once the bytes the next step needs are there.
      SetReceiveLowWater(pending->fd, static_cast<int>(n + reader.MinMoreBytes()));
      pending->low_water_raised = true;
      ReadHello(worker, std::move(pending));
      return;
    }
    case ClientHelloReader::State::kFailed:
      metrics_.ClientHelloFailed(reader.error());
      pending->Refuse(proxy::RefusalReason::kClientHello,
                      absl::StrCat("ClientHello ", ClientHelloErrorName(reader.error()), ": ",
                                   reader.status().message()));
      return;
    case ClientHelloReader::State::kParsed:
      if (pending->low_water_raised) SetReceiveLowWater(pending->fd, 1);
      Decide(worker, std::move(pending), ConnectionOf(reader.hello()));
      return;
  }
}

void GatewayServer::Decide(proxy::Worker& worker, std::shared_ptr<Pending> pending,
                           const policy::GatewayConnection& connection) {
  const GatewayConfig& config = *pending->config;
  proxy::AccessRecord& record = pending->flow->record();
  policy::GatewayDecision decision = policy::DecideGateway(*config.snapshot, *pending->listener,
                                                           connection, context_.NextEndpointHint());
  record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  record.reason = decision.reason;
  const std::string sni = connection.sni.value_or("(none)");
  if (decision.action == policy::GatewayAction::kRefuse) {
    metrics_.Refused(decision.refusal);
    Log(LogLevel::kInfo, "gateway=", origin_->display_name(), " port=", pending->port, " sni=", sni,
        " client=", pending->client.ToString(), " refused (",
        policy::GatewayRefusalName(decision.refusal), "): ", decision.reason);
    pending->Refuse(proxy::RefusalReason::kGatewayRoute, decision.reason);
    return;
  }
  const policy::GatewayDestination& destination = *decision.destination;
  policy::OutboundDecision upstream =
      policy::DecideOutbound(*config.snapshot, config.workload, destination.address,
                             destination.port, context_.NextEndpointHint());
  for (const std::string& deciding : upstream.trace.deciding) {
    absl::StrAppend(&record.policy, record.policy.empty() ? "" : "; ", deciding);
  }
  record.reason = absl::StrCat(decision.reason, "; ", upstream.reason);
  record.destination_address = absl::StrCat(destination.host, ":", destination.port);
  if (upstream.destination_pod != nullptr) {
    record.destination_workload =
        absl::StrCat(upstream.destination_pod->meta.ns, "/", upstream.destination_pod->meta.name);
  }
  if (upstream.action == policy::OutboundAction::kRefuse ||
      upstream.action == policy::OutboundAction::kSameNode) {
    Log(LogLevel::kInfo, "gateway=", origin_->display_name(), " port=", pending->port, " sni=", sni,
        " identity=", identity_.ToString(), " peer=", record.destination_address,
        " refused: ", upstream.trace.ToString());
    pending->Refuse(proxy::RefusalOf(upstream.reason_code, policy::InboundTransport::kMtls),
                    upstream.reason);
    return;
  }
  proxy::UpstreamChoice choice = proxy::ChooseUpstream(context_, upstream, identity_, record);
  if (!choice.target.has_value()) {
    pending->Refuse(choice.refusal, choice.reason);
    return;
  }
  pending->decision = std::move(decision);
  if (pending->decision->action == policy::GatewayAction::kTerminate) {
    Terminate(worker, std::move(pending), *std::move(choice.target));
    return;
  }
  // PASSTHROUGH and TCP: routed; what follows is the destination's to judge.
  pending->ticket.reset();
  std::shared_ptr<io::Connection> client = io::Connection::Adopt(
      worker.loop(), pending->TakeFd(), proxy::AcceptedOptions(context_.options()));
  Carry(worker, pending->flow, std::move(client), *std::move(choice.target));
}

void GatewayServer::Terminate(proxy::Worker& worker, std::shared_ptr<Pending> pending,
                              proxy::UpstreamTarget target) {
  std::shared_ptr<const crypto::TlsContext> tls = contexts_.ForPort(pending->port);
  if (tls == nullptr) {
    metrics_.HandshakeFailed(crypto::GatewayHandshakeFailure::kNoServerForSni);
    pending->Refuse(proxy::RefusalReason::kClientHandshake,
                    absl::StrCat("no certificate of port ", pending->port,
                                 " has loaded (nodewardctl gateway certificates says why)"));
    return;
  }
  std::shared_ptr<io::Connection> wire = io::Connection::Adopt(
      worker.loop(), pending->TakeFd(), proxy::AcceptedOptions(context_.options()));
  io::TlsConnection::Options stream_options;
  stream_options.plaintext_chunk = 64 * 1024;
  std::shared_ptr<io::TlsConnection> stream = io::TlsConnection::Create(
      std::move(wire), crypto::TlsEngine::Server(std::move(tls)), stream_options);
  std::weak_ptr<io::TlsConnection> weak = stream;
  const absl::Duration left = pending->ticket->deadline() - absl::Now();
  const io::EventLoop::OpId timer =
      worker.loop().Timer(std::max(left, absl::ZeroDuration()), [weak](io::Completion& done) {
        if (done.result == -ECANCELED) return;
        std::shared_ptr<io::TlsConnection> stream = weak.lock();
        if (stream != nullptr && !stream->established()) {
          stream->Reset(absl::DeadlineExceededError("TLS handshake not finished in time"));
        }
      });
  stream->Handshake([this, &worker, pending, stream, timer,
                     target = std::move(target)](const absl::Status& status) mutable {
    worker.loop().Cancel(timer);
    pending->ticket.reset();
    crypto::GatewayHandshake handshake = crypto::InspectGatewayHandshake(stream->engine());
    proxy::AccessRecord& record = pending->flow->record();
    if (!status.ok()) {
      std::string why;
      if (status.code() == absl::StatusCode::kDeadlineExceeded) {
        context_.metrics().HandshakeDropped("timeout");
        why = absl::StrCat("client TLS handshake not finished within ",
                           absl::FormatDuration(context_.handshakes().options().timeout));
      } else {
        metrics_.HandshakeFailed(handshake.failure);
        why = absl::StrCat("client TLS handshake failed (",
                           crypto::GatewayHandshakeFailureName(handshake.failure),
                           "): ", status.message());
      }
      Log(LogLevel::kInfo, "gateway=", origin_->display_name(), " port=", pending->port,
          " sni=", handshake.sni.value_or("(none)"), " client=", pending->client.ToString(),
          " refused: ", why);
      pending->Refuse(proxy::RefusalReason::kClientHandshake, why);
      return;
    }
    absl::StrAppend(&record.reason, "; client ", handshake.version);
    if (handshake.client_certificate.has_value()) {
      absl::StrAppend(&record.reason, " with certificate ",
                      handshake.client_certificate->info.subject);
    }
    Carry(worker, pending->flow, std::move(stream), std::move(target));
  });
}

void GatewayServer::Carry(proxy::Worker& worker, std::shared_ptr<proxy::Flow> flow,
                          std::shared_ptr<io::Stream> client, proxy::UpstreamTarget target) {
  const bool hbone = target.kind == proxy::UpstreamTarget::Kind::kHbone;
  upstreams_.Open(worker, origin_, std::move(target),
                  absl::Now() + context_.options().credentials_wait,
                  proxy::RelayOnceOpen(std::move(flow), std::move(client), hbone));
}

std::string GatewayServer::RenderMetrics() {
  std::string out;
  context_.metrics().Render(out);
  metrics_.Render(out);
  proxy::AppendMetricHeader(out, "nodeward_handshakes_pending", "gauge",
                            "Clients in their ClientHello or TLS handshake now.");
  absl::StrAppend(&out, "nodeward_handshakes_pending ", context_.handshakes().pending(), "\n");
  proxy::AppendMetricHeader(out, "nodeward_live_connections", "gauge",
                            "Client connections being carried or decided now.");
  absl::StrAppend(&out, "nodeward_live_connections ", context_.live(), "\n");
  proxy::AppendMetricHeader(out, "nodeward_gateway_certificate_expiry_timestamp_seconds", "gauge",
                            "When each served SNI's certificate expires (Unix time).");
  for (const SniCertificate& served : contexts_.Certificates()) {
    absl::StrAppend(
        &out, "nodeward_gateway_certificate_expiry_timestamp_seconds",
        proxy::PrometheusLabels(
            {{"port", absl::StrCat(served.port)}, {"sni", served.sni}, {"server", served.server}}),
        " ", absl::ToUnixSeconds(served.certificate.info.not_after), "\n");
  }
  return out;
}

std::size_t GatewayServer::Drain(absl::Duration grace) {
  context_.StartDraining();
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->poster->Post([this, i] { Reconcile(i, {}); });
  }
  const absl::Time deadline = absl::Now() + grace;
  while (context_.live() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  const std::size_t left = context_.live();
  if (left > 0) proxy::CutWorkers(workers_, absl::DeadlineExceededError("drain grace over"));
  return left;
}

}  // namespace nodeward::gateway
