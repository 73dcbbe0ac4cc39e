#include "policy/gateway_decisions.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/gateway_internal.h"
#include "policy/gateway_resources.h"
#include "policy/trace.h"

namespace nodeward::policy {

namespace gateway_internal {

bool IsTlsServer(const GatewayServer& server) {
  return server.tls.has_value() && server.port.protocol != GatewayProtocol::kHttp;
}

bool IsHttpServer(const GatewayServer& server) {
  if (server.port.protocol == GatewayProtocol::kHttp) return true;
  return server.port.protocol == GatewayProtocol::kHttps && server.tls.has_value() &&
         server.tls->mode != ServerTlsMode::kPassthrough &&
         server.tls->mode != ServerTlsMode::kAutoPassthrough;
}

std::string Fqdn(const Snapshot& snapshot, absl::string_view host, absl::string_view ns) {
  if (host.find('.') != absl::string_view::npos || host.find('*') != absl::string_view::npos) {
    return std::string(host);
  }
  return absl::StrCat(host, ".", ns, ".svc.", snapshot.options().cluster_domain);
}

std::optional<AutoPassthroughName> ParseAutoPassthroughSni(absl::string_view sni) {
  std::vector<absl::string_view> parts = absl::StrSplit(sni, absl::MaxSplits('.', 3));
  if (parts.size() != 4 || parts[0] != "outbound_" || !absl::EndsWith(parts[1], "_") ||
      !absl::EndsWith(parts[2], "_") || parts[3].empty()) {
    return std::nullopt;
  }
  AutoPassthroughName name;
  if (!absl::SimpleAtoi(parts[1].substr(0, parts[1].size() - 1), &name.port) || name.port == 0 ||
      name.port > 65535) {
    return std::nullopt;
  }
  name.subset = std::string(parts[2].substr(0, parts[2].size() - 1));
  name.host = std::string(parts[3]);
  return name;
}

}  // namespace gateway_internal

namespace {

using gateway_internal::Fqdn;

// Istio's mTLS ALPNs (pilot/pkg/networking/core allIstioMtlsALPNs): what an AUTO_PASSTHROUGH
// chain requires of the client, so only mesh mTLS gets through it.
bool OffersIstioMtls(const GatewayConnection& connection) {
  for (const std::string& protocol : connection.alpn) {
    for (absl::string_view istio :
         {"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}) {
      if (protocol == istio) return true;
    }
  }
  return false;
}

bool IsAutoPassthrough(const GatewayFilterChain& chain) {
  const GatewayServer& server = chain.server();
  return server.tls.has_value() && server.tls->mode == ServerTlsMode::kAutoPassthrough;
}

std::optional<std::size_t> ChainRank(const GatewayFilterChain& chain,
                                     const GatewayConnection& connection) {
  if (IsAutoPassthrough(chain)) {
    if (!connection.sni.has_value() || !OffersIstioMtls(connection)) return std::nullopt;
    auto name = gateway_internal::ParseAutoPassthroughSni(*connection.sni);
    if (!name.has_value()) return std::nullopt;
    for (const std::string& host : chain.sni_patterns) {
      // The chain names each such SNI exactly, as Istio's per-service chains do.
      if (HostSubsetOf(name->host, host)) return SniMatchRank(*connection.sni, *connection.sni);
    }
    return std::nullopt;
  }
  std::optional<std::size_t> best;
  for (const std::string& pattern : chain.sni_patterns) {
    std::optional<std::size_t> rank =
        connection.sni.has_value()
            ? SniMatchRank(pattern, *connection.sni)
            : (pattern == "*" ? std::optional<std::size_t>(0) : std::nullopt);
    if (rank.has_value() && (!best.has_value() || *rank > *best)) best = rank;
  }
  return best;
}

std::string SniText(const GatewayConnection& connection) {
  return connection.sni.has_value() ? absl::StrCat("SNI ", *connection.sni) : std::string("no SNI");
}

std::string ServerSummary(const GatewayServer& server) {
  std::string text =
      absl::StrCat(server.port.protocol_name, " hosts [", absl::StrJoin(server.hosts, ", "), "]");
  if (server.tls.has_value()) absl::StrAppend(&text, " tls ", ServerTlsModeName(server.tls->mode));
  return text;
}

GatewayDecision Finish(GatewayDecision decision, GatewayAction action, GatewayRefusal refusal,
                       std::string reason) {
  decision.action = action;
  decision.refusal = refusal;
  decision.reason = std::move(reason);
  decision.trace.steps.push_back(
      absl::StrCat("decision: ", GatewayActionName(action), ": ", decision.reason));
  return decision;
}

GatewayDecision Refuse(GatewayDecision decision, GatewayRefusal refusal, std::string reason) {
  return Finish(std::move(decision), GatewayAction::kRefuse, refusal, std::move(reason));
}

// The route[] entry `hint` falls on, each weighing its weight (a single one takes all).
std::size_t PickWeighted(const std::vector<RouteDestination>& route, uint64_t hint) {
  if (route.size() == 1) return 0;
  uint64_t total = 0;
  for (const RouteDestination& destination : route) total += destination.weight;
  if (total == 0) return 0;  // validation refuses this; stay defined anyway
  uint64_t point = hint % total;
  for (std::size_t i = 0; i < route.size(); ++i) {
    if (point < route[i].weight) return i;
    point -= route[i].weight;
  }
  return route.size() - 1;
}

struct Resolution {
  std::optional<GatewayDestination> destination;
  GatewayRefusal refusal = GatewayRefusal::kNone;
  std::string reason;
};

Resolution ResolveDestination(const Snapshot& snapshot, const std::string& fqdn, uint32_t port,
                              Trace& trace) {
  Resolution result;
  const std::string suffix = absl::StrCat(".svc.", snapshot.options().cluster_domain);
  std::vector<absl::string_view> labels;
  if (absl::EndsWith(fqdn, suffix)) {
    labels = absl::StrSplit(absl::string_view(fqdn).substr(0, fqdn.size() - suffix.size()), '.');
  }
  const Service* service =
      labels.size() == 2 ? snapshot.FindService(labels[1], labels[0]) : nullptr;
  if (service == nullptr) {
    result.refusal = GatewayRefusal::kUnknownDestination;
    result.reason = absl::StrCat("destination ", fqdn,
                                 " is not a Kubernetes Service this gateway knows (hosts are "
                                 "name, or name.namespace.svc",
                                 suffix.substr(4), "; ServiceEntry hosts are not supported)");
    return result;
  }
  const std::string service_name = DescribeObject("Service", service->meta);
  if (service->cluster_ips.empty()) {
    result.refusal = GatewayRefusal::kHeadlessDestination;
    result.reason = absl::StrCat(service_name,
                                 " is headless (no cluster IP) and cannot be a "
                                 "gateway destination");
    return result;
  }
  const ServicePort* chosen = nullptr;
  std::vector<uint32_t> tcp_ports;
  for (const ServicePort& candidate : service->ports) {
    if (candidate.protocol != "TCP") continue;
    tcp_ports.push_back(candidate.port);
    if (candidate.port == port) chosen = &candidate;
  }
  if (port == 0) {
    // Istio: a Service with a single port needs no destination.port.
    if (tcp_ports.size() != 1) {
      result.refusal = GatewayRefusal::kAmbiguousServicePort;
      result.reason =
          absl::StrCat("the route names no destination port and ", service_name, " has ",
                       tcp_ports.size(), " TCP ports [", absl::StrJoin(tcp_ports, ", "), "]");
      return result;
    }
    port = tcp_ports[0];
  } else if (chosen == nullptr) {
    result.refusal = GatewayRefusal::kNoServicePort;
    result.reason = absl::StrCat(service_name, " has no TCP port ", port, " (it has [",
                                 absl::StrJoin(tcp_ports, ", "), "])");
    return result;
  }
  result.destination = GatewayDestination{fqdn, service, service->cluster_ips.front(), port};
  trace.steps.push_back(absl::StrCat("destination ", fqdn, " is ", service_name, " at ",
                                     service->cluster_ips.front().ToString(), ":", port));
  return result;
}

GatewayDecision DecideAutoPassthrough(const Snapshot& snapshot, GatewayDecision decision,
                                      const GatewayConnection& connection) {
  auto name = gateway_internal::ParseAutoPassthroughSni(*connection.sni);
  decision.trace.steps.push_back(absl::StrCat("AUTO_PASSTHROUGH: ", *connection.sni, " names ",
                                              name->host, " port ", name->port));
  if (!name->subset.empty()) {
    return Refuse(std::move(decision), GatewayRefusal::kSubsetNotSupported,
                  absl::StrCat("the SNI asks for subset ", name->subset,
                               ": DestinationRule subsets are not applied by this gateway"));
  }
  Resolution resolved = ResolveDestination(snapshot, name->host, name->port, decision.trace);
  if (!resolved.destination.has_value()) {
    GatewayRefusal refusal = resolved.refusal == GatewayRefusal::kUnknownDestination
                                 ? GatewayRefusal::kBadAutoPassthroughName
                                 : resolved.refusal;
    return Refuse(std::move(decision), refusal, resolved.reason);
  }
  std::string reason = absl::StrCat("AUTO_PASSTHROUGH to ", resolved.destination->host, ":",
                                    resolved.destination->port);
  decision.destination = std::move(resolved.destination);
  return Finish(std::move(decision), GatewayAction::kPassthrough, GatewayRefusal::kNone,
                std::move(reason));
}

}  // namespace

absl::string_view GatewayActionName(GatewayAction action) {
  switch (action) {
    case GatewayAction::kPassthrough:
      return "PASSTHROUGH";
    case GatewayAction::kTerminate:
      return "TERMINATE";
    case GatewayAction::kTcp:
      return "TCP";
    case GatewayAction::kRefuse:
      return "REFUSE";
  }
  return "UNKNOWN";
}

absl::string_view GatewayRefusalName(GatewayRefusal refusal) {
  switch (refusal) {
    case GatewayRefusal::kNone:
      return "none";
    case GatewayRefusal::kNoListener:
      return "no_listener";
    case GatewayRefusal::kNoFilterChain:
      return "no_filter_chain";
    case GatewayRefusal::kHttpNotSupported:
      return "http_not_supported";
    case GatewayRefusal::kUnknownDestination:
      return "unknown_destination";
    case GatewayRefusal::kHeadlessDestination:
      return "headless_destination";
    case GatewayRefusal::kNoServicePort:
      return "no_service_port";
    case GatewayRefusal::kAmbiguousServicePort:
      return "ambiguous_service_port";
    case GatewayRefusal::kSubsetNotSupported:
      return "subset_not_supported";
    case GatewayRefusal::kBadAutoPassthroughName:
      return "bad_auto_passthrough_name";
  }
  return "unknown";
}

const GatewayFilterChain* SelectFilterChain(const GatewayListener& listener,
                                            const GatewayConnection& connection) {
  const GatewayFilterChain* best = nullptr;
  std::size_t best_rank = 0;
  for (const GatewayFilterChain& chain : listener.chains) {
    std::optional<std::size_t> rank = ChainRank(chain, connection);
    // Ties go to the earlier chain: the older Gateway, then the older VirtualService.
    if (rank.has_value() && (best == nullptr || *rank > best_rank)) {
      best = &chain;
      best_rank = *rank;
    }
  }
  return best;
}

GatewayDecision DecideGateway(const Snapshot& snapshot, const GatewayListener& listener,
                              const GatewayConnection& connection, uint64_t weight_hint) {
  GatewayDecision decision;
  Trace& trace = decision.trace;
  const bool tls = listener.kind == ListenerKind::kTls;
  trace.steps.push_back(absl::StrCat("connection to gateway port ", listener.port, " (",
                                     tls ? "TLS" : "plain text", tls ? "" : ")",
                                     tls ? absl::StrCat(", ", SniText(connection), ")") : ""));
  const GatewayFilterChain* chain =
      tls ? SelectFilterChain(listener, connection)
          : (listener.chains.empty() ? nullptr : &listener.chains.front());
  if (chain == nullptr) {
    std::string reason = absl::StrCat("no server on port ", listener.port, " serves ",
                                      tls ? SniText(connection) : std::string("this connection"));
    for (const GatewayFilterChain& unrouted : listener.unrouted) {
      if (!tls || ChainRank(unrouted, connection).has_value()) {
        absl::StrAppend(&reason, "; ", unrouted.Describe(),
                        " would, but no VirtualService routes it");
        trace.deciding.push_back(DescribeObject("Gateway", unrouted.gateway->meta));
      }
    }
    return Refuse(std::move(decision), GatewayRefusal::kNoFilterChain, std::move(reason));
  }
  const GatewayServer& server = chain->server();
  decision.gateway = chain->gateway;
  decision.server = &server;
  decision.server_index = chain->server_index;
  if (server.tls.has_value()) decision.tls_mode = server.tls->mode;
  trace.deciding.push_back(DescribeObject("Gateway", chain->gateway->meta));
  trace.steps.push_back(absl::StrCat(
      "served by ", chain->Describe(), " (", ServerSummary(server), ")",
      tls ? absl::StrCat(", matching [", absl::StrJoin(chain->sni_patterns, ", "), "]") : ""));

  if (gateway_internal::IsHttpServer(server)) {
    return Refuse(std::move(decision), GatewayRefusal::kHttpNotSupported,
                  absl::StrCat(chain->Describe(), " is an ", server.port.protocol_name,
                               " server, which routes by HTTP (VirtualService http routes); the "
                               "nodeward gateway does not route HTTP: use protocol TLS with tcp "
                               "routes, or PASSTHROUGH with tls routes"));
  }
  if (IsAutoPassthrough(*chain))
    return DecideAutoPassthrough(snapshot, std::move(decision), connection);

  const VirtualService& service = *chain->virtual_service;
  decision.virtual_service = &service;
  decision.route_name = chain->route_name;
  trace.deciding.push_back(DescribeObject("VirtualService", service.meta));
  const std::size_t index = PickWeighted(chain->route->route, weight_hint);
  const RouteDestination& target = chain->route->route[index];
  trace.steps.push_back(
      absl::StrCat("route ", DescribeObject("VirtualService", service.meta), " ", chain->route_name,
                   chain->route->route.size() > 1
                       ? absl::StrCat(": route[", index, "] of ", chain->route->route.size(),
                                      " (weight ", target.weight, ")")
                       : std::string()));
  if (!target.subset.empty()) {
    return Refuse(
        std::move(decision), GatewayRefusal::kSubsetNotSupported,
        absl::StrCat(DescribeObject("VirtualService", service.meta), " ", chain->route_name,
                     " routes to subset ", target.subset, " of ", target.host,
                     ": DestinationRule subsets are not applied by this gateway"));
  }
  Resolution resolved = ResolveDestination(snapshot, Fqdn(snapshot, target.host, service.meta.ns),
                                           target.port, trace);
  if (!resolved.destination.has_value()) {
    return Refuse(std::move(decision), resolved.refusal, resolved.reason);
  }
  resolved.destination->route_index = index;
  decision.destination = std::move(resolved.destination);
  const std::string where =
      absl::StrCat(decision.destination->host, ":", decision.destination->port);
  if (!server.tls.has_value()) {
    return Finish(std::move(decision), GatewayAction::kTcp, GatewayRefusal::kNone,
                  absl::StrCat("TCP to ", where));
  }
  if (server.tls->mode == ServerTlsMode::kPassthrough) {
    return Finish(std::move(decision), GatewayAction::kPassthrough, GatewayRefusal::kNone,
                  absl::StrCat("PASSTHROUGH by SNI to ", where));
  }
  return Finish(std::move(decision), GatewayAction::kTerminate, GatewayRefusal::kNone,
                absl::StrCat(ServerTlsModeName(server.tls->mode), " TLS ends here, then ", where));
}

GatewayExplanation ExplainGateway(const Snapshot& snapshot, const Pod& gateway, uint32_t port,
                                  const GatewayConnection& connection, uint64_t hint,
                                  const GatewayOptions& options) {
  GatewayExplanation result;
  GatewayListeners listeners = ResolveGatewayListeners(snapshot, gateway, options);
  AppendTrace(result.trace, listeners.trace, "");
  const GatewayListener* listener = listeners.ForPort(port);
  if (listener == nullptr) {
    result.decision = Refuse(GatewayDecision{}, GatewayRefusal::kNoListener,
                             absl::StrCat("no Gateway server of this workload is on port ", port));
    AppendTrace(result.trace, result.decision.trace, "");
    return result;
  }
  result.decision = DecideGateway(snapshot, *listener, connection, hint);
  AppendTrace(result.trace, result.decision.trace, "");
  if (!result.decision.destination.has_value() ||
      result.decision.action == GatewayAction::kRefuse) {
    return result;
  }
  const GatewayDestination& destination = *result.decision.destination;
  result.upstream = DecideOutbound(snapshot, gateway, destination.address, destination.port, hint);
  AppendTrace(result.trace, result.upstream->trace, "upstream: ");
  const OutboundAction upstream = result.upstream->action;
  if (result.decision.action == GatewayAction::kPassthrough) {
    if (upstream == OutboundAction::kHbone) {
      result.trace.steps.push_back(
          "the client's TLS is carried unchanged inside the mesh mTLS tunnel (double "
          "encryption): the destination's own TLS server terminates it");
    } else if (upstream == OutboundAction::kTlsOrigination) {
      result.trace.steps.push_back(
          "the client's TLS is sent inside the TLS the DestinationRule originates (double "
          "encryption): the destination terminates the outer TLS, its application the client's");
    }
  } else if (result.decision.action == GatewayAction::kTerminate &&
             upstream == OutboundAction::kPlaintext) {
    result.trace.warnings.push_back(
        absl::StrCat("the client's TLS ends at the gateway and the connection to ",
                     destination.host, " is plain text: ", result.upstream->reason));
  }
  return result;
}

}  // namespace nodeward::policy
