#include "policy/decisions.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {
namespace {

constexpr absl::string_view kNodewardModeLabel = "nodeward.io/dataplane-mode";
constexpr absl::string_view kIstioModeLabel = "istio.io/dataplane-mode";

std::string Describe(const PeerAuthentication& policy) {
  return DescribeObject("PeerAuthentication", policy.meta);
}
std::string Describe(const DestinationRule& rule) {
  return DescribeObject("DestinationRule", rule.meta);
}
std::string Describe(const Pod& pod) {
  return absl::StrCat("pod ", pod.meta.ns, "/", pod.meta.name);
}

std::string LabelValue(const Labels& labels, absl::string_view key) {
  auto it = labels.find(std::string(key));
  return it == labels.end() ? std::string() : it->second;
}

// Notes the policies that lost to the first (oldest) one of a level.
void NoteIgnored(const std::vector<const PeerAuthentication*>& candidates, absl::string_view level,
                 Trace& trace) {
  for (size_t i = 1; i < candidates.size(); ++i) {
    trace.warnings.push_back(absl::StrCat(Describe(*candidates[i]), " is ignored: ", level,
                                          " already has the older ", Describe(*candidates[0])));
  }
}

void NotePortLevelWithoutSelector(const PeerAuthentication& policy, Trace& trace) {
  if (!policy.port_level.empty()) {
    trace.warnings.push_back(absl::StrCat(Describe(policy),
                                          ": portLevelMtls is ignored because the policy has no "
                                          "selector (port-level modes need a workload selector)"));
  }
}

bool VisibleTo(const DestinationRule& rule, absl::string_view client_ns) {
  if (rule.export_to.empty()) return true;
  for (const std::string& target : rule.export_to) {
    if (target == "*" || target == client_ns) return true;
    if (target == "." && rule.meta.ns == client_ns) return true;
  }
  return false;
}

std::string ExportToText(const DestinationRule& rule) {
  return rule.export_to.empty() ? std::string("*") : absl::StrJoin(rule.export_to, ",");
}

std::string TlsSummary(const ClientTlsSettings& tls) {
  std::string text(TlsModeName(tls.mode));
  if (!tls.sni.empty()) absl::StrAppend(&text, " sni=", tls.sni);
  if (!tls.credential_name.empty()) absl::StrAppend(&text, " credentialName=", tls.credential_name);
  if (tls.insecure_skip_verify) absl::StrAppend(&text, " insecureSkipVerify");
  return text;
}

}  // namespace

std::string Trace::ToString() const {
  std::string text;
  for (const std::string& step : steps) absl::StrAppend(&text, "- ", step, "\n");
  for (const std::string& warning : warnings) absl::StrAppend(&text, "! ", warning, "\n");
  if (!deciding.empty())
    absl::StrAppend(&text, "decided by: ", absl::StrJoin(deciding, ", "), "\n");
  return text;
}

EffectiveMtls ResolveMtlsMode(const Snapshot& snapshot, const Pod& workload, uint32_t port) {
  EffectiveMtls result;
  Trace& trace = result.trace;
  const PeerAuthentication* mesh = nullptr;
  const PeerAuthentication* ns = nullptr;
  const PeerAuthentication* selected = nullptr;

  const auto& mesh_policies = snapshot.MeshPeerAuthentications();
  if (mesh_policies.empty()) {
    trace.steps.push_back(
        absl::StrCat("mesh-wide: no PeerAuthentication without a selector in "
                     "the root namespace ",
                     snapshot.options().root_namespace));
  } else {
    mesh = mesh_policies.front();
    result.levels.mesh = mesh->mode;
    trace.steps.push_back(
        absl::StrCat("mesh-wide: ", Describe(*mesh), " sets ", MtlsModeName(mesh->mode)));
    NoteIgnored(mesh_policies, "the mesh level", trace);
    NotePortLevelWithoutSelector(*mesh, trace);
  }

  if (workload.meta.ns == snapshot.options().root_namespace) {
    trace.steps.push_back(absl::StrCat("namespace: ", workload.meta.ns,
                                       " is the root namespace, its policies are mesh-wide"));
  } else {
    const auto& ns_policies = snapshot.NamespacePeerAuthentications(workload.meta.ns);
    if (ns_policies.empty()) {
      trace.steps.push_back(absl::StrCat("namespace: no PeerAuthentication without a selector in ",
                                         workload.meta.ns));
    } else {
      ns = ns_policies.front();
      result.levels.namespace_level = ns->mode;
      trace.steps.push_back(
          absl::StrCat("namespace: ", Describe(*ns), " sets ", MtlsModeName(ns->mode)));
      NoteIgnored(ns_policies, absl::StrCat("namespace ", workload.meta.ns), trace);
      NotePortLevelWithoutSelector(*ns, trace);
    }
  }

  std::vector<const PeerAuthentication*> workload_policies =
      snapshot.WorkloadPeerAuthentications(workload);
  if (workload_policies.empty()) {
    trace.steps.push_back(
        absl::StrCat("workload: no PeerAuthentication selects ", Describe(workload)));
  } else {
    selected = workload_policies.front();
    result.levels.workload = selected->mode;
    trace.steps.push_back(absl::StrCat("workload: ", Describe(*selected), " selects ",
                                       Describe(workload), " and sets ",
                                       MtlsModeName(selected->mode)));
    NoteIgnored(workload_policies, absl::StrCat("workload ", Describe(workload)), trace);
    auto entry = selected->port_level.find(port);
    if (entry != selected->port_level.end()) {
      result.levels.port = entry->second;
      trace.steps.push_back(absl::StrCat("port: ", Describe(*selected), " portLevelMtls[", port,
                                         "] sets ", MtlsModeName(entry->second)));
    } else if (!selected->port_level.empty()) {
      trace.steps.push_back(
          absl::StrCat("port: ", Describe(*selected), " has no portLevelMtls entry for ", port));
    }
  }

  // Most specific level that sets a mode wins; UNSET defers to the level above.
  struct Level {
    absl::string_view name;
    MtlsMode mode;
    const PeerAuthentication* policy;
  };
  const Level levels[] = {{"port", result.levels.port, selected},
                          {"workload", result.levels.workload, selected},
                          {"namespace", result.levels.namespace_level, ns},
                          {"mesh-wide", result.levels.mesh, mesh}};
  for (const Level& level : levels) {
    if (level.mode == MtlsMode::kUnset) continue;
    result.mode = level.mode;
    trace.deciding.push_back(Describe(*level.policy));
    trace.steps.push_back(absl::StrCat("effective mode on port ", port, ": ",
                                       MtlsModeName(level.mode), " (from the ", level.name,
                                       " level)"));
    return result;
  }
  result.mode = MtlsMode::kPermissive;
  trace.steps.push_back(absl::StrCat("effective mode on port ", port,
                                     ": PERMISSIVE (no level sets a mode, Istio's default)"));
  return result;
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

std::string WorkloadSpiffeId(const Snapshot& snapshot, const Pod& pod) {
  return absl::StrCat("spiffe://", snapshot.options().trust_domain, "/ns/", pod.meta.ns, "/sa/",
                      pod.service_account);
}

AppliedDestinationRule ResolveDestinationRule(const Snapshot& snapshot, absl::string_view client_ns,
                                              absl::string_view host, absl::string_view service_ns,
                                              uint32_t port) {
  AppliedDestinationRule result;
  Trace& trace = result.trace;
  std::vector<absl::string_view> order = {client_ns};
  for (absl::string_view ns : {service_ns, absl::string_view(snapshot.options().root_namespace)}) {
    bool seen = false;
    for (absl::string_view earlier : order) seen |= earlier == ns;
    if (!seen && !ns.empty()) order.push_back(ns);
  }
  for (absl::string_view ns : order) {
    for (const DestinationRule* rule : snapshot.MatchingDestinationRules(ns, host)) {
      if (!VisibleTo(*rule, client_ns)) {
        trace.steps.push_back(absl::StrCat(Describe(*rule), " (host ", rule->host,
                                           ") matches but is exported only to ",
                                           ExportToText(*rule), ", not to ", client_ns));
        continue;
      }
      result.rule = rule;
      break;
    }
    if (result.rule != nullptr) break;
  }
  if (result.rule == nullptr) {
    trace.steps.push_back(absl::StrCat("no DestinationRule for ", host, " is visible from ",
                                       client_ns, " (looked in ", absl::StrJoin(order, ", "), ")"));
    return result;
  }
  const DestinationRule& rule = *result.rule;
  trace.deciding.push_back(Describe(rule));
  trace.steps.push_back(absl::StrCat(Describe(rule), " (host ", rule.host, ") applies to ", host,
                                     " for clients in ", client_ns));
  for (const PortTrafficPolicy& port_policy : rule.port_level) {
    if (port_policy.port != port) continue;
    result.port_level = true;
    result.tls = port_policy.tls;
    if (port_policy.tls.has_value()) {
      trace.steps.push_back(absl::StrCat("portLevelSettings for port ", port, " sets tls mode ",
                                         TlsSummary(*port_policy.tls)));
    } else {
      // Istio: port-level settings replace the rule-level ones for that port, unset included.
      trace.steps.push_back(absl::StrCat("portLevelSettings for port ", port,
                                         " has no tls, which replaces the rule-level tls"));
    }
    return result;
  }
  result.tls = rule.tls;
  if (rule.tls.has_value()) {
    trace.steps.push_back(absl::StrCat("trafficPolicy.tls sets mode ", TlsSummary(*rule.tls)));
  } else {
    trace.steps.push_back("the rule has no tls settings");
  }
  return result;
}

absl::string_view OutboundActionName(OutboundAction action) {
  switch (action) {
    case OutboundAction::kHbone:
      return "HBONE";
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

void Append(Trace& into, const Trace& from, absl::string_view prefix) {
  for (const std::string& step : from.steps) into.steps.push_back(absl::StrCat(prefix, step));
  for (const std::string& warning : from.warnings) into.warnings.push_back(warning);
  for (const std::string& resource : from.deciding) into.deciding.push_back(resource);
}

OutboundDecision Finish(OutboundDecision decision, OutboundAction action, std::string reason) {
  decision.action = action;
  decision.reason = std::move(reason);
  decision.trace.steps.push_back(
      absl::StrCat("decision: ", OutboundActionName(action), ": ", decision.reason));
  return decision;
}

}  // namespace

OutboundDecision DecideOutbound(const Snapshot& snapshot, const Pod& source,
                                absl::string_view destination_ip, uint32_t destination_port,
                                uint64_t endpoint_hint) {
  OutboundDecision decision;
  Trace& trace = decision.trace;
  absl::StatusOr<std::string> ip = NormalizeIp(destination_ip);
  if (!ip.ok()) {
    return Finish(std::move(decision), OutboundAction::kRefuse,
                  absl::StrCat("destination ", ip.status().message()));
  }
  decision.address = *ip;
  decision.port = destination_port;
  trace.steps.push_back(absl::StrCat("source ", Describe(source), " (",
                                     WorkloadSpiffeId(snapshot, source), ") connects to ", *ip, ":",
                                     destination_port));

  // Resolve the destination: a service address goes to one of its ready endpoints.
  std::string host;
  uint32_t service_port = 0;
  if (const Service* service = snapshot.FindServiceByClusterIp(*ip); service != nullptr) {
    decision.service = service;
    host = snapshot.ServiceHost(*service);
    const ServicePort* port = nullptr;
    for (const ServicePort& candidate : service->ports) {
      if (candidate.port == destination_port && candidate.protocol == "TCP") port = &candidate;
    }
    if (port == nullptr) {
      return Finish(std::move(decision), OutboundAction::kRefuse,
                    absl::StrCat("service ", service->meta.ns, "/", service->meta.name,
                                 " has no TCP port ", destination_port));
    }
    service_port = port->port;
    const std::vector<EndpointTarget>& endpoints = snapshot.ServiceEndpoints(*service, port->port);
    if (endpoints.empty()) {
      return Finish(std::move(decision), OutboundAction::kRefuse,
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
        *ip, " is service ", host, "; port ", port->port, " (targetPort ", target_port, ") -> ",
        target.pod != nullptr ? Describe(*target.pod) : std::string("endpoint"), " at ", target.ip,
        ":", target.port, " (", endpoints.size(), " ready endpoint",
        endpoints.size() == 1 ? "" : "s", ")"));
  } else if (const Pod* pod = snapshot.FindPodByIp(*ip); pod != nullptr) {
    decision.destination_pod = pod;
    trace.steps.push_back(absl::StrCat(*ip, " is ", Describe(*pod),
                                       "; addressed directly, no service host, so no "
                                       "DestinationRule applies"));
  } else {
    trace.steps.push_back(absl::StrCat(*ip,
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
      Append(trace, decision.destination_mtls->trace, "destination PeerAuthentication: ");
    }
  }
  const MtlsMode server_mode =
      decision.destination_mtls.has_value() ? decision.destination_mtls->mode : MtlsMode::kUnset;

  AppliedDestinationRule applied;
  if (!host.empty()) {
    applied = ResolveDestinationRule(snapshot, source.meta.ns, host, decision.service->meta.ns,
                                     service_port);
    Append(trace, applied.trace, "");
  }

  if (applied.tls.has_value()) {
    const ClientTlsSettings& tls = *applied.tls;
    const std::string rule = Describe(*applied.rule);
    switch (tls.mode) {
      case TlsMode::kIstioMutual:
        if (!in_mesh) {
          return Finish(std::move(decision), OutboundAction::kRefuse,
                        absl::StrCat(rule, " requires ISTIO_MUTUAL but ", host,
                                     " is not in the mesh (", mesh_reason, ")"));
        }
        decision.expected_peer_identity = WorkloadSpiffeId(snapshot, *pod);
        if (server_mode == MtlsMode::kDisable) {
          trace.warnings.push_back(absl::StrCat(rule, " sends mesh mTLS but ", Describe(*pod),
                                                " has PeerAuthentication DISABLE on "
                                                "port ",
                                                decision.port, ": the server will refuse it"));
        }
        return Finish(std::move(decision), OutboundAction::kHbone,
                      absl::StrCat("ISTIO_MUTUAL from ", rule, "; expecting ",
                                   decision.expected_peer_identity));
      case TlsMode::kSimple:
      case TlsMode::kMutual:
        decision.origination = tls;
        if (server_mode == MtlsMode::kStrict) {
          trace.warnings.push_back(
              absl::StrCat(rule, " originates ", TlsModeName(tls.mode), " TLS but ", Describe(*pod),
                           " is STRICT on port ", decision.port,
                           ": it accepts only mesh mTLS and will refuse this connection"));
        }
        return Finish(std::move(decision), OutboundAction::kTlsOrigination,
                      absl::StrCat(TlsModeName(tls.mode), " TLS origination from ", rule));
      case TlsMode::kDisable:
        if (server_mode == MtlsMode::kStrict) {
          trace.warnings.push_back(
              absl::StrCat(rule, " disables TLS but ", Describe(*pod), " is STRICT on port ",
                           decision.port, ": the server will refuse this plaintext connection"));
        }
        return Finish(std::move(decision), OutboundAction::kPlaintext,
                      absl::StrCat("TLS disabled by ", rule));
    }
  }

  // Auto mTLS: the destination's own policy decides.
  if (!in_mesh) {
    return Finish(std::move(decision), OutboundAction::kPlaintext,
                  absl::StrCat("auto mTLS: destination outside the mesh (", mesh_reason, ")"));
  }
  if (server_mode == MtlsMode::kDisable) {
    return Finish(std::move(decision), OutboundAction::kPlaintext,
                  absl::StrCat("auto mTLS: ", Describe(*pod),
                               " has PeerAuthentication DISABLE on "
                               "port ",
                               decision.port));
  }
  decision.expected_peer_identity = WorkloadSpiffeId(snapshot, *pod);
  return Finish(
      std::move(decision), OutboundAction::kHbone,
      absl::StrCat("auto mTLS: ", Describe(*pod), " is in the mesh and ", MtlsModeName(server_mode),
                   " on port ", decision.port, "; expecting ", decision.expected_peer_identity));
}

InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination, uint32_t port,
                              InboundTransport transport, absl::string_view peer_identity) {
  InboundDecision decision;
  Trace& trace = decision.trace;
  const bool mtls = transport == InboundTransport::kMtls;
  trace.steps.push_back(absl::StrCat(
      mtls ? absl::StrCat("mesh mTLS connection from ", peer_identity.empty()
                                                            ? absl::string_view("(unknown peer)")
                                                            : peer_identity)
           : std::string("plaintext connection"),
      " to ", Describe(destination), " port ", port));
  Enrollment enrollment = ResolveEnrollment(snapshot, destination);
  if (!enrollment.enrolled) {
    decision.reason = absl::StrCat("not in the mesh: ", enrollment.reason);
    trace.steps.push_back(absl::StrCat("decision: REFUSE: ", decision.reason));
    return decision;
  }
  decision.mtls = ResolveMtlsMode(snapshot, destination, port);
  Append(trace, decision.mtls.trace, "");
  switch (decision.mtls.mode) {
    case MtlsMode::kStrict:
      decision.allow = mtls;
      decision.reason = mtls ? "STRICT accepts mesh mTLS" : "STRICT refuses plaintext";
      break;
    case MtlsMode::kDisable:
      decision.allow = !mtls;
      decision.reason =
          mtls ? "DISABLE: mesh mTLS is not terminated for this port" : "DISABLE accepts plaintext";
      break;
    case MtlsMode::kPermissive:
    case MtlsMode::kUnset:
      decision.allow = true;
      decision.reason = mtls ? "PERMISSIVE accepts mesh mTLS" : "PERMISSIVE accepts plaintext";
      break;
  }
  trace.steps.push_back(
      absl::StrCat("decision: ", decision.allow ? "ALLOW: " : "REFUSE: ", decision.reason));
  return decision;
}

}  // namespace nodeward::policy
