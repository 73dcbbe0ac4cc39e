#include "policy/decisions.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {
namespace {

constexpr absl::string_view kNodewardModeLabel = "nodeward.io/dataplane-mode";
constexpr absl::string_view kIstioModeLabel = "istio.io/dataplane-mode";

// Looked up on every decision: the keys are made once, the value is not copied.
const std::string& ModeKey(absl::string_view key) {
  static const auto* nodeward = new std::string(kNodewardModeLabel);
  static const auto* istio = new std::string(kIstioModeLabel);
  return key == kNodewardModeLabel ? *nodeward : *istio;
}

absl::string_view LabelValue(const Labels& labels, absl::string_view key) {
  auto it = labels.find(ModeKey(key));
  return it == labels.end() ? absl::string_view() : absl::string_view(it->second);
}

}  // namespace

absl::string_view DecisionReasonName(DecisionReason reason) {
  switch (reason) {
    case DecisionReason::kPeerAuthentication:
      return "peer_authentication";
    case DecisionReason::kAuthorization:
      return "authorization";
    case DecisionReason::kDestinationRule:
      return "destination_rule";
    case DecisionReason::kAutoMtls:
      return "auto_mtls";
    case DecisionReason::kNotInMesh:
      return "not_in_mesh";
    case DecisionReason::kNoServicePort:
      return "no_service_port";
    case DecisionReason::kNoReadyEndpoint:
      return "no_ready_endpoint";
  }
  return "unknown";
}

Enrollment ResolveEnrollment(const Snapshot& snapshot, const Pod& pod) {
  if (pod.host_network) {
    return {false, absl::StrCat(Describe(pod), " uses the host network and cannot be enrolled")};
  }
  for (absl::string_view key : {kNodewardModeLabel, kIstioModeLabel}) {
    if (LabelValue(pod.meta.labels, key) == "none") {
      return {false, absl::StrCat(Describe(pod), " opts out with label ", key, "=none")};
    }
  }
  const Namespace* ns = snapshot.FindNamespace(pod.meta.ns);
  if (ns == nullptr) {
    return {false, absl::StrCat("namespace ", pod.meta.ns, " of ", Describe(pod), " is unknown")};
  }
  if (LabelValue(ns->meta.labels, kNodewardModeLabel) == "enabled") {
    return {true, absl::StrCat("namespace ", pod.meta.ns, " has ", kNodewardModeLabel, "=enabled")};
  }
  if (LabelValue(ns->meta.labels, kIstioModeLabel) == "ambient") {
    return {true, absl::StrCat("namespace ", pod.meta.ns, " has ", kIstioModeLabel, "=ambient")};
  }
  return {false, absl::StrCat("namespace ", pod.meta.ns, " is not labelled ", kNodewardModeLabel,
                              "=enabled or ", kIstioModeLabel, "=ambient")};
}

absl::StatusOr<SpiffeId> WorkloadIdentity(const Snapshot& snapshot, const Pod& pod) {
  return SpiffeId::Make(snapshot.options().trust_domain, pod.meta.ns, pod.service_account);
}

std::string WorkloadSpiffeId(const Snapshot& snapshot, const Pod& pod) {
  return absl::StrCat("spiffe://", snapshot.options().trust_domain, "/ns/", pod.meta.ns, "/sa/",
                      pod.service_account);
}

absl::string_view OutboundActionName(OutboundAction action) {
  switch (action) {
    case OutboundAction::kHbone:
      return "HBONE";
    case OutboundAction::kSameNode:
      return "SAME_NODE";
    case OutboundAction::kTlsOrigination:
      return "TLS_ORIGINATION";
    case OutboundAction::kPlaintext:
      return "PLAINTEXT";
    case OutboundAction::kRefuse:
      return "REFUSE";
  }
  return "UNKNOWN";
}

namespace {

// Takes the decision by reference and moves it out only here: the reason is often built from
// the decision's own fields, and argument evaluation order is unspecified.
OutboundDecision Finish(OutboundDecision& decision, OutboundAction action, DecisionReason code,
                        std::string reason) {
  decision.action = action;
  decision.reason_code = code;
  decision.reason = std::move(reason);
  decision.trace.steps.push_back(
      absl::StrCat("decision: ", OutboundActionName(action), ": ", decision.reason));
  return std::move(decision);
}

// The server identities an HBONE connection accepts: the destination's own, or the
// subjectAltNames of an ISTIO_MUTUAL rule, which Istio verifies instead when given.
void ExpectIdentities(const Snapshot& snapshot, const Pod& destination,
                      const std::optional<ClientTlsSettings>& tls, absl::string_view rule,
                      OutboundDecision& decision) {
  if (tls.has_value() && !tls->subject_alt_names.empty()) {
    decision.expected_peer_identities = tls->subject_alt_names;
    decision.trace.steps.push_back(absl::StrCat(
        rule, " subjectAltNames replace the destination's identity ",
        WorkloadSpiffeId(snapshot, destination), " as the names the server must present"));
    for (const std::string& name : tls->subject_alt_names) {
      if (!absl::StartsWith(name, "spiffe://")) {
        decision.trace.warnings.push_back(absl::StrCat(
            rule, " subjectAltName \"", name,
            "\" is not a SPIFFE ID: mesh certificates carry only their SPIFFE ID, so no mesh "
            "server can match it"));
      }
    }
  } else {
    decision.expected_peer_identities = {WorkloadSpiffeId(snapshot, destination)};
  }
  decision.expected_peer_identity = decision.expected_peer_identities.front();
}

}  // namespace

OutboundDecision DecideOutbound(const Snapshot& snapshot, const Pod& source,
                                const IpAddress& destination_ip, uint32_t destination_port,
                                uint64_t endpoint_hint) {
  OutboundDecision decision;
  Trace& trace = decision.trace;
  const std::string ip = destination_ip.ToString();
  decision.address = destination_ip;
  decision.port = destination_port;
  trace.steps.push_back(absl::StrCat("source ", Describe(source), " (",
                                     WorkloadSpiffeId(snapshot, source), ") connects to ", ip, ":",
                                     destination_port));

  // Resolve the destination: a service address goes to one of its ready endpoints.
  std::string host;
  uint32_t service_port = 0;
  if (const Service* service = snapshot.FindServiceByClusterIp(destination_ip);
      service != nullptr) {
    decision.service = service;
    host = snapshot.ServiceHost(*service);
    const ServicePort* port = nullptr;
    for (const ServicePort& candidate : service->ports) {
      if (candidate.port == destination_port && candidate.protocol == "TCP") port = &candidate;
    }
    if (port == nullptr) {
      return Finish(decision, OutboundAction::kRefuse, DecisionReason::kNoServicePort,
                    absl::StrCat("service ", service->meta.ns, "/", service->meta.name,
                                 " has no TCP port ", destination_port));
    }
    service_port = port->port;
    const std::vector<EndpointTarget>& endpoints = snapshot.ServiceEndpoints(*service, port->port);
    if (endpoints.empty()) {
      return Finish(decision, OutboundAction::kRefuse, DecisionReason::kNoReadyEndpoint,
                    absl::StrCat("service ", service->meta.ns, "/", service->meta.name, " port ",
                                 port->port, " has no ready endpoint"));
    }
    const EndpointTarget& target = endpoints[endpoint_hint % endpoints.size()];
    decision.address = target.ip;
    decision.port = target.port;
    decision.destination_pod = target.pod;
    std::string target_port = port->target_port_name.empty()
                                  ? absl::StrCat(port->target_port_number)
                                  : absl::StrCat("\"", port->target_port_name, "\"");
    trace.steps.push_back(absl::StrCat(
        ip, " is service ", host, "; port ", port->port, " (targetPort ", target_port, ") -> ",
        target.pod != nullptr ? Describe(*target.pod) : std::string("endpoint"), " at ",
        target.ip.ToString(), ":", target.port, " (", endpoints.size(), " ready endpoint",
        endpoints.size() == 1 ? "" : "s", ")"));
  } else if (const Pod* pod = snapshot.FindPodByIp(destination_ip); pod != nullptr) {
    decision.destination_pod = pod;
    trace.steps.push_back(absl::StrCat(ip, " is ", Describe(*pod),
                                       "; addressed directly, no service host, so no "
                                       "DestinationRule applies"));
  } else {
    trace.steps.push_back(absl::StrCat(ip,
                                       " is neither a service nor a known pod: outside the "
                                       "mesh"));
  }

  // The destination side: is it in the mesh, and what does it require on that port?
  const Pod* pod = decision.destination_pod;
  bool in_mesh = false;
  std::string mesh_reason = "the destination is not a known pod";
  if (pod != nullptr) {
    Enrollment enrollment = ResolveEnrollment(snapshot, *pod);
    in_mesh = enrollment.enrolled;
    mesh_reason = enrollment.reason;
    trace.steps.push_back(absl::StrCat("destination ", in_mesh ? "is" : "is not",
                                       " in the mesh: ", enrollment.reason));
    if (in_mesh) {
      decision.destination_mtls = ResolveMtlsMode(snapshot, *pod, decision.port);
      AppendTrace(trace, decision.destination_mtls->trace, "destination PeerAuthentication: ");
    }
  }
  const MtlsMode server_mode =
      decision.destination_mtls.has_value() ? decision.destination_mtls->mode : MtlsMode::kUnset;

  AppliedDestinationRule applied;
  if (!host.empty()) {
    applied =
        ResolveDestinationRule(snapshot, source, host, decision.service->meta.ns, service_port);
    AppendTrace(trace, applied.trace, "");
  }

  if (applied.tls.has_value()) {
    const ClientTlsSettings& tls = *applied.tls;
    const std::string rule = Describe(*applied.traffic_policy);
    switch (tls.mode) {
      case TlsMode::kIstioMutual:
        if (!in_mesh) {
          return Finish(decision, OutboundAction::kRefuse, DecisionReason::kDestinationRule,
                        absl::StrCat(rule, " requires ISTIO_MUTUAL but ", host,
                                     " is not in the mesh (", mesh_reason, ")"));
        }
        ExpectIdentities(snapshot, *pod, tls, rule, decision);
        if (server_mode == MtlsMode::kDisable) {
          trace.warnings.push_back(absl::StrCat(rule, " sends mesh mTLS but ", Describe(*pod),
                                                " has PeerAuthentication DISABLE on "
                                                "port ",
                                                decision.port, ": the server will refuse it"));
        }
        return Finish(decision, OutboundAction::kHbone, DecisionReason::kDestinationRule,
                      absl::StrCat("ISTIO_MUTUAL from ", rule, "; expecting ",
                                   absl::StrJoin(decision.expected_peer_identities, " or ")));
      case TlsMode::kSimple:
      case TlsMode::kMutual:
        if (!tls.credential_name.empty()) {
          // The data plane reads certificates from files only; saying "TLS origination" here
          // while every connection then fails would make explain and the data plane disagree.
          return Finish(decision, OutboundAction::kRefuse, DecisionReason::kDestinationRule,
                        absl::StrCat(rule, " sets credentialName ", tls.credential_name,
                                     ": certificates from Kubernetes Secrets are not supported, "
                                     "give clientCertificate, privateKey and caCertificates "
                                     "files instead"));
        }
        decision.origination = tls;
        if (server_mode == MtlsMode::kStrict) {
          trace.warnings.push_back(
              absl::StrCat(rule, " originates ", TlsModeName(tls.mode), " TLS but ", Describe(*pod),
                           " is STRICT on port ", decision.port,
                           ": it accepts only mesh mTLS and will refuse this connection"));
        }
        return Finish(decision, OutboundAction::kTlsOrigination, DecisionReason::kDestinationRule,
                      absl::StrCat(TlsModeName(tls.mode), " TLS origination from ", rule));
      case TlsMode::kDisable:
        if (server_mode == MtlsMode::kStrict) {
          trace.warnings.push_back(
              absl::StrCat(rule, " disables TLS but ", Describe(*pod), " is STRICT on port ",
                           decision.port, ": the server will refuse this plaintext connection"));
        }
        return Finish(decision, OutboundAction::kPlaintext, DecisionReason::kDestinationRule,
                      absl::StrCat("TLS disabled by ", rule));
    }
  }

  // Auto mTLS: the destination's own policy decides.
  if (!in_mesh) {
    return Finish(decision, OutboundAction::kPlaintext, DecisionReason::kAutoMtls,
                  absl::StrCat("auto mTLS: destination outside the mesh (", mesh_reason, ")"));
  }
  if (server_mode == MtlsMode::kDisable) {
    return Finish(decision, OutboundAction::kPlaintext, DecisionReason::kAutoMtls,
                  absl::StrCat("auto mTLS: ", Describe(*pod),
                               " has PeerAuthentication DISABLE on "
                               "port ",
                               decision.port));
  }
  ExpectIdentities(snapshot, *pod, std::nullopt, "", decision);
  return Finish(
      decision, OutboundAction::kHbone, DecisionReason::kAutoMtls,
      absl::StrCat("auto mTLS: ", Describe(*pod), " is in the mesh and ", MtlsModeName(server_mode),
                   " on port ", decision.port, "; expecting ", decision.expected_peer_identity));
}

OutboundDecision DecideOutboundOnNode(const Snapshot& snapshot, const Pod& source,
                                      const IpAddress& destination_ip, uint32_t destination_port,
                                      uint64_t endpoint_hint, LocalPodQuery is_local) {
  OutboundDecision decision =
      DecideOutbound(snapshot, source, destination_ip, destination_port, endpoint_hint);
  if (decision.action != OutboundAction::kHbone || decision.destination_pod == nullptr ||
      !is_local(decision.address)) {
    return decision;
  }
  const Pod& destination = *decision.destination_pod;
  InboundConnection connection;
  connection.transport = InboundTransport::kMtls;
  // A source without a mesh identity matches no principal (its agent would have had no
  // certificate to present either).
  if (absl::StatusOr<SpiffeId> id = WorkloadIdentity(snapshot, source); id.ok()) {
    connection.peer_identity = *std::move(id);
  }
  // The source pod's address of the destination's family: what the application sees.
  for (const IpAddress& ip : source.ips) {
    if (ip.family == decision.address.family) {
      connection.source_ip = ip;
      break;
    }
  }
  connection.destination_ip = decision.address;
  connection.port = decision.port;
  InboundDecision inbound = DecideInbound(snapshot, destination, connection);
  decision.trace.steps.push_back(absl::StrCat(Describe(destination),
                                              " is served by this node's agent: carried on the "
                                              "node, its inbound policy decides: ",
                                              inbound.reason));
  for (const std::string& resource : inbound.trace.deciding) {
    std::vector<std::string>& deciding = decision.trace.deciding;
    if (std::find(deciding.begin(), deciding.end(), resource) == deciding.end()) {
      deciding.push_back(resource);
    }
  }
  const bool allow = inbound.allow;
  const DecisionReason code = inbound.reason_code;
  std::string reason =
      allow ? absl::StrCat("same node: ", decision.reason, "; ", inbound.reason) : inbound.reason;
  decision.same_node_inbound = std::move(inbound);
  decision.same_node_connection = std::move(connection);
  return Finish(decision, allow ? OutboundAction::kSameNode : OutboundAction::kRefuse,
                allow ? decision.reason_code : code, std::move(reason));
}

namespace {

InboundDecision FinishInbound(InboundDecision& decision, bool allow, DecisionReason code,
                              std::string reason) {
  decision.allow = allow;
  decision.reason_code = code;
  decision.reason = std::move(reason);
  decision.trace.steps.push_back(
      absl::StrCat("decision: ", allow ? "ALLOW: " : "REFUSE: ", decision.reason));
  return std::move(decision);
}

}  // namespace

InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination,
                              const InboundConnection& connection) {
  InboundDecision decision;
  Trace& trace = decision.trace;
  const bool mtls = connection.transport == InboundTransport::kMtls;
  trace.steps.push_back(absl::StrCat(
      mtls ? absl::StrCat("mesh mTLS connection from ", connection.peer_identity.has_value()
                                                            ? connection.peer_identity->ToString()
                                                            : std::string("(unknown peer)"))
           : std::string("plaintext connection"),
      connection.source_ip.has_value() ? absl::StrCat(" (", connection.source_ip->ToString(), ")")
                                       : "",
      " to ", Describe(destination), " port ", connection.port));
  Enrollment enrollment = ResolveEnrollment(snapshot, destination);
  if (!enrollment.enrolled) {
    return FinishInbound(decision, false, DecisionReason::kNotInMesh,
                         absl::StrCat("not in the mesh: ", enrollment.reason));
  }
  decision.mtls = ResolveMtlsMode(snapshot, destination, connection.port);
  AppendTrace(trace, decision.mtls.trace, "");
  bool admitted = true;
  std::string mode_reason;
  switch (decision.mtls.mode) {
    case MtlsMode::kStrict:
      admitted = mtls;
      mode_reason = mtls ? "STRICT accepts mesh mTLS" : "STRICT refuses plaintext";
      break;
    case MtlsMode::kDisable:
      admitted = !mtls;
      mode_reason =
          mtls ? "DISABLE: mesh mTLS is not terminated for this port" : "DISABLE accepts plaintext";
      break;
    case MtlsMode::kPermissive:
    case MtlsMode::kUnset:
      mode_reason = mtls ? "PERMISSIVE accepts mesh mTLS" : "PERMISSIVE accepts plaintext";
      break;
  }
  if (!admitted) {
    return FinishInbound(decision, false, DecisionReason::kPeerAuthentication,
                         std::move(mode_reason));
  }
  AuthorizationResult authorization = Authorize(snapshot, destination, connection);
  AppendTrace(trace, authorization.trace, "authorization: ");
  const bool allow = authorization.allow;
  const bool decided_by_policy = authorization.outcome != AuthorizationOutcome::kNoPolicy;
  std::string reason =
      decided_by_policy
          ? (allow ? absl::StrCat(mode_reason, "; ", authorization.reason) : authorization.reason)
          : std::move(mode_reason);
  decision.audit = !authorization.audit.empty();
  decision.authorization = std::move(authorization);
  return FinishInbound(
      decision, allow,
      decided_by_policy ? DecisionReason::kAuthorization : DecisionReason::kPeerAuthentication,
      std::move(reason));
}

InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination, uint32_t port,
                              InboundTransport transport, std::optional<SpiffeId> peer_identity) {
  InboundConnection connection;
  connection.transport = transport;
  connection.peer_identity = std::move(peer_identity);
  connection.port = port;
  return DecideInbound(snapshot, destination, connection);
}

}  // namespace nodeward::policy
