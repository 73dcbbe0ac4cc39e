// Kubernetes and Istio resources as the policy engine sees them: only the fields that decide
// enrollment, identity, addressing and TLS. Parsed from multi-document YAML or JSON (files or
// the API server); unknown fields and unknown kinds are ignored.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nodeward::policy {

using Labels = std::map<std::string, std::string>;

struct ObjectMeta {
  std::string name;
  std::string ns;  // empty for cluster-scoped kinds (Namespace)
  Labels labels;
  // Absent in hand-written files: treated as the zero time, i.e. older than anything dated,
  // which is how Istio orders objects that carry no timestamp.
  absl::Time creation_timestamp = absl::InfinitePast();
  std::string resource_version;
  std::string uid;
  // Where the object came from, for error messages and traces: "file.yaml:12" or "api".
  std::string origin;
};

// "Kind namespace/name" (or "Kind name" when cluster-scoped): how every message names a
// resource.
std::string DescribeObject(absl::string_view kind, const ObjectMeta& meta);

struct Namespace {
  ObjectMeta meta;
};

struct ContainerPort {
  std::string name;
  uint32_t container_port = 0;
  std::string protocol = "TCP";
};

struct Pod {
  ObjectMeta meta;
  std::string service_account = "default";
  std::string node_name;
  std::vector<std::string> ips;  // normalized textual form (status.podIPs, else status.podIP)
  std::vector<ContainerPort> ports;
  bool ready = false;         // status.conditions[type=Ready].status == "True"
  bool host_network = false;  // shares the node's IP: never indexed by IP, never enrolled
  std::string phase;          // Succeeded/Failed pods no longer own their IP
};

struct ServicePort {
  std::string name;
  uint32_t port = 0;
  std::string protocol = "TCP";
  // Exactly one of these is set; Kubernetes defaults targetPort to the port number.
  uint32_t target_port_number = 0;
  std::string target_port_name;
};

struct Service {
  ObjectMeta meta;
  std::vector<std::string> cluster_ips;  // normalized; "None" (headless) is dropped
  std::vector<ServicePort> ports;
  // Without a selector Kubernetes manages no endpoints: only EndpointSlices give them.
  std::optional<Labels> selector;
};

struct EndpointSlicePort {
  std::string name;
  std::optional<uint32_t> port;  // absent means "all ports" in the API; such entries are unused
  std::string protocol = "TCP";
};

struct Endpoint {
  std::vector<std::string> addresses;  // normalized
  bool ready = true;                   // conditions.ready; null means ready per the API
  std::string target_pod_name;         // targetRef of kind Pod, if any
  std::string target_pod_namespace;
};

struct EndpointSlice {
  ObjectMeta meta;
  std::string service_name;  // label kubernetes.io/service-name
  std::string address_type;  // IPv4, IPv6 or FQDN (FQDN slices are ignored)
  std::vector<EndpointSlicePort> ports;
  std::vector<Endpoint> endpoints;
};

enum class MtlsMode { kUnset, kDisable, kPermissive, kStrict };
absl::string_view MtlsModeName(MtlsMode mode);

struct PeerAuthentication {
  ObjectMeta meta;
  // selector.matchLabels; absent means namespace-wide (or mesh-wide in the root namespace).
  // An empty matchLabels is also treated as absent, as Istio does.
  std::optional<Labels> selector;
  MtlsMode mode = MtlsMode::kUnset;
  std::map<uint32_t, MtlsMode> port_level;  // keyed by the workload's (target) port
};

enum class TlsMode { kDisable, kSimple, kMutual, kIstioMutual };
absl::string_view TlsModeName(TlsMode mode);

struct ClientTlsSettings {
  TlsMode mode = TlsMode::kDisable;
  std::string client_certificate;
  std::string private_key;
  std::string ca_certificates;
  std::vector<std::string> subject_alt_names;
  std::string sni;
  bool insecure_skip_verify = false;
  std::string ca_crl;
  std::string credential_name;
  friend bool operator==(const ClientTlsSettings&, const ClientTlsSettings&) = default;
};

struct PortTrafficPolicy {
  uint32_t port = 0;  // the service port
  std::optional<ClientTlsSettings> tls;
};

struct DestinationRule {
  ObjectMeta meta;
  std::string host;                    // as written: short, FQDN or wildcard
  std::vector<std::string> export_to;  // empty means "*"
  std::optional<ClientTlsSettings> tls;
  std::vector<PortTrafficPolicy> port_level;
};

// Everything one configuration source knows, before indexing.
struct ResourceSet {
  std::vector<Namespace> namespaces;
  std::vector<Pod> pods;
  std::vector<Service> services;
  std::vector<EndpointSlice> endpoint_slices;
  std::vector<PeerAuthentication> peer_authentications;
  std::vector<DestinationRule> destination_rules;

  size_t size() const {
    return namespaces.size() + pods.size() + services.size() + endpoint_slices.size() +
           peer_authentications.size() + destination_rules.size();
  }
};

// Parses every document of `text` (YAML or JSON; a document may also be a `List` or `*List`
// with `items`) and appends the resources it knows to `out`. `source_name` prefixes line
// numbers in errors ("dir/a.yaml:12"). On error `out` may hold the documents before the bad
// one; callers that need all-or-nothing parse into a scratch set.
absl::Status AppendYamlResources(absl::string_view text, absl::string_view source_name,
                                 ResourceSet& out);

// Normalizes an IPv4/IPv6 literal to its canonical text; error when it is not one.
absl::StatusOr<std::string> NormalizeIp(absl::string_view text);

}  // namespace nodeward::policy
