#include "agent/admin/admin_service.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/capture/enrollment_plan.h"
#include "common/log.h"
#include "common/net_address.h"
#include "common/port_number.h"
#include "policy/decisions.h"

namespace nodeward::admin {
namespace {

grpc::Status Unavailable(const std::string& what) {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, what);
}

grpc::Status InvalidArgument(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, what);
}

std::string Join(const std::vector<std::string>& items) { return absl::StrJoin(items, ","); }
std::string Join(const std::vector<IpAddress>& ips) {
  return absl::StrJoin(ips, ",",
                       [](std::string* out, const IpAddress& ip) { out->append(ip.ToString()); });
}

std::string LabelsText(const policy::Labels& labels) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : labels) parts.push_back(absl::StrCat(key, "=", value));
  return absl::StrJoin(parts, ",");
}

capture::PodMetadata MetadataOf(const capture::v1::EnrolledPod& enrolled) {
  capture::PodMetadata metadata;
  metadata.netns_path = enrolled.pod().netns_path();
  metadata.namespace_name = enrolled.pod().namespace_();
  metadata.name = enrolled.pod().name();
  metadata.uid = enrolled.pod().uid();
  metadata.service_account = enrolled.pod().service_account();
  // The agent wrote these addresses itself; one it could not read back is left out.
  for (const std::string& text : enrolled.pod_ips()) {
    if (absl::StatusOr<IpAddress> ip = IpAddress::Parse(text); ip.ok()) metadata.ips.push_back(*ip);
  }
  for (const auto& [key, value] : enrolled.pod().labels()) metadata.labels[key] = value;
  return metadata;
}

void FillModes(const policy::EffectiveMtls& mtls, v1::ModeLevels* out) {
  out->set_mesh(std::string(policy::MtlsModeName(mtls.levels.mesh)));
  out->set_namespace_(std::string(policy::MtlsModeName(mtls.levels.namespace_level)));
  out->set_workload(std::string(policy::MtlsModeName(mtls.levels.workload)));
  out->set_port(std::string(policy::MtlsModeName(mtls.levels.port)));
  out->set_effective(std::string(policy::MtlsModeName(mtls.mode)));
}

std::string DescribeTls(const policy::ClientTlsSettings& tls) {
  std::vector<std::string> parts = {std::string(policy::TlsModeName(tls.mode))};
  if (!tls.sni.empty()) parts.push_back(absl::StrCat("sni=", tls.sni));
  if (!tls.ca_certificates.empty()) parts.push_back(absl::StrCat("ca=", tls.ca_certificates));
  if (!tls.client_certificate.empty()) {
    parts.push_back(absl::StrCat("cert=", tls.client_certificate));
  }
  if (!tls.subject_alt_names.empty()) {
    parts.push_back(absl::StrCat("subjectAltNames=", Join(tls.subject_alt_names)));
  }
  if (tls.insecure_skip_verify) parts.push_back("insecureSkipVerify");
  if (!tls.credential_name.empty())
    parts.push_back(absl::StrCat("credentialName=", tls.credential_name));
  return absl::StrJoin(parts, " ");
}

// "ns/name" -> the pod as policy sees it: the snapshot's, else the enrolled one described.
absl::StatusOr<policy::Pod> FindPod(const AgentView& view, const policy::Snapshot& snapshot,
                                    const std::string& ref) {
  std::vector<std::string> parts = absl::StrSplit(ref, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("pod \"", ref, "\" must be namespace/name"));
  }
  if (const policy::Pod* pod = snapshot.FindPod(parts[0], parts[1])) return *pod;
  if (view.enrollment != nullptr) {
    for (const capture::v1::EnrolledPod& enrolled : view.enrollment->List()) {
      if (enrolled.pod().namespace_() == parts[0] && enrolled.pod().name() == parts[1]) {
        return proxy::PolicyPodFor(snapshot, MetadataOf(enrolled));
      }
    }
  }
  return absl::NotFoundError(
      absl::StrCat("pod ", ref, " is neither in the configuration nor enrolled on this node"));
}

}  // namespace

std::string Rfc3339(absl::Time time) {
  if (time == absl::InfinitePast() || time == absl::InfiniteFuture()) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", time, absl::UTCTimeZone());
}

void FillTrace(const policy::Trace& trace, v1::PolicyTrace* out) {
  for (const std::string& step : trace.steps) out->add_steps(step);
  for (const std::string& warning : trace.warnings) out->add_warnings(warning);
  for (const std::string& deciding : trace.deciding) out->add_deciding(deciding);
}

void FillOutboundExplanation(const policy::Snapshot& snapshot,
                             const policy::OutboundDecision& decision,
                             v1::ExplainPolicyResponse* response) {
  response->set_action(std::string(policy::OutboundActionName(decision.action)));
  response->set_reason(decision.reason);
  response->set_reason_code(std::string(policy::DecisionReasonName(decision.reason_code)));
  for (const std::string& identity : decision.expected_peer_identities) {
    response->add_expected_peer_identities(identity);
  }
  response->set_address(decision.address.ToString());
  response->set_port(decision.port);
  if (decision.destination_pod != nullptr) {
    response->set_destination_workload(
        absl::StrCat(decision.destination_pod->meta.ns, "/", decision.destination_pod->meta.name));
  }
  if (decision.service != nullptr) {
    response->set_service(snapshot.ServiceHost(*decision.service));
  }
  response->set_expected_peer_identity(decision.expected_peer_identity);
  if (decision.origination.has_value()) {
    response->set_origination(DescribeTls(*decision.origination));
  }
  if (decision.destination_mtls.has_value()) {
    FillModes(*decision.destination_mtls, response->mutable_mtls());
  }
  FillTrace(decision.trace, response->mutable_trace());
}

void FillConnection(const proxy::AccessRecord& r, absl::Duration age, v1::Connection* out) {
  out->set_direction(std::string(proxy::DirectionName(r.direction)));
  out->set_source_workload(r.source_workload);
  out->set_source_principal(r.source_principal);
  out->set_source_address(r.source_address);
  out->set_destination_workload(r.destination_workload);
  out->set_destination_principal(r.destination_principal);
  out->set_destination_address(r.destination_address);
  out->set_mode(std::string(proxy::ModeName(r.mode)));
  out->set_sent_bytes(r.sent_bytes);
  out->set_received_bytes(r.received_bytes);
  out->set_age_seconds(absl::ToDoubleSeconds(age));
  out->set_policy(r.policy);
}

void FillConnections(const std::vector<proxy::LiveConnection>& connections,
                     v1::ListConnectionsResponse* response) {
  for (const proxy::LiveConnection& connection : connections) {
    FillConnection(connection.record, connection.age, response->add_connections());
  }
  std::sort(response->mutable_connections()->begin(), response->mutable_connections()->end(),
            [](const v1::Connection& a, const v1::Connection& b) {
              return a.age_seconds() > b.age_seconds();
            });
}

grpc::Status AdminService::ListWorkloads(grpc::ServerContext*, const v1::ListWorkloadsRequest*,
                                         v1::ListWorkloadsResponse* response) {
  response->set_node_name(view_.node_name);
  if (view_.enrollment == nullptr) return grpc::Status::OK;
  std::shared_ptr<const policy::Snapshot> snapshot =
      view_.config != nullptr ? view_.config->Current() : nullptr;
  for (const capture::v1::EnrolledPod& enrolled : view_.enrollment->List()) {
    v1::Workload* workload = response->add_workloads();
    const capture::v1::EnrollRequest& pod = enrolled.pod();
    workload->set_namespace_(pod.namespace_());
    workload->set_name(pod.name());
    workload->set_uid(pod.uid());
    workload->set_service_account(pod.service_account());
    if (auto id = SpiffeId::Make(view_.trust_domain, pod.namespace_(), pod.service_account());
        id.ok()) {
      workload->set_spiffe_id(id->ToString());
    }
    for (const std::string& ip : enrolled.pod_ips()) workload->add_ips(ip);
    for (const std::string& address : enrolled.addresses()) {
      workload->add_steered_addresses(address);
    }
    workload->set_netns_path(pod.netns_path());
    workload->set_netns_cookie(enrolled.netns_cookie());
    for (const std::string& listener : enrolled.listeners()) workload->add_listeners(listener);
    for (const auto& [key, value] : pod.labels()) (*workload->mutable_labels())[key] = value;
    const absl::Time enrolled_at = absl::FromUnixMillis(pod.enrolled_at_unix_ms());
    workload->set_enrolled_by(absl::StrCat(
        capture::OriginName(pod.origin()),
        pod.enrolled_at_unix_ms() != 0 && enrolled_at < view_.started ? " (re-adopted at restart)"
                                                                      : ""));
    if (pod.enrolled_at_unix_ms() != 0) workload->set_enrolled_at(Rfc3339(enrolled_at));
    workload->set_container_id(pod.container_id());
    if (snapshot == nullptr) {
      workload->set_enrollment_reason("enrolled through the API (no configuration loaded)");
      continue;
    }
    const policy::Pod policy_pod = proxy::PolicyPodFor(*snapshot, MetadataOf(enrolled));
    workload->set_node_name(policy_pod.node_name);
    policy::Enrollment enrollment = policy::ResolveEnrollment(*snapshot, policy_pod);
    workload->set_enrollment_reason(
        enrollment.enrolled ? enrollment.reason
                            : absl::StrCat("enrolled through the API, but the configuration says: ",
                                           enrollment.reason));
  }
  if (view_.enroller != nullptr) {
    for (const capture::EnrollmentGap& gap : view_.enroller->Gaps()) {
      v1::NotEnrolledWorkload* missing = response->add_not_enrolled();
      missing->set_namespace_(gap.namespace_name);
      missing->set_name(gap.name);
      missing->set_uid(gap.uid);
      missing->set_reason(gap.reason);
      missing->set_since(Rfc3339(gap.since));
      missing->set_attempts(gap.attempts);
    }
  }
  std::sort(response->mutable_workloads()->begin(), response->mutable_workloads()->end(),
            [](const v1::Workload& a, const v1::Workload& b) {
              return std::tie(a.namespace_(), a.name()) < std::tie(b.namespace_(), b.name());
            });
  return grpc::Status::OK;
}

grpc::Status AdminService::ListCertificates(grpc::ServerContext*,
                                            const v1::ListCertificatesRequest*,
                                            v1::ListCertificatesResponse* response) {
  response->set_sds_socket(view_.sds_socket);
  if (view_.certificates == nullptr) {
    return Unavailable("this agent keeps no certificates (passthrough mode)");
  }
  for (const sds::IdentityStatus& status : view_.certificates->Status()) {
    v1::Certificate* certificate = response->add_certificates();
    certificate->set_spiffe_id(status.identity.ToString());
    certificate->set_state(sds::StateName(status.state));
    certificate->set_workloads(status.references);
    certificate->set_serial(status.serial_hex);
    certificate->set_not_before(Rfc3339(status.not_before));
    certificate->set_not_after(Rfc3339(status.not_after));
    certificate->set_next_refresh(Rfc3339(status.next_refresh));
    certificate->set_last_update(Rfc3339(status.last_update));
    certificate->set_last_error(status.last_error);
  }
  absl::StatusOr<crypto::TrustBundle> bundle = view_.certificates->Bundle();
  if (bundle.ok()) {
    for (const crypto::CertificateInfo& root : bundle->Roots()) {
      v1::TrustRoot* out = response->add_trust_roots();
      out->set_subject(root.subject);
      out->set_serial(root.serial_hex);
      out->set_not_before(Rfc3339(root.not_before));
      out->set_not_after(Rfc3339(root.not_after));
      out->set_sha256_fingerprint(root.sha256_fingerprint_hex);
    }
  } else {
    response->set_trust_bundle_error(std::string(bundle.status().message()));
  }
  response->set_rejected_secrets(view_.certificates->rejected_secrets());
  return grpc::Status::OK;
}

grpc::Status AdminService::ExplainPolicy(grpc::ServerContext*,
                                         const v1::ExplainPolicyRequest* request,
                                         v1::ExplainPolicyResponse* response) {
  if (view_.config == nullptr) return Unavailable("this agent applies no policy");
  std::shared_ptr<const policy::Snapshot> snapshot = view_.config->Current();
  if (snapshot == nullptr) return Unavailable("no configuration loaded yet");
  response->set_config_generation(snapshot->generation());
  if (request->has_outbound()) {
    absl::StatusOr<policy::Pod> source = FindPod(view_, *snapshot, request->outbound().from_pod());
    if (!source.ok()) return InvalidArgument(std::string(source.status().message()));
    // The port's canonical form is checked by the parser ("08080" is refused).
    absl::StatusOr<SocketAddress> to = SocketAddress::Parse(request->outbound().to());
    if (!to.ok()) {
      return InvalidArgument(
          absl::StrCat("--to ", request->outbound().to(), ": ", to.status().message()));
    }
    // As the data plane decides: a destination this agent serves is carried on the node.
    policy::OutboundDecision decision = policy::DecideOutboundOnNode(
        *snapshot, *source, to->ip.Unmapped(), to->port, /*endpoint_hint=*/0,
        [this](const IpAddress& ip) {
          return view_.data_plane != nullptr && view_.data_plane->ServesPod(ip);
        });
    FillOutboundExplanation(*snapshot, decision, response);
    return grpc::Status::OK;
  }
  if (request->has_inbound()) {
    const v1::ExplainPolicyRequest::Inbound& inbound = request->inbound();
    absl::StatusOr<policy::Pod> pod = FindPod(view_, *snapshot, inbound.pod());
    if (!pod.ok()) return InvalidArgument(std::string(pod.status().message()));
    if (inbound.port() == 0 || inbound.port() > 65535) {
      return InvalidArgument("inbound port must be 1-65535");
    }
    policy::InboundConnection connection;
    connection.transport = inbound.plaintext() ? policy::InboundTransport::kPlaintext
                                               : policy::InboundTransport::kMtls;
    if (!inbound.peer_identity().empty()) {
      absl::StatusOr<SpiffeId> peer = SpiffeId::Parse(inbound.peer_identity());
      if (!peer.ok()) {
        return InvalidArgument(
            absl::StrCat("peer identity ", inbound.peer_identity(), ": ", peer.status().message()));
      }
      connection.peer_identity = *std::move(peer);
    }
    connection.port = inbound.port();
    for (auto [text, out, what] :
         {std::tuple{&inbound.source_ip(), &connection.source_ip, "source"},
          std::tuple{&inbound.destination_ip(), &connection.destination_ip, "destination"}}) {
      if (text->empty()) continue;
      absl::StatusOr<IpAddress> ip = IpAddress::Parse(*text);
      if (!ip.ok()) {
        return InvalidArgument(absl::StrCat(what, " address: ", ip.status().message()));
      }
      *out = *ip;
    }
    // The connection is to one of the pod's addresses; without one given, its first.
    if (!connection.destination_ip.has_value() && !pod->ips.empty()) {
      connection.destination_ip = pod->ips.front();
    }
    if (inbound.has_sni()) connection.sni = inbound.sni();
    policy::InboundDecision decision = policy::DecideInbound(*snapshot, *pod, connection);
    response->set_action(decision.allow ? "ALLOW" : "REFUSE");
    response->set_reason(decision.reason);
    response->set_reason_code(std::string(policy::DecisionReasonName(decision.reason_code)));
    response->set_destination_workload(absl::StrCat(pod->meta.ns, "/", pod->meta.name));
    if (connection.destination_ip.has_value()) {
      response->set_address(connection.destination_ip->ToString());
    }
    response->set_port(inbound.port());
    FillModes(decision.mtls, response->mutable_mtls());
    if (decision.authorization.has_value()) {
      v1::AuthorizationExplanation* out = response->mutable_authorization();
      out->set_outcome(
          std::string(policy::AuthorizationOutcomeName(decision.authorization->outcome)));
      if (decision.authorization->policy != nullptr) {
        out->set_policy(policy::Describe(*decision.authorization->policy));
      }
      out->set_reason(decision.authorization->reason);
      for (const policy::AuthorizationPolicy* audit : decision.authorization->audit) {
        out->add_audit(policy::Describe(*audit));
      }
    }
    FillTrace(decision.trace, response->mutable_trace());
    return grpc::Status::OK;
  }
  return InvalidArgument("ask about an outbound or an inbound connection");
}

grpc::Status AdminService::ListConnections(grpc::ServerContext*, const v1::ListConnectionsRequest*,
                                           v1::ListConnectionsResponse* response) {
  if (view_.data_plane == nullptr) return Unavailable("no data plane");
  FillConnections(view_.data_plane->Connections(), response);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListTunnels(grpc::ServerContext*, const v1::ListTunnelsRequest*,
                                       v1::ListTunnelsResponse* response) {
  if (view_.data_plane == nullptr) return Unavailable("no data plane");
  for (const proxy::DataPlane::TunnelInfo& info : view_.data_plane->Tunnels()) {
    v1::Tunnel* out = response->add_tunnels();
    out->set_role(info.role);
    out->set_pod(info.description.pod);
    out->set_local_identity(info.description.local_identity);
    out->set_peer_identity(info.peer_identity);
    out->set_peer_address(info.description.peer_address);
    out->set_established(info.established);
    out->set_active_streams(info.active_streams);
    out->set_streams_opened(info.streams_opened);
    out->set_age_seconds(absl::ToDoubleSeconds(info.age));
    out->set_draining(info.draining);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::DumpBpf(grpc::ServerContext*, const v1::DumpBpfRequest*,
                                   v1::DumpBpfResponse* response) {
  if (view_.dataplane == nullptr) return Unavailable("no BPF state");
  absl::StatusOr<bpf::DataplaneSnapshot> snapshot = view_.dataplane->Snapshot();
  if (!snapshot.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("reading BPF maps: ", snapshot.status().message()));
  }
  response->set_pin_path(view_.bpf_pin_path);
  absl::flat_hash_map<uint64_t, std::string> pods;
  if (view_.enrollment != nullptr) {
    for (const capture::v1::EnrolledPod& enrolled : view_.enrollment->List()) {
      pods[enrolled.netns_cookie()] =
          absl::StrCat(enrolled.pod().namespace_(), "/", enrolled.pod().name());
    }
  }
  for (const bpf::EnrolledNetnsEntry& entry : snapshot->enrolled) {
    v1::BpfEnrolledNetns* out = response->add_enrolled();
    out->set_netns_cookie(entry.netns_cookie);
    out->set_pod_id(entry.pod_id);
    if (auto it = pods.find(entry.netns_cookie); it != pods.end()) out->set_pod(it->second);
    out->set_sk_lookup_linked(std::find(snapshot->linked_netns_cookies.begin(),
                                        snapshot->linked_netns_cookies.end(), entry.netns_cookie) !=
                              snapshot->linked_netns_cookies.end());
  }
  for (const bpf::PodAddressEntry& entry : snapshot->pod_addresses) {
    v1::BpfPodAddress* out = response->add_pod_addresses();
    out->set_address(entry.address.ToString());
    out->set_netns_cookie(entry.netns_cookie);
  }
  for (const bpf::InboundListenerEntry& entry : snapshot->inbound_listeners) {
    v1::BpfInboundListener* out = response->add_inbound_listeners();
    out->set_address(entry.address.ToString());
    out->set_slot(bpf::ListenerSlotName(entry.slot));
    out->set_present(entry.socket_cookie != 0);
  }
  response->set_pending_original_destinations(snapshot->pending_original_destinations);
  for (const auto& [name, value] : snapshot->counters)
    (*response->mutable_counters())[name] = value;
  for (const std::string& attached : view_.bpf_attached) response->add_attached(attached);
  return grpc::Status::OK;
}

grpc::Status AdminService::DumpConfig(grpc::ServerContext*, const v1::DumpConfigRequest*,
                                      v1::DumpConfigResponse* response) {
  if (view_.config == nullptr) return Unavailable("this agent applies no policy");
  response->set_source(view_.config_description);
  const policy::SourceStatus status = view_.config->Status();
  response->set_last_success(Rfc3339(status.last_success));
  if (!status.last_error.ok()) response->set_last_error(status.last_error.ToString());
  std::shared_ptr<const policy::Snapshot> snapshot = view_.config->Current();
  if (snapshot == nullptr) return grpc::Status::OK;
  response->set_generation(snapshot->generation());
  const policy::ResourceSet& resources = snapshot->resources();
  auto add = [response](const char* kind, const policy::ObjectMeta& meta) {
    v1::ConfigObject* object = response->add_objects();
    object->set_kind(kind);
    object->set_namespace_(meta.ns);
    object->set_name(meta.name);
    object->set_origin(meta.origin);
    if (!meta.labels.empty()) (*object->mutable_fields())["labels"] = LabelsText(meta.labels);
    return object->mutable_fields();
  };
  for (const policy::Namespace& ns : resources.namespaces) add("Namespace", ns.meta);
  for (const policy::Pod& pod : resources.pods) {
    auto* fields = add("Pod", pod.meta);
    (*fields)["serviceAccount"] = pod.service_account;
    (*fields)["nodeName"] = pod.node_name;
    (*fields)["ips"] = Join(pod.ips);
    (*fields)["ready"] = pod.ready ? "true" : "false";
  }
  for (const policy::Service& service : resources.services) {
    auto* fields = add("Service", service.meta);
    (*fields)["clusterIPs"] = Join(service.cluster_ips);
    std::vector<std::string> ports;
    for (const policy::ServicePort& port : service.ports) {
      ports.push_back(absl::StrCat(port.port, "->",
                                   port.target_port_name.empty()
                                       ? absl::StrCat(port.target_port_number)
                                       : port.target_port_name));
    }
    (*fields)["ports"] = Join(ports);
    if (service.selector.has_value()) (*fields)["selector"] = LabelsText(*service.selector);
  }
  for (const policy::EndpointSlice& slice : resources.endpoint_slices) {
    auto* fields = add("EndpointSlice", slice.meta);
    (*fields)["service"] = slice.service_name;
    (*fields)["endpoints"] = absl::StrCat(slice.endpoints.size());
  }
  for (const policy::PeerAuthentication& pa : resources.peer_authentications) {
    auto* fields = add("PeerAuthentication", pa.meta);
    (*fields)["mode"] = std::string(policy::MtlsModeName(pa.mode));
    if (pa.selector.has_value()) (*fields)["selector"] = LabelsText(*pa.selector);
    std::vector<std::string> ports;
    for (const auto& [port, mode] : pa.port_level) {
      ports.push_back(absl::StrCat(port, "=", policy::MtlsModeName(mode)));
    }
    if (!ports.empty()) (*fields)["portLevelMtls"] = Join(ports);
  }
  for (const policy::DestinationRule& rule : resources.destination_rules) {
    auto* fields = add("DestinationRule", rule.meta);
    (*fields)["host"] = rule.host;
    if (!rule.export_to.empty()) (*fields)["exportTo"] = Join(rule.export_to);
    if (rule.tls.has_value()) (*fields)["tls"] = DescribeTls(*rule.tls);
    std::vector<std::string> ports;
    for (const policy::PortTrafficPolicy& port : rule.port_level) {
      if (port.tls.has_value())
        ports.push_back(absl::StrCat(port.port, "=", DescribeTls(*port.tls)));
    }
    if (!ports.empty()) (*fields)["portLevelSettings"] = absl::StrJoin(ports, "; ");
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::SetLogLevel(grpc::ServerContext*, const v1::SetLogLevelRequest* request,
                                       v1::SetLogLevelResponse* response) {
  return ApplyLogLevel(*request, response);
}

grpc::Status ApplyLogLevel(const v1::SetLogLevelRequest& request,
                           v1::SetLogLevelResponse* response) {
  absl::StatusOr<LogLevel> level = ParseLogLevel(request.level());
  if (!level.ok()) return InvalidArgument(std::string(level.status().message()));
  response->set_previous(LogLevelName(CurrentLogLevel()));
  ::nodeward::SetLogLevel(*level);
  response->set_level(LogLevelName(*level));
  Log(LogLevel::kWarning, "log level set to ", response->level(), " through the admin API");
  return grpc::Status::OK;
}

absl::Duration DrainGrace(const v1::DrainRequest& request) {
  return absl::Seconds(request.grace_seconds() == 0 ? 5 : std::min(request.grace_seconds(), 300u));
}

grpc::Status AdminService::Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                                 v1::DrainResponse* response) {
  if (view_.data_plane == nullptr) return Unavailable("no data plane");
  const absl::Duration grace = DrainGrace(*request);
  Log(LogLevel::kWarning, "draining through the admin API, grace ", absl::FormatDuration(grace));
  response->set_connections_cut(view_.data_plane->Drain(grace));
  return grpc::Status::OK;
}

}  // namespace nodeward::admin
