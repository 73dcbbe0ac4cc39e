// Kubernetes and Istio resources as the policy engine sees them: only the fields that decide
// enrollment, identity, addressing, TLS and L4 authorization. Parsed from multi-document YAML
// or JSON (files or the API server); unknown fields and unknown kinds are ignored.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/net_address.h"

namespace nodeward::policy {

using Labels = std::map<std::string, std::string>;

struct ObjectMeta {
  std::string name;
  std::string ns;  // empty for cluster-scoped kinds (Namespace)
  Labels labels;
  // Absent in hand-written files. Such an object counts as created after every object that
  // states its age, as the API server would date it when it is applied, so that "the oldest
  // wins" picks what it picks in a cluster; objects without one tie, and the name decides.
  absl::Time creation_timestamp = absl::InfiniteFuture();
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
  std::vector<IpAddress> ips;  // status.podIPs, else status.podIP
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
  std::vector<IpAddress> cluster_ips;  // "None" (headless) is dropped
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
  std::vector<IpAddress> addresses;
  bool ready = true;            // conditions.ready; null means ready per the API
  std::string target_pod_name;  // targetRef of kind Pod, if any
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
  std::vector<std::string> export_to;  // empty means "*"; "." is the rule's own namespace
  // workloadSelector.matchLabels: the rule is for these clients of its own namespace only. Set
  // (possibly empty) whenever the field is present: Istio treats any selector as private.
  std::optional<Labels> workload_selector;
  // Whether spec.trafficPolicy is present even without tls or portLevelSettings (say, with
  // only a loadBalancer): when rules for one host merge, Istio keeps the first present
  // trafficPolicy whole. See HasTrafficPolicy.
  bool has_traffic_policy = false;
  std::optional<ClientTlsSettings> tls;
  std::vector<PortTrafficPolicy> port_level;

  bool HasTrafficPolicy() const {
    return has_traffic_policy || tls.has_value() || !port_level.empty();
  }
};

// An address block of ipBlocks, notIpBlocks or an IP condition: an address (a /32 or /128) or
// a CIDR, kept parsed (host bits cleared) so decisions compare bytes.
struct IpBlock {
  bool v6 = false;
  uint8_t prefix_length = 0;
  std::array<uint8_t, 16> address{};  // IPv4 in the first 4 bytes
  std::string text;                   // as written
};
absl::StatusOr<IpBlock> ParseIpBlock(absl::string_view text);

// Istio's string forms in principals, namespaces and string conditions: "*" (any non-empty
// value), "prefix*", "*suffix" or an exact value.
struct StringMatcher {
  enum class Kind { kExact, kPrefix, kSuffix, kPresence };
  Kind kind = Kind::kExact;
  std::string value;  // without the "*"
  std::string text;   // as written
};
StringMatcher ParseStringMatcher(absl::string_view text);

enum class AuthorizationAction { kAllow, kDeny, kAudit, kCustom };
absl::string_view AuthorizationActionName(AuthorizationAction action);

// rules[].from[].source, L4 fields only; HTTP-only fields are named in the rule.
struct AuthorizationSource {
  struct ServiceAccount {
    std::string ns, name;
  };
  std::vector<StringMatcher> principals, not_principals;
  std::vector<StringMatcher> namespaces, not_namespaces;
  std::vector<ServiceAccount> service_accounts, not_service_accounts;
  std::vector<IpBlock> ip_blocks, not_ip_blocks;
};

// rules[].to[].operation, L4 fields only.
struct AuthorizationOperation {
  std::vector<uint32_t> ports, not_ports;
};

// rules[].when[]. Keys a node agent cannot evaluate (request.*, remote.ip, experimental.*)
// have kind kHttp and no values kept.
struct AuthorizationCondition {
  enum class Key {
    kSourceIp,
    kSourceNamespace,
    kSourcePrincipal,
    kDestinationIp,
    kDestinationPort,
    kConnectionSni,
    kHttp
  };
  std::string key;  // as written
  Key kind = Key::kHttp;
  std::vector<StringMatcher> strings, not_strings;  // namespace, principal, SNI
  std::vector<IpBlock> ips, not_ips;
  std::vector<uint32_t> ports, not_ports;
};

struct AuthorizationRule {
  std::vector<AuthorizationSource> from;
  std::vector<AuthorizationOperation> to;
  std::vector<AuthorizationCondition> when;
  // The HTTP-only attributes the rule uses, as "field" paths ("to[0].operation.methods",
  // "when[1].key request.headers[x]"); empty for a rule that is L4 only.
  std::vector<std::string> http_attributes;
};

struct AuthorizationPolicy {
  ObjectMeta meta;
  // selector.matchLabels; absent (or empty) means every workload of the namespace, or of the
  // mesh in the root namespace.
  std::optional<Labels> selector;
  // targetRef/targetRefs bind the policy to a waypoint or gateway, which enforce it; as in
  // ztunnel, a node agent does not.
  bool targets_waypoint = false;
  AuthorizationAction action = AuthorizationAction::kAllow;
  std::string provider;  // CUSTOM: provider.name
  // Annotation istio.io/dry-run=true: evaluated and reported, never enforced.
  bool dry_run = false;
  std::vector<AuthorizationRule> rules;
  // Set for an object the API served that does not parse: it stands in, failing closed, until
  // a valid version arrives (see KubeSource); the text says why it was rejected.
  std::string rejected;
};

// Istio's gateway kinds (networking.istio.io Gateway and VirtualService) and the Secrets a
// Gateway's credentialName names. Parsed and validated as Istio does in gateway_resources.cc;
// the fields kept are those an L4 gateway (TLS termination, SNI passthrough, TCP) applies.

// Server.port.protocol, parsed case-insensitively as Istio does. HTTP, HTTP2, GRPC and GRPC-WEB
// servers route by HTTP, as does HTTPS unless it passes TLS through; MONGO, REDIS and MYSQL
// are TCP to a gateway without their protocol filters.
enum class GatewayProtocol { kHttp, kHttps, kTls, kTcp };
absl::string_view GatewayProtocolName(GatewayProtocol protocol);

// ServerTLSSettings.mode; Istio's default (enum value 0) is PASSTHROUGH.
enum class ServerTlsMode {
  kPassthrough,
  kSimple,
  kMutual,
  kAutoPassthrough,
  kIstioMutual,
  kOptionalMutual
};
absl::string_view ServerTlsModeName(ServerTlsMode mode);

// minProtocolVersion / maxProtocolVersion; kAuto is TLS_AUTO (Envoy's defaults: TLS 1.2 to 1.3).
enum class TlsProtocolVersion { kAuto, kTlsV1_0, kTlsV1_1, kTlsV1_2, kTlsV1_3 };
absl::string_view TlsProtocolVersionName(TlsProtocolVersion version);

struct ServerTlsSettings {
  bool https_redirect = false;
  ServerTlsMode mode = ServerTlsMode::kPassthrough;
  std::string server_certificate;  // file paths
  std::string private_key;
  std::string ca_certificates;
  std::string ca_crl;
  std::string credential_name;  // a Secret in the namespace of the gateway workload
  std::vector<std::string> subject_alt_names;
  std::vector<std::string> verify_certificate_spki;  // base64 SHA-256 of the SPKI
  std::vector<std::string> verify_certificate_hash;  // hex SHA-256 of the DER, colons allowed
  TlsProtocolVersion min_protocol_version = TlsProtocolVersion::kAuto;
  TlsProtocolVersion max_protocol_version = TlsProtocolVersion::kAuto;
  std::vector<std::string> cipher_suites;
  friend bool operator==(const ServerTlsSettings&, const ServerTlsSettings&) = default;
};

struct GatewayPort {
  uint32_t number = 0;
  std::string protocol_name;  // as written
  GatewayProtocol protocol = GatewayProtocol::kTcp;
  std::string name;
};

struct GatewayServer {
  GatewayPort port;
  std::string bind;
  // As written: "host", "ns/host", "./host" or "*/host", where host is an FQDN, "*.suffix"
  // or "*"; the namespace part says which namespaces' VirtualServices may bind to it.
  std::vector<std::string> hosts;
  std::optional<ServerTlsSettings> tls;
  std::string name;
};

struct Gateway {
  ObjectMeta meta;
  Labels selector;  // empty selects every gateway workload
  std::vector<GatewayServer> servers;
  // What Istio's validation warns about (settings that are ignored); shown in traces.
  std::vector<std::string> warnings;
};

struct RouteDestination {
  std::string host;   // short (relative to the VirtualService's namespace) or FQDN
  uint32_t port = 0;  // destination.port.number; 0 when unset
  std::string subset;
  uint32_t weight = 0;
};

// tls[].match[] and tcp[].match[] (sniHosts only in tls). sourceLabels, sourceNamespace and
// destinationSubnets are not kept: Istio's gateways ignore them (pilot/pkg/networking/core/
// gateway.go, l4SingleMatch looks at the port and the gateways only).
struct L4Match {
  std::vector<std::string> sni_hosts;
  uint32_t port = 0;                  // 0 matches every port
  std::vector<std::string> gateways;  // as written; empty: the VirtualService's own gateways
};

struct L4Route {
  std::vector<L4Match> match;
  std::vector<RouteDestination> route;
};

struct VirtualService {
  ObjectMeta meta;
  std::vector<std::string> hosts;
  std::vector<std::string> gateways;   // as written; empty means the reserved "mesh"
  std::vector<std::string> export_to;  // empty means "*"
  std::vector<L4Route> tls;
  std::vector<L4Route> tcp;
  // http[] routes: HTTP routing, which this gateway does not do; counted so that decisions
  // can say why such a VirtualService routes nothing here.
  size_t http_routes = 0;
  std::vector<std::string> warnings;
};

// A Kubernetes Secret with only the keys Istio's credentialName reads (tls.crt, tls.key,
// ca.crt, ca.crl, and the generic cert, key, cacert, crl), base64-decoded. Other keys are
// dropped when parsed, so no unrelated secret stays in memory.
struct Secret {
  ObjectMeta meta;
  std::string type;  // "kubernetes.io/tls", "Opaque", ...
  std::map<std::string, std::string> data;
};

// Everything one configuration source knows, before indexing.
struct ResourceSet {
  std::vector<Namespace> namespaces;
  std::vector<Pod> pods;
  std::vector<Service> services;
  std::vector<EndpointSlice> endpoint_slices;
  std::vector<PeerAuthentication> peer_authentications;
  std::vector<DestinationRule> destination_rules;
  std::vector<AuthorizationPolicy> authorization_policies;
  std::vector<Gateway> gateways;
  std::vector<VirtualService> virtual_services;
  std::vector<Secret> secrets;

  size_t size() const {
    return namespaces.size() + pods.size() + services.size() + endpoint_slices.size() +
           peer_authentications.size() + destination_rules.size() + authorization_policies.size() +
           gateways.size() + virtual_services.size() + secrets.size();
  }
  // Moves every object of `other` to the end of this set.
  void Append(ResourceSet&& other);
};

// Parses every document of `text` (YAML or JSON; a document may also be a `List` or `*List`
// with `items`) and appends the resources it knows to `out`. `source_name` prefixes line
// numbers in errors ("dir/a.yaml:12"). On error `out` may hold the documents before the bad
// one; callers that need all-or-nothing parse into a scratch set.
absl::Status AppendYamlResources(absl::string_view text, absl::string_view source_name,
                                 ResourceSet& out);

}  // namespace nodeward::policy
