// ResolveGatewayListeners: Istio's gateway merge (pilot/pkg/model/gateway.go MergeGateways) and
// the filter chains of each port (pilot/pkg/networking/core/gateway.go
// createGatewayTCPFilterChainOpts), for one gateway workload.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policy/gateway_decisions.h"
#include "policy/gateway_internal.h"
#include "policy/gateway_resources.h"

namespace nodeward::policy {
namespace {

template <typename T>
bool OldestFirst(const T* a, const T* b) {
  return std::tie(a->meta.creation_timestamp, a->meta.ns, a->meta.name) <
         std::tie(b->meta.creation_timestamp, b->meta.ns, b->meta.name);
}

std::string LabelsText(const Labels& labels) {
  std::vector<std::string> pairs;
  for (const auto& [key, value] : labels) pairs.push_back(absl::StrCat(key, "=", value));
  return pairs.empty() ? "{}" : absl::StrJoin(pairs, ",");
}

// "./host" is the Gateway's namespace, "*/host" is any ("host"), "*/*" is "*".
std::string SanitizedHost(const std::string& written, absl::string_view gateway_ns) {
  const ServerHost host = ParseServerHost(written, gateway_ns);
  if (host.ns == "*") return host.host;
  return absl::StrCat(host.ns, "/", host.host);
}

// The server's hosts as SNI patterns: namespaces stripped, "*" alone when any host is "*".
std::vector<std::string> SniHosts(const GatewayServer& server, absl::string_view gateway_ns) {
  std::vector<std::string> hosts;
  for (const std::string& written : server.hosts) {
    std::string host = ParseServerHost(written, gateway_ns).host;
    if (host == "*") return {"*"};
    if (std::find(hosts.begin(), hosts.end(), host) == hosts.end()) hosts.push_back(host);
  }
  return hosts;
}

bool VisibleTo(const VirtualService& service, absl::string_view ns) {
  if (service.export_to.empty()) return true;
  for (const std::string& target : service.export_to) {
    if (target == "*" || target == ns || (target == "." && service.meta.ns == ns)) return true;
  }
  return false;
}

// A match without gateways takes the VirtualService's, whose default is "mesh".
bool BindsTo(const VirtualService& service, const L4Match* match, absl::string_view gateway) {
  const std::vector<std::string>& names =
      match != nullptr && !match->gateways.empty() ? match->gateways : service.gateways;
  for (const std::string& name : names) {
    if (ResolveGatewayName(name, service.meta.ns) == gateway) return true;
  }
  return false;
}

bool NamesGateway(const VirtualService& service, absl::string_view gateway) {
  if (BindsTo(service, nullptr, gateway)) return true;
  for (const auto* routes : {&service.tls, &service.tcp}) {
    for (const L4Route& route : *routes) {
      for (const L4Match& match : route.match) {
        if (BindsTo(service, &match, gateway)) return true;
      }
    }
  }
  return false;
}

// Istio's pickMatchingGatewayHosts: a server host "ns/host" admits VirtualServices of ns only.
bool ReachesServer(const Snapshot& snapshot, const VirtualService& service,
                   const GatewayServer& server, absl::string_view gateway_ns) {
  for (const std::string& written : server.hosts) {
    const ServerHost host = ParseServerHost(written, gateway_ns);
    if (host.ns != "*" && host.ns != service.meta.ns) continue;
    for (const std::string& vs_host : service.hosts) {
      if (HostsOverlap(host.host, gateway_internal::Fqdn(snapshot, vs_host, service.meta.ns))) {
        return true;
      }
    }
  }
  return false;
}

bool L4Matches(const VirtualService& service, const L4Match& match, const GatewayServer& server,
               absl::string_view gateway) {
  return (match.port == 0 || match.port == server.port.number) && BindsTo(service, &match, gateway);
}

struct PortServers {
  ListenerKind kind = ListenerKind::kPlaintext;
  GatewayProtocol first_protocol = GatewayProtocol::kTcp;
  std::vector<GatewayFilterChain> servers;  // chains without routes yet
  std::set<std::string> tls_hosts;
};

class ListenerBuilder {
 public:
  ListenerBuilder(const Snapshot& snapshot, std::vector<const VirtualService*> services,
                  Trace& trace)
      : snapshot_(snapshot), services_(std::move(services)), trace_(trace) {}

  void Merge(const Gateway& gateway) {
    const std::string name = absl::StrCat(gateway.meta.ns, "/", gateway.meta.name);
    for (std::size_t i = 0; i < gateway.servers.size(); ++i) {
      const GatewayServer& server = gateway.servers[i];
      GatewayFilterChain chain;
      chain.gateway = &gateway;
      chain.server_index = i;
      chain.gateway_name = name;
      const std::string who = chain.Describe();
      const uint32_t number = server.port.number;
      auto [it, first] = ports_.try_emplace(number);
      PortServers& port = it->second;
      if (server.tls.has_value()) {
        std::vector<std::string> hosts;
        for (const std::string& host : server.hosts) {
          hosts.push_back(SanitizedHost(host, gateway.meta.ns));
        }
        std::vector<std::string> repeated;
        for (const std::string& host : hosts) {
          if (port.tls_hosts.count(host) > 0) repeated.push_back(host);
        }
        if (!repeated.empty()) {
          trace_.warnings.push_back(absl::StrCat(who, " is skipped: port ", number,
                                                 " already serves ", absl::StrJoin(repeated, ", "),
                                                 " over TLS"));
          continue;
        }
        port.tls_hosts.insert(hosts.begin(), hosts.end());
      }
      if (first) {
        port.kind =
            gateway_internal::IsTlsServer(server) ? ListenerKind::kTls : ListenerKind::kPlaintext;
        port.first_protocol = server.port.protocol;
      } else if (port.kind == ListenerKind::kPlaintext) {
        // Only plain HTTP servers share a port, and this gateway serves none of them.
        if (server.port.protocol != port.first_protocol ||
            server.port.protocol != GatewayProtocol::kHttp) {
          trace_.warnings.push_back(
              absl::StrCat(who, " is skipped: port ", number, " is already a plain-text ",
                           GatewayProtocolName(port.first_protocol), " port"));
          continue;
        }
      } else if (!server.tls.has_value()) {
        trace_.warnings.push_back(absl::StrCat(
            who, " is skipped: port ", number, " is a TLS port, told apart by SNI, and this ",
            GatewayProtocolName(server.port.protocol), " server has no TLS settings"));
        continue;
      }
      port.servers.push_back(std::move(chain));
    }
  }

  std::vector<GatewayListener> Build() {
    std::vector<GatewayListener> listeners;
    for (auto& [number, port] : ports_) {
      GatewayListener listener;
      listener.port = number;
      listener.kind = port.kind;
      std::set<std::string> passthrough_hosts;
      for (GatewayFilterChain& server : port.servers) {
        AddChains(std::move(server), listener, passthrough_hosts);
      }
      listeners.push_back(std::move(listener));
    }
    return listeners;
  }

 private:
  void AddChains(GatewayFilterChain server, GatewayListener& listener,
                 std::set<std::string>& passthrough_hosts) {
    const GatewayServer& config = server.server();
    const absl::string_view gateway_ns = server.gateway->meta.ns;
    server.sni_patterns = listener.kind == ListenerKind::kTls ? SniHosts(config, gateway_ns)
                                                              : std::vector<std::string>{"*"};
    if (gateway_internal::IsHttpServer(config) ||
        (config.tls.has_value() && config.tls->mode == ServerTlsMode::kAutoPassthrough)) {
      listener.chains.push_back(std::move(server));
      return;
    }
    const bool passthrough =
        config.tls.has_value() && config.tls->mode == ServerTlsMode::kPassthrough;
    bool routed = false;
    for (const VirtualService* service : services_) {
      if (!ReachesServer(snapshot_, *service, config, gateway_ns)) continue;
      if (passthrough) {
        routed |= AddPassthroughChains(server, *service, listener, passthrough_hosts);
        continue;
      }
      for (std::size_t r = 0; r < service->tcp.size() && !routed; ++r) {
        const L4Route& route = service->tcp[r];
        bool matches = route.match.empty() && BindsTo(*service, nullptr, server.gateway_name);
        for (const L4Match& match : route.match) {
          matches |= L4Matches(*service, match, config, server.gateway_name);
        }
        if (!matches) continue;
        GatewayFilterChain chain = server;
        chain.virtual_service = service;
        chain.route = &route;
        chain.route_name = absl::StrCat("tcp[", r, "]");
        listener.chains.push_back(std::move(chain));
        routed = true;
      }
      if (routed) break;  // Istio: the first VirtualService with a matching tcp route
    }
    if (!routed) {
      trace_.warnings.push_back(absl::StrCat(
          server.Describe(), " on port ", listener.port, " has no ", passthrough ? "tls" : "tcp",
          " route from a VirtualService bound to it, so it serves nothing"));
      listener.unrouted.push_back(std::move(server));
    }
  }

  bool AddPassthroughChains(const GatewayFilterChain& server, const VirtualService& service,
                            GatewayListener& listener, std::set<std::string>& hosts) {
    bool added = false;
    for (std::size_t r = 0; r < service.tls.size(); ++r) {
      for (std::size_t m = 0; m < service.tls[r].match.size(); ++m) {
        const L4Match& match = service.tls[r].match[m];
        if (!L4Matches(service, match, server.server(), server.gateway_name)) continue;
        const std::string route_name = absl::StrCat("tls[", r, "].match[", m, "]");
        std::vector<std::string> repeated;
        for (const std::string& sni : match.sni_hosts) {
          if (hosts.count(sni) > 0) repeated.push_back(sni);
        }
        if (!repeated.empty()) {
          trace_.warnings.push_back(
              absl::StrCat(DescribeObject("VirtualService", service.meta), " ", route_name,
                           " is skipped on port ", listener.port, ": SNI ",
                           absl::StrJoin(repeated, ", "), " is already routed there"));
          continue;
        }
        hosts.insert(match.sni_hosts.begin(), match.sni_hosts.end());
        GatewayFilterChain chain = server;
        chain.sni_patterns = match.sni_hosts;
        chain.virtual_service = &service;
        chain.route = &service.tls[r];
        chain.route_name = route_name;
        listener.chains.push_back(std::move(chain));
        added = true;
      }
    }
    return added;
  }

  const Snapshot& snapshot_;
  const std::vector<const VirtualService*> services_;
  Trace& trace_;
  std::map<uint32_t, PortServers> ports_;
};

}  // namespace

std::string GatewayFilterChain::Describe() const {
  return absl::StrCat(DescribeObject("Gateway", gateway->meta), " servers[", server_index, "]");
}

const GatewayListener* GatewayListeners::ForPort(uint32_t port) const {
  for (const GatewayListener& listener : listeners) {
    if (listener.port == port) return &listener;
  }
  return nullptr;
}

GatewayListeners ResolveGatewayListeners(const Snapshot& snapshot, const Pod& gateway,
                                         const GatewayOptions& options) {
  GatewayListeners result;
  Trace& trace = result.trace;
  const std::string workload = absl::StrCat("pod ", gateway.meta.ns, "/", gateway.meta.name);
  for (const Gateway& candidate : snapshot.resources().gateways) {
    const std::string name = DescribeObject("Gateway", candidate.meta);
    if (options.scope_to_namespace && candidate.meta.ns != gateway.meta.ns) {
      trace.steps.push_back(absl::StrCat(name, " is in another namespace than ", workload,
                                         " and Gateways are scoped to their namespace"));
      continue;
    }
    if (!SelectorMatches(candidate.selector, gateway.meta.labels)) {
      trace.steps.push_back(absl::StrCat(name, " does not select ", workload, " (selector ",
                                         LabelsText(candidate.selector), ")"));
      continue;
    }
    trace.steps.push_back(absl::StrCat(name, " selects ", workload, " (selector ",
                                       LabelsText(candidate.selector), ")"));
    result.gateways.push_back(&candidate);
  }
  std::sort(result.gateways.begin(), result.gateways.end(), OldestFirst<Gateway>);
  if (result.gateways.empty()) {
    trace.steps.push_back(absl::StrCat("no Gateway selects ", workload, " (labels ",
                                       LabelsText(gateway.meta.labels), "): it serves nothing"));
  }

  std::vector<const VirtualService*> services;
  for (const VirtualService& service : snapshot.resources().virtual_services) {
    bool bound = false;
    for (const Gateway* selected : result.gateways) {
      bound |= NamesGateway(service, absl::StrCat(selected->meta.ns, "/", selected->meta.name));
    }
    if (!bound) continue;
    if (!VisibleTo(service, gateway.meta.ns)) {
      trace.steps.push_back(absl::StrCat(DescribeObject("VirtualService", service.meta),
                                         " names a Gateway of ", workload,
                                         " but is not exported to namespace ", gateway.meta.ns));
      continue;
    }
    for (const std::string& warning : service.warnings) trace.warnings.push_back(warning);
    services.push_back(&service);
  }
  std::sort(services.begin(), services.end(), OldestFirst<VirtualService>);

  ListenerBuilder builder(snapshot, std::move(services), trace);
  for (const Gateway* selected : result.gateways) {
    for (const std::string& warning : selected->warnings) {
      trace.warnings.push_back(
          absl::StrCat(DescribeObject("Gateway", selected->meta), ": ", warning));
    }
    builder.Merge(*selected);
  }
  result.listeners = builder.Build();
  for (const GatewayListener& listener : result.listeners) {
    trace.steps.push_back(absl::StrCat(
        "port ", listener.port, ": ", listener.kind == ListenerKind::kTls ? "TLS" : "plain text",
        ", ", listener.chains.size(), " filter chain", listener.chains.size() == 1 ? "" : "s"));
  }
  return result;
}

}  // namespace nodeward::policy
