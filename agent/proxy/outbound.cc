#include "agent/proxy/outbound.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "policy/decisions.h"

namespace nodeward::proxy {

void Outbound::Handle(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd,
                      const SocketAddress& destination, const SocketAddress& client,
                      LiveSlot slot) {
  std::shared_ptr<io::Connection> app =
      io::Connection::Adopt(worker.loop(), fd, AcceptedOptions(context_.options()));
  std::shared_ptr<Flow> flow = context_.NewFlow(worker, Direction::kOutbound, std::move(slot));
  AccessRecord& record = flow->record();
  record.source_workload = pod->display_name();
  record.source_address = client.ToString();
  record.destination_address = destination.ToString();
  auto refuse = [&](RefusalReason reason, const std::string& why) {
    app->Reset(absl::PermissionDeniedError(why));
    flow->Refuse(reason, why);
  };

  if (context_.options().passthrough) {
    record.mode = Mode::kPlaintext;
    Carry(worker, pod, flow, app, {.kind = UpstreamTarget::Kind::kTcp, .address = destination});
    return;
  }
  absl::StatusOr<SpiffeId> source = context_.IdentityOf(*pod);
  if (!source.ok()) {
    refuse(RefusalReason::kIdentity, absl::StrCat("source identity: ", source.status().message()));
    return;
  }
  record.source_principal = source->ToString();
  std::shared_ptr<const policy::Snapshot> snapshot = context_.config()->Current();
  if (snapshot == nullptr) {
    refuse(RefusalReason::kNoConfiguration, "no configuration loaded yet");
    return;
  }
  const policy::Pod source_pod = PolicyPodFor(*snapshot, pod->metadata());
  policy::OutboundDecision decision = policy::DecideOutboundOnNode(
      *snapshot, source_pod, destination.ip.Unmapped(), destination.port,
      context_.NextEndpointHint(), [this](const IpAddress& ip) { return context_.ServesPod(ip); });
  record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  record.reason = decision.reason;
  if (decision.destination_pod != nullptr) {
    record.destination_workload =
        absl::StrCat(decision.destination_pod->meta.ns, "/", decision.destination_pod->meta.name);
  }
  switch (decision.action) {
    case policy::OutboundAction::kRefuse:
      Log(LogLevel::kInfo, "pod=", pod->display_name(), " identity=", source->ToString(),
          " peer=", destination.ToString(), " refused: ", decision.trace.ToString());
      // Refused by a same-node destination's inbound policy: its outcome in this one line.
      if (decision.same_node_inbound.has_value())
        RecordInbound(*decision.same_node_inbound, record);
      refuse(RefusalOf(decision.reason_code, policy::InboundTransport::kMtls), decision.reason);
      return;

    case policy::OutboundAction::kPlaintext:
    case policy::OutboundAction::kTlsOrigination:
    case policy::OutboundAction::kHbone: {
      UpstreamChoice choice = ChooseUpstream(context_, decision, *source, record);
      if (!choice.target.has_value()) {
        refuse(choice.refusal, choice.reason);
        return;
      }
      Carry(worker, pod, flow, app, *std::move(choice.target));
      return;
    }

    case policy::OutboundAction::kSameNode: {
      absl::StatusOr<SocketAddress> target = DecidedAddress(decision);
      if (!target.ok()) {
        refuse(RefusalReason::kInvalidDestination,
               absl::StrCat("destination: ", target.status().message()));
        return;
      }
      // Both ends are pods of this agent: it has authenticated both, so the bytes stay on the
      // node; the destination's inbound policy allowed it (in the decision).
      std::shared_ptr<const capture::CapturedPod> local = context_.LocalPodByIp(decision.address);
      if (local == nullptr) {
        refuse(RefusalReason::kNotInMesh,
               absl::StrCat("destination ", decision.address.ToString(), " left this node"));
        return;
      }
      record.mode = Mode::kSameNode;
      record.mutual_tls = true;
      record.destination_principal = decision.expected_peer_identity;
      // The destination's AuthorizationPolicy outcome belongs in this one line too.
      AccessRecord inbound_record;
      RecordInbound(*decision.same_node_inbound, inbound_record);
      record.authorization = inbound_record.authorization;
      record.audited_by = inbound_record.audited_by;
      if (IsAgentPort(target->port)) {
        refuse(RefusalReason::kAgentPort,
               absl::StrCat("port ", target->port, " is the agent's own"));
        return;
      }
      // The source pod's address the destination's policy decided about is the one its
      // application should see (the agent sees a same-node connection come from loopback).
      std::optional<SocketAddress> from;
      if (const std::optional<IpAddress>& ip = decision.same_node_connection->source_ip;
          ip.has_value()) {
        from = SocketAddress{*ip, 0, 0};
      }
      flow->SetAdmission({local, *decision.same_node_connection});
      Carry(worker, pod, flow, app,
            {.kind = UpstreamTarget::Kind::kLocalPod,
             .address = *target,
             .local_pod = local,
             .client = from});
      return;
    }
  }
}

void Outbound::Carry(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                     std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
                     UpstreamTarget target) {
  if (target.kind == UpstreamTarget::Kind::kLocalPod) {
    flow->record().delivered_from = DeliveredFrom(*target.local_pod, target.address, target.client);
  }
  const absl::Time deadline = absl::Now() + context_.options().credentials_wait;
  const bool hbone = target.kind == UpstreamTarget::Kind::kHbone;
  upstreams_.Open(worker, std::move(pod), std::move(target), deadline,
                  RelayOnceOpen(std::move(flow), std::move(app), /*destination_may_refuse=*/hbone));
}

}  // namespace nodeward::proxy
