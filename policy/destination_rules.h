// Which DestinationRule a client uses for a service, as Istio decides it: PushContext's lookup
// (pilot/pkg/model/push_context.go destinationRule) finds the most specific host among the
// rules visible from the client's namespace (for a client in the root namespace, the root
// namespace's private rules), then among those the service's namespace exports to the client,
// then those the root namespace exports; SidecarScope.DestinationRule (pilot/pkg/model
// sidecar.go) then prefers, among the merged rules found, one whose workloadSelector selects
// the client, else the one without a selector. The port's TLS settings then come from the
// rule's trafficPolicy as the cluster builder reads them (pilot/pkg/networking/core: a
// portLevelSettings entry for the port replaces the rule-level tls, unset included).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/trace.h"

namespace nodeward::policy {

struct AppliedDestinationRule {
  // The merged rule that applies, named by the first rule merged into it; null when none.
  const DestinationRule* rule = nullptr;
  // Whose trafficPolicy is in force (the oldest merged rule that has one); null when none.
  const DestinationRule* traffic_policy = nullptr;
  std::vector<const DestinationRule*> merged;  // every rule merged into `rule`
  // TLS settings for the port; nullopt when the rule has none (auto mTLS applies).
  std::optional<ClientTlsSettings> tls;
  bool port_level = false;  // the settings came from portLevelSettings
  Trace trace;
};

// The DestinationRule `client` uses for `host` (an FQDN) on `port` (the service port) of a
// service in `service_ns`.
AppliedDestinationRule ResolveDestinationRule(const Snapshot& snapshot, const Pod& client,
                                              absl::string_view host, absl::string_view service_ns,
                                              uint32_t port);

// "ISTIO_MUTUAL sni=x" and the like, for traces.
std::string TlsSummary(const ClientTlsSettings& tls);

}  // namespace nodeward::policy
