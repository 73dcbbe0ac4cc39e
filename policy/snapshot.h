// An immutable, indexed view of one configuration: what every policy decision reads. Built
// once per configuration change by a source and shared as std::shared_ptr<const Snapshot>;
// decisions made from it are a few hash lookups, never a scan of all objects.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/destination_rule_index.h"
#include "policy/limits.h"
#include "policy/resources.h"

namespace nodeward::policy {

struct SnapshotOptions {
  // PeerAuthentications here without a selector are mesh-wide; DestinationRules here are the
  // last place looked.
  std::string root_namespace = "istio-system";
  // spiffe://<trust_domain>/ns/<ns>/sa/<sa>
  std::string trust_domain = "cluster.local";
  // Services are named <name>.<namespace>.svc.<cluster_domain>.
  std::string cluster_domain = "cluster.local";
  // A configuration over these is refused as a whole (sources keep the last good one).
  ConfigLimits limits;
};

// One backend of a service port: where a connection to the service actually goes.
struct EndpointTarget {
  IpAddress ip;
  uint32_t port = 0;         // the pod's (target) port
  const Pod* pod = nullptr;  // null for endpoints that are not pods we know
};

class Snapshot {
 public:
  // Indexes `resources`. Fails, naming both origins, when two objects of one kind share a
  // namespace and name, or when a kind is over its limit. `generation` is the source's
  // counter, shown by the debug CLI.
  static absl::StatusOr<std::shared_ptr<const Snapshot>> Build(ResourceSet resources,
                                                               SnapshotOptions options,
                                                               uint64_t generation = 0);

  const SnapshotOptions& options() const { return options_; }
  const ResourceSet& resources() const { return resources_; }
  uint64_t generation() const { return generation_; }

  // Lookups; pointers live as long as the snapshot.
  const Namespace* FindNamespace(absl::string_view name) const;
  const Pod* FindPod(absl::string_view ns, absl::string_view name) const;
  const Pod* FindPodByIp(const IpAddress& ip) const;
  const Service* FindService(absl::string_view ns, absl::string_view name) const;
  const Service* FindServiceByClusterIp(const IpAddress& ip) const;
  // Ready backends of `service` on its port `service_port` (empty when none or no such port).
  const std::vector<EndpointTarget>& ServiceEndpoints(const Service& service,
                                                      uint32_t service_port) const;
  // <name>.<namespace>.svc.<cluster_domain>
  std::string ServiceHost(const Service& service) const;

  // PeerAuthentication candidates per level, oldest first (then by name): the first one
  // decides, the rest are shown in traces as ignored.
  const std::vector<const PeerAuthentication*>& MeshPeerAuthentications() const;
  // Namespace-wide ones of `ns`; empty for the root namespace, whose are mesh-wide.
  const std::vector<const PeerAuthentication*>& NamespacePeerAuthentications(
      absl::string_view ns) const;
  // Those whose selector matches `pod`'s labels, in the pod's namespace. Empty for a pod of the
  // root namespace: Istio ignores selector policies there (pilot/pkg/security/authn
  // ComposePeerAuthentication, and ambient's convertedSelectorPeerAuthentications).
  std::vector<const PeerAuthentication*> WorkloadPeerAuthentications(const Pod& pod) const;
  // Selector policies of the root namespace that would select `pod`: shown as ignored.
  std::vector<const PeerAuthentication*> IgnoredRootSelectorPeerAuthentications(
      const Pod& pod) const;

  // DestinationRules as Istio indexes them: per namespace, merged per host.
  const DestinationRuleIndex& destination_rules() const { return destination_rules_; }
  // The DR's host as an FQDN (short names are relative to the DR's namespace) or wildcard.
  std::string ResolvedHost(const DestinationRule& rule) const;

  // The AuthorizationPolicies that apply to `pod`, as ztunnel receives them from istiod
  // (pilot/pkg/serviceregistry/kube/controller/ambient): those of the root namespace without
  // a selector (mesh-wide), those of the pod's namespace without one, and those of either
  // namespace whose selector matches the pod's labels; oldest first, then by name. Policies
  // bound to waypoints (targetRef) are not among them.
  std::vector<const AuthorizationPolicy*> AuthorizationPoliciesFor(const Pod& pod) const;
  // Policies in scope of `pod` that bind to a waypoint instead: named in traces as not
  // enforced here.
  std::vector<const AuthorizationPolicy*> WaypointAuthorizationPolicies(const Pod& pod) const;
  // Whether the configuration has any AuthorizationPolicy at all: the common case of none
  // costs a decision nothing.
  bool HasAuthorizationPolicies() const { return !resources_.authorization_policies.empty(); }
  // The Secret `ns`/`name` (a Gateway's credentialName), or null.
  const Secret* FindSecret(absl::string_view ns, absl::string_view name) const;

 private:
  Snapshot() = default;
  absl::Status Index();

  struct ServiceIndex {
    const Service* service = nullptr;
    absl::flat_hash_map<uint32_t, std::vector<EndpointTarget>> endpoints_by_port;
  };
  struct NamespaceIndex {
    const Namespace* ns = nullptr;
    std::vector<const PeerAuthentication*> namespace_policies;
    std::vector<const PeerAuthentication*> selector_policies;
    std::vector<const AuthorizationPolicy*> namespace_authorization;
    std::vector<const AuthorizationPolicy*> selector_authorization;
    std::vector<const AuthorizationPolicy*> waypoint_authorization;
  };

  const NamespaceIndex* FindNamespaceIndex(absl::string_view ns) const;

  SnapshotOptions options_;
  ResourceSet resources_;
  uint64_t generation_ = 0;

  absl::flat_hash_map<std::string, NamespaceIndex> namespaces_;
  absl::flat_hash_map<std::string, const Pod*> pods_by_name_;  // "ns/name"
  absl::flat_hash_map<IpAddress, const Pod*> pods_by_ip_;
  // node_hash_map: services_by_ip_ points into it.
  absl::node_hash_map<std::string, ServiceIndex> services_by_name_;  // "ns/name"
  absl::flat_hash_map<IpAddress, const ServiceIndex*> services_by_ip_;
  std::vector<const PeerAuthentication*> mesh_policies_;
  DestinationRuleIndex destination_rules_;
  absl::flat_hash_map<std::string, const Secret*> secrets_by_name_;  // "ns/name"
};

// Whether `labels` has every key/value of `selector`.
bool SelectorMatches(const Labels& selector, const Labels& labels);

}  // namespace nodeward::policy
