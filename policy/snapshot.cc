#include "policy/snapshot.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nodeward::policy {
namespace {

std::string Key(absl::string_view ns, absl::string_view name) {
  return absl::StrCat(ns, "/", name);
}

// Istio's order among policies of one level (pilot/pkg/model sortConfigByCreationTime): the
// oldest wins, then the name, then the namespace break ties.
template <typename T>
bool OlderFirst(const T* a, const T* b) {
  if (a->meta.creation_timestamp != b->meta.creation_timestamp) {
    return a->meta.creation_timestamp < b->meta.creation_timestamp;
  }
  if (a->meta.name != b->meta.name) return a->meta.name < b->meta.name;
  return a->meta.ns < b->meta.ns;
}

template <typename T>
absl::Status CheckUnique(absl::string_view kind, const std::vector<T>& objects) {
  absl::flat_hash_map<std::string, const T*> seen;
  for (const T& object : objects) {
    auto [it, inserted] = seen.emplace(Key(object.meta.ns, object.meta.name), &object);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(DescribeObject(kind, object.meta), " is defined twice: at ",
                       it->second->meta.origin, " and at ", object.meta.origin));
    }
  }
  return absl::OkStatus();
}

bool OwnsItsIp(const Pod& pod) {
  return !pod.host_network && pod.phase != "Succeeded" && pod.phase != "Failed";
}

const std::vector<const PeerAuthentication*>& NoPolicies() {
  static const auto* empty = new std::vector<const PeerAuthentication*>();
  return *empty;
}

}  // namespace

bool SelectorMatches(const Labels& selector, const Labels& labels) {
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

absl::StatusOr<std::shared_ptr<const Snapshot>> Snapshot::Build(ResourceSet resources,
                                                                SnapshotOptions options,
                                                                uint64_t generation) {
  std::shared_ptr<Snapshot> snapshot(new Snapshot());
  snapshot->options_ = std::move(options);
  snapshot->resources_ = std::move(resources);
  snapshot->generation_ = generation;
  if (absl::Status status = snapshot->Index(); !status.ok()) return status;
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

absl::Status Snapshot::Index() {
  const ResourceSet& r = resources_;
  if (absl::Status status = CheckLimits(r, options_.limits); !status.ok()) return status;
  for (absl::Status status :
       {CheckUnique("Namespace", r.namespaces), CheckUnique("Pod", r.pods),
        CheckUnique("Service", r.services), CheckUnique("EndpointSlice", r.endpoint_slices),
        CheckUnique("PeerAuthentication", r.peer_authentications),
        CheckUnique("DestinationRule", r.destination_rules),
        CheckUnique("AuthorizationPolicy", r.authorization_policies),
        CheckUnique("Gateway", r.gateways), CheckUnique("VirtualService", r.virtual_services),
        CheckUnique("Secret", r.secrets)}) {
    if (!status.ok()) return status;
  }

  for (const Namespace& ns : r.namespaces) namespaces_[ns.meta.name].ns = &ns;
  for (const Secret& secret : r.secrets) {
    secrets_by_name_[Key(secret.meta.ns, secret.meta.name)] = &secret;
  }

  absl::flat_hash_map<std::string, std::vector<const Pod*>> pods_by_namespace;
  for (const Pod& pod : r.pods) {
    pods_by_name_[Key(pod.meta.ns, pod.meta.name)] = &pod;
    pods_by_namespace[pod.meta.ns].push_back(&pod);
    if (!OwnsItsIp(pod)) continue;
    for (const IpAddress& ip : pod.ips) {
      auto [it, inserted] = pods_by_ip_.emplace(ip, &pod);
      if (inserted) continue;
      // Two live pods with one IP only happens briefly while the old one terminates: the
      // ready one, else the newer one, is the one traffic reaches.
      const Pod* other = it->second;
      if ((pod.ready && !other->ready) ||
          (pod.ready == other->ready &&
           pod.meta.creation_timestamp > other->meta.creation_timestamp)) {
        it->second = &pod;
      }
    }
  }

  for (const PeerAuthentication& policy : r.peer_authentications) {
    if (policy.selector.has_value()) {
      namespaces_[policy.meta.ns].selector_policies.push_back(&policy);
    } else if (policy.meta.ns == options_.root_namespace) {
      mesh_policies_.push_back(&policy);
    } else {
      namespaces_[policy.meta.ns].namespace_policies.push_back(&policy);
    }
  }
  std::sort(mesh_policies_.begin(), mesh_policies_.end(), OlderFirst<PeerAuthentication>);
  for (auto& [name, index] : namespaces_) {
    std::sort(index.namespace_policies.begin(), index.namespace_policies.end(),
              OlderFirst<PeerAuthentication>);
    std::sort(index.selector_policies.begin(), index.selector_policies.end(),
              OlderFirst<PeerAuthentication>);
  }

  destination_rules_.Build(r.destination_rules, options_.root_namespace,
                           [this](const DestinationRule& rule) { return ResolvedHost(rule); });

  for (const AuthorizationPolicy& policy : r.authorization_policies) {
    NamespaceIndex& index = namespaces_[policy.meta.ns];
    if (policy.targets_waypoint) {
      index.waypoint_authorization.push_back(&policy);
    } else if (policy.selector.has_value()) {
      index.selector_authorization.push_back(&policy);
    } else {
      index.namespace_authorization.push_back(&policy);
    }
  }

  // Services and their backends: EndpointSlices when the service has any (they already map
  // service ports to target ports), else the service's own selector over ready pods.
  absl::flat_hash_map<std::string, std::vector<const EndpointSlice*>> slices_by_service;
  for (const EndpointSlice& slice : r.endpoint_slices) {
    if (slice.service_name.empty() || slice.address_type == "FQDN") continue;
    slices_by_service[Key(slice.meta.ns, slice.service_name)].push_back(&slice);
  }
  for (const Service& service : r.services) {
    ServiceIndex& index = services_by_name_[Key(service.meta.ns, service.meta.name)];
    index.service = &service;
    for (const IpAddress& ip : service.cluster_ips) services_by_ip_[ip] = &index;
    auto slices = slices_by_service.find(Key(service.meta.ns, service.meta.name));
    for (const ServicePort& service_port : service.ports) {
      std::vector<EndpointTarget>& targets = index.endpoints_by_port[service_port.port];
      if (slices != slices_by_service.end()) {
        for (const EndpointSlice* slice : slices->second) {
          for (const EndpointSlicePort& slice_port : slice->ports) {
            if (slice_port.name != service_port.name ||
                slice_port.protocol != service_port.protocol || !slice_port.port.has_value()) {
              continue;
            }
            for (const Endpoint& endpoint : slice->endpoints) {
              if (!endpoint.ready || endpoint.addresses.empty()) continue;
              const Pod* pod = FindPodByIp(endpoint.addresses.front());
              if (pod == nullptr && !endpoint.target_pod_name.empty()) {
                pod = FindPod(endpoint.target_pod_namespace, endpoint.target_pod_name);
              }
              targets.push_back({endpoint.addresses.front(), *slice_port.port, pod});
            }
          }
        }
        continue;
      }
      if (!service.selector.has_value() || service.selector->empty()) continue;
      auto pods = pods_by_namespace.find(service.meta.ns);
      if (pods == pods_by_namespace.end()) continue;
      for (const Pod* pod : pods->second) {
        if (!pod->ready || pod->ips.empty() || !OwnsItsIp(*pod) ||
            !SelectorMatches(*service.selector, pod->meta.labels)) {
          continue;
        }
        uint32_t target_port = service_port.target_port_number;
        if (!service_port.target_port_name.empty()) {
          for (const ContainerPort& port : pod->ports) {
            if (port.name == service_port.target_port_name &&
                port.protocol == service_port.protocol) {
              target_port = port.container_port;
              break;
            }
          }
          // Kubernetes leaves a pod without the named port out of the endpoints.
          if (target_port == 0) continue;
        }
        targets.push_back({pod->ips.front(), target_port, pod});
      }
    }
  }
  return absl::OkStatus();
}

const Snapshot::NamespaceIndex* Snapshot::FindNamespaceIndex(absl::string_view ns) const {
  auto it = namespaces_.find(ns);
  return it == namespaces_.end() ? nullptr : &it->second;
}

const Namespace* Snapshot::FindNamespace(absl::string_view name) const {
  const NamespaceIndex* index = FindNamespaceIndex(name);
  return index == nullptr ? nullptr : index->ns;
}

const Pod* Snapshot::FindPod(absl::string_view ns, absl::string_view name) const {
  auto it = pods_by_name_.find(Key(ns, name));
  return it == pods_by_name_.end() ? nullptr : it->second;
}

const Pod* Snapshot::FindPodByIp(const IpAddress& ip) const {
  auto it = pods_by_ip_.find(ip);
  return it == pods_by_ip_.end() ? nullptr : it->second;
}

const Service* Snapshot::FindService(absl::string_view ns, absl::string_view name) const {
  auto it = services_by_name_.find(Key(ns, name));
  return it == services_by_name_.end() ? nullptr : it->second.service;
}

const Service* Snapshot::FindServiceByClusterIp(const IpAddress& ip) const {
  auto it = services_by_ip_.find(ip);
  return it == services_by_ip_.end() ? nullptr : it->second->service;
}

const std::vector<EndpointTarget>& Snapshot::ServiceEndpoints(const Service& service,
                                                              uint32_t service_port) const {
  static const auto* none = new std::vector<EndpointTarget>();
  auto it = services_by_name_.find(Key(service.meta.ns, service.meta.name));
  if (it == services_by_name_.end()) return *none;
  auto port = it->second.endpoints_by_port.find(service_port);
  return port == it->second.endpoints_by_port.end() ? *none : port->second;
}

std::string Snapshot::ServiceHost(const Service& service) const {
  return absl::StrCat(service.meta.name, ".", service.meta.ns, ".svc.", options_.cluster_domain);
}

const std::vector<const PeerAuthentication*>& Snapshot::MeshPeerAuthentications() const {
  return mesh_policies_;
}

const std::vector<const PeerAuthentication*>& Snapshot::NamespacePeerAuthentications(
    absl::string_view ns) const {
  const NamespaceIndex* index = FindNamespaceIndex(ns);
  return index == nullptr ? NoPolicies() : index->namespace_policies;
}

std::vector<const PeerAuthentication*> Snapshot::WorkloadPeerAuthentications(const Pod& pod) const {
  std::vector<const PeerAuthentication*> matching;
  if (pod.meta.ns == options_.root_namespace) return matching;
  const NamespaceIndex* index = FindNamespaceIndex(pod.meta.ns);
  if (index == nullptr) return matching;
  for (const PeerAuthentication* policy : index->selector_policies) {
    if (SelectorMatches(*policy->selector, pod.meta.labels)) matching.push_back(policy);
  }
  return matching;
}

std::vector<const PeerAuthentication*> Snapshot::IgnoredRootSelectorPeerAuthentications(
    const Pod& pod) const {
  std::vector<const PeerAuthentication*> matching;
  const NamespaceIndex* index = FindNamespaceIndex(options_.root_namespace);
  if (index == nullptr || pod.meta.ns != options_.root_namespace) return matching;
  for (const PeerAuthentication* policy : index->selector_policies) {
    if (SelectorMatches(*policy->selector, pod.meta.labels)) matching.push_back(policy);
  }
  return matching;
}

std::vector<const AuthorizationPolicy*> Snapshot::AuthorizationPoliciesFor(const Pod& pod) const {
  std::vector<const AuthorizationPolicy*> policies;
  auto add_from = [&](absl::string_view ns) {
    const NamespaceIndex* index = FindNamespaceIndex(ns);
    if (index == nullptr) return;
    policies.insert(policies.end(), index->namespace_authorization.begin(),
                    index->namespace_authorization.end());
    for (const AuthorizationPolicy* policy : index->selector_authorization) {
      if (SelectorMatches(*policy->selector, pod.meta.labels)) policies.push_back(policy);
    }
  };
  add_from(options_.root_namespace);
  if (pod.meta.ns != options_.root_namespace) add_from(pod.meta.ns);
  std::sort(policies.begin(), policies.end(), OlderFirst<AuthorizationPolicy>);
  return policies;
}

std::vector<const AuthorizationPolicy*> Snapshot::WaypointAuthorizationPolicies(
    const Pod& pod) const {
  std::vector<const AuthorizationPolicy*> policies;
  for (absl::string_view ns :
       {absl::string_view(options_.root_namespace), absl::string_view(pod.meta.ns)}) {
    if (const NamespaceIndex* index = FindNamespaceIndex(ns)) {
      policies.insert(policies.end(), index->waypoint_authorization.begin(),
                      index->waypoint_authorization.end());
    }
    if (ns == pod.meta.ns) break;
  }
  return policies;
}

std::string Snapshot::ResolvedHost(const DestinationRule& rule) const {
  if (rule.host.find('*') != std::string::npos || rule.host.find('.') != std::string::npos) {
    return rule.host;
  }
  return absl::StrCat(rule.host, ".", rule.meta.ns, ".svc.", options_.cluster_domain);
}

const Secret* Snapshot::FindSecret(absl::string_view ns, absl::string_view name) const {
  auto it = secrets_by_name_.find(Key(ns, name));
  return it == secrets_by_name_.end() ? nullptr : it->second;
}

}  // namespace nodeward::policy
