// Istio's host-name and naming rules for Gateways and VirtualServices (the kinds themselves are
// in resources.h; their parsers, with Istio's validation, in gateway_resources.cc).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace nodeward::policy {

// Istio's host.Name rules (pkg/config/host/name.go) for FQDNs, "*.suffix" and "*".
// HostsOverlap: some name is matched by both (symmetric). HostSubsetOf: every name `a` matches,
// `b` matches too.
bool HostsOverlap(absl::string_view a, absl::string_view b);
bool HostSubsetOf(absl::string_view a, absl::string_view b);

// How well an SNI pattern of a listener's filter chain matches `sni`, as Envoy ranks
// server_names (an exact name, then the longest "*." suffix, then a chain without names):
// nullopt when it does not match; higher is more specific. "*" stands for the chain without
// names. `sni` is compared lowercased.
std::optional<std::size_t> SniMatchRank(absl::string_view pattern, absl::string_view sni);

// Gateway.servers[].hosts entry split into the namespaces whose VirtualServices may bind ("*"
// for any) and the host, as Istio's gateway merge reads it: "host" and "*/host" allow every
// namespace, "./host" the Gateway's own.
struct ServerHost {
  std::string ns;
  std::string host;
};
ServerHost ParseServerHost(absl::string_view written, absl::string_view gateway_namespace);

// VirtualService.gateways (or match gateways) entry as "namespace/name", or "mesh" for the
// reserved name: "name" is in the VirtualService's namespace, "name.ns.svc.cluster.local"
// (the old form) is ns/name.
std::string ResolveGatewayName(absl::string_view written, absl::string_view virtual_service_ns);

// DNS-1123 labels and Istio's wildcard domain: "*", "*.labels" or "labels", lowercase, at most
// 255 bytes. Empty when valid, else the problem.
std::string WildcardDomainProblem(absl::string_view domain);

}  // namespace nodeward::policy
