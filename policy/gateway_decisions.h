// The ingress gateway's decisions: pure functions of a Snapshot, each with a trace naming the
// Gateways and VirtualServices that decided, as decisions.h does for the mesh.
//
// Semantics are Istio's, read from pilot/pkg/model/gateway.go (MergeGateways) and
// pilot/pkg/networking/core/gateway.go (the listeners' filter chains):
//  - The Gateways whose selector matches the gateway workload's labels (any namespace unless
//    scope_to_namespace, Istio's PILOT_SCOPE_GATEWAY_TO_NAMESPACE) are merged oldest first.
//    On one port, TLS servers (HTTPS, TLS) share the port and are told apart by SNI; a TLS
//    server repeating a host already served on the port is skipped; a plain-text server (TCP,
//    HTTP) takes the port alone. Skipped servers are warnings in the trace.
//  - Each port has filter chains, matched by SNI as Envoy matches server_names: an exact name,
//    then the longest "*." suffix, then a chain without names ("*", also for no SNI). A
//    terminating server (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL) is one chain for its
//    hosts, routed by the first tcp route (VirtualServices oldest first) whose match fits the
//    port and gateway; a PASSTHROUGH server has one chain per tls route match, for its
//    sniHosts; an AUTO_PASSTHROUGH server routes SNIs of the form outbound_.PORT_._.HOST to
//    HOST:PORT for Istio mTLS clients (ALPN istio*). A server no route reaches has no chain.
//  - A VirtualService reaches a server when it names the Gateway (spec.gateways, or a match's
//    gateways), is exported to the gateway workload's namespace, its namespace is allowed by
//    one of the server's "ns/host" entries and one of its hosts overlaps that host.
//  - HTTP routing is not done here: HTTP servers, and HTTPS servers that terminate TLS, are
//    refused with that reason; a VirtualService's http routes are warned about.
//  - The destination (a Kubernetes Service, short names relative to the VirtualService's
//    namespace) is returned as the service address and port that DecideOutbound takes with the
//    gateway workload as the source: DestinationRules and auto mTLS apply toward it exactly as
//    for a pod.
// Pointers in results point into the snapshot and live as long as it does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/decisions.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {

struct GatewayOptions {
  // Istio's PILOT_SCOPE_GATEWAY_TO_NAMESPACE: a Gateway selects only gateway workloads in its
  // own namespace. Off by default, as in Istio.
  bool scope_to_namespace = false;
};

// One filter chain of a listener port.
struct GatewayFilterChain {
  const Gateway* gateway = nullptr;
  std::size_t server_index = 0;
  std::string gateway_name;  // "namespace/name", as VirtualServices name it
  // The SNIs it matches: exact names and "*.suffix" (see SniMatchRank); "*" matches any SNI
  // and none. AUTO_PASSTHROUGH: the hosts whose services an SNI may name.
  std::vector<std::string> sni_patterns;
  // The route: a tls route match (PASSTHROUGH) or a tcp route (terminating and TCP servers).
  // Null for HTTP chains.
  const VirtualService* virtual_service = nullptr;
  const L4Route* route = nullptr;
  std::string route_name;  // "tls[0].match[1]" or "tcp[2]"

  const GatewayServer& server() const { return gateway->servers[server_index]; }
  // "Gateway ns/name servers[i]"
  std::string Describe() const;
};

enum class ListenerKind { kPlaintext, kTls };  // kTls: clients start with a ClientHello

struct GatewayListener {
  uint32_t port = 0;
  ListenerKind kind = ListenerKind::kPlaintext;
  std::vector<GatewayFilterChain> chains;
  // Servers on this port that no route reaches, so they have no chain: what a refusal of an
  // SNI they would have matched names.
  std::vector<GatewayFilterChain> unrouted;
};

struct GatewayListeners {
  std::vector<const Gateway*> gateways;    // selecting the workload, in merge order
  std::vector<GatewayListener> listeners;  // ascending port
  Trace trace;
  const GatewayListener* ForPort(uint32_t port) const;
};

// The listeners a gateway workload (`gateway`: its namespace and labels) serves.
GatewayListeners ResolveGatewayListeners(const Snapshot& snapshot, const Pod& gateway,
                                         const GatewayOptions& options = {});

// The client's first flight, as agent/gateway's ClientHelloReader reads it.
struct GatewayConnection {
  std::optional<std::string> sni;  // nullopt: the ClientHello had none
  std::vector<std::string> alpn;
};

// The chain a TLS connection with `connection`'s SNI (and ALPN, for AUTO_PASSTHROUGH) is
// served by, or null. What the TLS context's certificate selection asks too.
const GatewayFilterChain* SelectFilterChain(const GatewayListener& listener,
                                            const GatewayConnection& connection);

enum class GatewayAction {
  kPassthrough,  // forward the client's bytes, TLS and all, to the destination
  kTerminate,    // complete the handshake with the server's TLS settings, then forward plaintext
  kTcp,          // a plain TCP server: forward the bytes
  kRefuse,
};
absl::string_view GatewayActionName(GatewayAction action);

enum class GatewayRefusal {
  kNone,
  kNoListener,              // nothing is served on the port
  kNoFilterChain,           // no server (or tls route) on the port matches the SNI
  kHttpNotSupported,        // an HTTP or TLS-terminating HTTPS server: HTTP routing
  kUnknownDestination,      // the route's host is not a Kubernetes Service
  kHeadlessDestination,     // the Service has no cluster IP
  kNoServicePort,           // the Service has no such TCP port
  kAmbiguousServicePort,    // no destination port given and the Service has several
  kSubsetNotSupported,      // a DestinationRule subset, which this gateway does not apply
  kBadAutoPassthroughName,  // AUTO_PASSTHROUGH: the SNI does not name a service of the server
};
// "none", "no_listener", "no_filter_chain", "http_not_supported", "unknown_destination",
// "headless_destination", "no_service_port", "ambiguous_service_port",
// "subset_not_supported", "bad_auto_passthrough_name".
absl::string_view GatewayRefusalName(GatewayRefusal refusal);

// Where the gateway sends the connection: what DecideOutbound takes, with the gateway
// workload as the source, to decide HBONE, TLS origination or plaintext.
struct GatewayDestination {
  std::string host;  // FQDN
  const Service* service = nullptr;
  IpAddress address;            // the Service's cluster IP
  uint32_t port = 0;            // the Service port
  std::size_t route_index = 0;  // which route[] entry (weighted choice)
};

struct GatewayDecision {
  GatewayAction action = GatewayAction::kRefuse;
  GatewayRefusal refusal = GatewayRefusal::kNone;
  std::string reason;  // one line, for logs and the CLI
  // The server that serves the connection, when one does.
  const Gateway* gateway = nullptr;
  const GatewayServer* server = nullptr;
  std::size_t server_index = 0;
  std::optional<ServerTlsMode> tls_mode;
  const VirtualService* virtual_service = nullptr;
  std::string route_name;
  std::optional<GatewayDestination> destination;
  Trace trace;
};

// What a connection on `listener` becomes. `weight_hint` picks among weighted destinations
// (hint modulo the weights' sum), as DecideOutbound's endpoint_hint picks an endpoint.
GatewayDecision DecideGateway(const Snapshot& snapshot, const GatewayListener& listener,
                              const GatewayConnection& connection, uint64_t weight_hint = 0);

// `nodewardctl policy explain --gateway PORT --sni HOST`: the gateway's decision and, when it
// forwards, the upstream decision DecideOutbound makes from `gateway`, in one trace.
struct GatewayExplanation {
  GatewayDecision decision;
  std::optional<OutboundDecision> upstream;
  Trace trace;
};
GatewayExplanation ExplainGateway(const Snapshot& snapshot, const Pod& gateway, uint32_t port,
                                  const GatewayConnection& connection, uint64_t hint = 0,
                                  const GatewayOptions& options = {});

}  // namespace nodeward::policy
