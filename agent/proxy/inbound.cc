#include "agent/proxy/inbound.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bpf/nodeward_maps.h"
#include "common/log.h"
#include "policy/decisions.h"

namespace nodeward::proxy {
namespace {

std::string AgentPortReason(std::uint16_t port) {
  return absl::StrCat("port ", port, " is the agent's own and never a delivery target");
}

}  // namespace

void Inbound::HandlePlaintext(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                              int fd, std::uint16_t port, LiveSlot slot) {
  std::shared_ptr<io::Connection> app =
      io::Connection::Adopt(worker.loop(), fd, AcceptedOptions(context_.options()));
  std::shared_ptr<Flow> flow = context_.NewFlow(worker, Direction::kInbound, std::move(slot));
  AccessRecord& record = flow->record();
  record.mode = Mode::kPlaintext;
  record.destination_workload = pod->display_name();
  if (auto identity = context_.IdentityOf(*pod); identity.ok()) {
    record.destination_principal = identity->ToString();
  }
  auto refuse = [&](RefusalReason reason, const std::string& why) {
    app->Reset(absl::PermissionDeniedError(why));
    flow->Refuse(reason, why);
  };
  absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(fd);
  if (peer.ok()) record.source_address = peer->ToString();
  // The address the client dialled: the only one delivery may use, so an application
  // listening on loopback only stays private.
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  if (!local.ok()) {
    refuse(RefusalReason::kBadRequest,
           absl::StrCat("original destination: ", local.status().message()));
    return;
  }
  record.destination_address = local->ToString();
  if (IsAgentPort(port)) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(), " peer=", record.source_address,
        " plaintext to the agent's own port refused");
    refuse(RefusalReason::kAgentPort, AgentPortReason(port));
    return;
  }
  if (!context_.options().passthrough) {
    std::shared_ptr<const policy::Snapshot> snapshot = context_.config()->Current();
    if (snapshot == nullptr) {
      refuse(RefusalReason::kNoConfiguration, "no configuration loaded yet");
      return;
    }
    policy::InboundConnection connection;
    connection.transport = policy::InboundTransport::kPlaintext;
    if (peer.ok()) connection.source_ip = peer->ip.Unmapped();
    connection.destination_ip = local->ip.Unmapped();
    connection.port = port;
    policy::InboundDecision decision =
        policy::DecideInbound(*snapshot, PolicyPodFor(*snapshot, pod->metadata()), connection);
    RecordInbound(decision, record);
    if (!decision.allow) {
      Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", record.source_address,
          " plaintext refused: ", decision.trace.ToString());
      refuse(RefusalOf(decision.reason_code, connection.transport), decision.reason);
      return;
    }
    if (decision.audit) {
      Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", record.source_address,
          " audited by ", record.audited_by);
    }
    flow->SetAdmission({pod, std::move(connection)});
  }
  const std::optional<SocketAddress> client =
      peer.ok() ? std::optional<SocketAddress>(*peer) : std::nullopt;
  record.delivered_from = DeliveredFrom(*pod, *local, client);
  upstreams_.Deliver(worker, *pod, *local, client,
                     [flow, app](absl::StatusOr<std::shared_ptr<io::Stream>> delivered) {
                       if (!delivered.ok()) {
                         app->Reset(delivered.status());
                         flow->Finish(Result::kError, delivered.status().message());
                         return;
                       }
                       RelayFlow(flow, app, *std::move(delivered));
                     });
}

void Inbound::HandleTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                           int fd) {
  std::shared_ptr<io::Connection> wire =
      io::Connection::Adopt(worker.loop(), fd, AcceptedOptions(context_.options()));
  if (context_.options().passthrough) {
    // No certificates in passthrough: what arrives on 15008 is plaintext to the agent's port.
    wire->Reset(absl::PermissionDeniedError(AgentPortReason(NW_PORT_TUNNEL)));
    return;
  }
  absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(fd);
  if (!peer.ok()) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(),
        " tunnel refused: ", peer.status().ToString());
    wire->Reset(peer.status());
    return;
  }
  // Admitted only within the bounds on unfinished handshakes, so clients that connect and
  // never finish cannot hold the agent's memory or descriptors.
  const absl::Time now = absl::Now();
  HandshakeBudget::Refusal why = HandshakeBudget::Refusal::kAgentLimit;
  std::optional<HandshakeBudget::Ticket> ticket =
      context_.handshakes().TryAdmit(peer->ip.Unmapped(), now, &why);
  if (!ticket.has_value()) {
    context_.metrics().HandshakeDropped(HandshakeBudget::RefusalName(why));
    if (context_.MayLogHandshakeDrop(now)) {
      Log(LogLevel::kWarning, "pod=", pod->display_name(), " peer=", peer->ToString(),
          " tunnel refused: too many unfinished handshakes (", HandshakeBudget::RefusalName(why),
          ", ", context_.handshakes().pending(),
          " pending); further ones are counted in nodeward_handshakes_dropped_total");
    }
    wire->Reset(absl::ResourceExhaustedError("too many unfinished handshakes"));
    return;
  }
  auto pending = std::make_shared<std::optional<HandshakeBudget::Ticket>>(*std::move(ticket));
  absl::StatusOr<SpiffeId> identity = context_.IdentityOf(*pod);
  if (!identity.ok()) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(),
        " tunnel refused: ", identity.status().ToString());
    wire->Reset(identity.status());
    return;
  }
  WithCredentials(context_, worker, *identity, /*server=*/true,
                  absl::Now() + context_.options().credentials_wait,
                  [this, &worker, pod, wire, peer = *peer,
                   pending](absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context) {
                    if (!context.ok()) {
                      Log(LogLevel::kWarning, "pod=", pod->display_name(),
                          " tunnel refused: ", context.status().ToString());
                      wire->Reset(context.status());
                      return;
                    }
                    ServeTunnel(worker, pod, wire, peer, *std::move(context), pending);
                  });
}

void Inbound::ServeTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                          std::shared_ptr<io::Connection> wire, const SocketAddress& peer,
                          std::shared_ptr<const crypto::TlsContext> context,
                          std::shared_ptr<std::optional<HandshakeBudget::Ticket>> pending) {
  auto holder = std::make_shared<std::weak_ptr<HboneTunnel>>();
  absl::StatusOr<std::shared_ptr<HboneTunnel>> tunnel = HboneTunnel::Start(
      HboneTunnel::Role::kServer, wire, crypto::TlsEngine::Server(std::move(context)),
      context_.options().tunnel,
      [this, &worker, pod, holder, peer, pending](hbone::StreamId stream,
                                                  const std::string& authority) {
        // A CONNECT came over it: the handshake is long done.
        pending->reset();
        AnswerConnect(worker, pod, *holder, peer, stream, authority);
      },
      [pod, pending](const absl::Status& status) {
        pending->reset();
        if (!status.ok() && !absl::IsUnavailable(status)) {
          Log(LogLevel::kInfo, "pod=", pod->display_name(), " tunnel ended: ", status.ToString());
        }
      });
  if (!tunnel.ok()) {
    Log(LogLevel::kWarning, "pod=", pod->display_name(), " tunnel: ", tunnel.status().ToString());
    return;
  }
  *holder = *tunnel;
  if (pending->has_value()) {
    // Only a weak hold: a tunnel that closes sooner gives its place back at once.
    std::weak_ptr<std::optional<HandshakeBudget::Ticket>> weak_pending = pending;
    const absl::Duration left = (*pending)->deadline() - absl::Now();
    worker.loop().Timer(
        left, [this, pod, peer, weak_tunnel = *holder, weak_pending](io::Completion&) {
          std::shared_ptr<std::optional<HandshakeBudget::Ticket>> still = weak_pending.lock();
          std::shared_ptr<HboneTunnel> tunnel = weak_tunnel.lock();
          if (still == nullptr || !still->has_value() || tunnel == nullptr) return;
          still->reset();
          if (tunnel->established() || tunnel->closed()) return;
          context_.metrics().HandshakeDropped("timeout");
          const std::string why =
              absl::StrCat("TLS handshake not finished within ",
                           absl::FormatDuration(context_.handshakes().options().timeout));
          if (context_.MayLogHandshakeDrop(absl::Now())) {
            Log(LogLevel::kWarning, "pod=", pod->display_name(), " peer=", peer.ToString(),
                " tunnel closed: ", why);
          }
          tunnel->Close(absl::DeadlineExceededError(why));
        });
  }
  absl::StatusOr<SpiffeId> identity = context_.IdentityOf(*pod);
  (*tunnel)->set_description(
      {pod->display_name(), identity.ok() ? identity->ToString() : "", peer.ToString()});
  std::erase_if(worker.server_tunnels,
                [](const std::weak_ptr<HboneTunnel>& t) { return t.expired(); });
  worker.server_tunnels.push_back(*tunnel);
}

void Inbound::AnswerConnect(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                            std::weak_ptr<HboneTunnel> weak_tunnel,
                            const SocketAddress& tunnel_peer, hbone::StreamId stream,
                            const std::string& authority) {
  std::shared_ptr<HboneTunnel> tunnel = weak_tunnel.lock();
  if (tunnel == nullptr) return;
  if (context_.draining()) {
    tunnel->RefuseStream(stream, 503, "agent is draining").IgnoreError();
    return;
  }
  std::shared_ptr<Flow> flow =
      context_.NewFlow(worker, Direction::kInbound, context_.CountedSlot());
  AccessRecord& record = flow->record();
  record.mode = Mode::kHboneMtls;
  record.mutual_tls = true;
  record.destination_workload = pod->display_name();
  record.destination_address = authority;
  if (auto identity = context_.IdentityOf(*pod); identity.ok()) {
    record.destination_principal = identity->ToString();
  }
  const std::optional<SpiffeId>& peer = tunnel->peer_identity();
  record.source_principal = peer.has_value() ? peer->ToString() : "";
  record.source_address = tunnel_peer.ToString();
  auto refuse = [&](RefusalReason reason, const std::string& why) {
    Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", record.source_principal,
        " CONNECT ", authority, " refused: ", why);
    tunnel->RefuseStream(stream, HttpStatusOf(reason), why).IgnoreError();
    flow->Refuse(reason, why);
  };
  absl::StatusOr<std::pair<std::string, std::uint16_t>> target = hbone::ParseAuthority(authority);
  if (!target.ok()) {
    refuse(RefusalReason::kBadRequest, std::string(target.status().message()));
    return;
  }
  absl::StatusOr<IpAddress> target_ip = IpAddress::Parse(target->first);
  const std::vector<IpAddress>& ips = pod->metadata().ips;
  if (!target_ip.ok() || std::find(ips.begin(), ips.end(), *target_ip) == ips.end()) {
    refuse(RefusalReason::kNotAPodAddress,
           absl::StrCat("CONNECT target ", target->first, " is not an address of pod ",
                        pod->display_name()));
    return;
  }
  if (IsAgentPort(target->second)) {
    refuse(RefusalReason::kAgentPort, AgentPortReason(target->second));
    return;
  }
  const SocketAddress application{*target_ip, target->second, 0};
  std::shared_ptr<const policy::Snapshot> snapshot = context_.config()->Current();
  if (snapshot == nullptr) {
    refuse(RefusalReason::kNoConfiguration, "no configuration loaded yet");
    return;
  }
  // The verified identity is the source: the pod at the tunnel's address names the workload
  // only when it runs as that identity (a stolen certificate is logged as its own identity,
  // not as the pod it was used from).
  const IpAddress source_ip = tunnel_peer.ip.Unmapped();
  if (const policy::Pod* source = snapshot->FindPodByIp(source_ip)) {
    absl::StatusOr<SpiffeId> source_identity = policy::WorkloadIdentity(*snapshot, *source);
    if (peer.has_value() && source_identity.ok() && *source_identity == *peer) {
      record.source_workload = absl::StrCat(source->meta.ns, "/", source->meta.name);
    } else {
      Log(LogLevel::kWarning, "pod=", pod->display_name(), " peer=", record.source_principal,
          " tunnel from ", tunnel_peer.ToString(), ", the address of pod ", source->meta.ns, "/",
          source->meta.name, " which runs as another identity");
    }
  }
  policy::InboundConnection connection;
  connection.transport = policy::InboundTransport::kMtls;
  connection.peer_identity = peer;
  connection.source_ip = source_ip;
  connection.destination_ip = *target_ip;
  connection.port = target->second;
  policy::InboundDecision decision =
      policy::DecideInbound(*snapshot, PolicyPodFor(*snapshot, pod->metadata()), connection);
  RecordInbound(decision, record);
  if (!decision.allow) {
    refuse(RefusalOf(decision.reason_code, connection.transport), decision.reason);
    return;
  }
  if (decision.audit) {
    Log(LogLevel::kInfo, "pod=", pod->display_name(), " peer=", record.source_principal,
        " audited by ", record.audited_by);
  }
  flow->SetAdmission({pod, std::move(connection)});
  // The tunnel was dialled from inside the client pod: its peer is the client pod's address.
  record.delivered_from = DeliveredFrom(*pod, application, tunnel_peer);
  upstreams_.Deliver(worker, *pod, application, tunnel_peer,
                     [weak_tunnel, stream, flow](absl::StatusOr<std::shared_ptr<io::Stream>> app) {
                       std::shared_ptr<HboneTunnel> tunnel = weak_tunnel.lock();
                       if (!app.ok() || tunnel == nullptr) {
                         const std::string reason =
                             app.ok() ? "tunnel closed" : std::string(app.status().message());
                         if (tunnel != nullptr)
                           tunnel->RefuseStream(stream, 503, reason).IgnoreError();
                         if (app.ok()) (*app)->Close();
                         flow->Finish(Result::kError, reason);
                         return;
                       }
                       absl::StatusOr<std::shared_ptr<HboneStream>> accepted =
                           tunnel->AcceptStream(stream);
                       if (!accepted.ok()) {
                         (*app)->Close();
                         flow->Finish(Result::kError, accepted.status().message());
                         return;
                       }
                       RelayFlow(flow, *std::move(accepted), *std::move(app));
                     });
}

}  // namespace nodeward::proxy
