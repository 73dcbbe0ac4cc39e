// The VirtualService kind: its L4 routes (tls by SNI, tcp by port) with the checks of Istio's
// ValidateVirtualService, errors naming the field. HTTP routes are counted, not kept.
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/gateway_kind_parsers.h"
#include "policy/gateway_resources.h"

namespace nodeward::policy::internal {
namespace {

absl::Status ValidateGatewayNames(const Context& ctx, const YAML::Node& at, absl::string_view field,
                                  const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (name == "mesh") continue;
    std::vector<absl::string_view> parts = absl::StrSplit(name, absl::MaxSplits('/', 1));
    std::string problem;
    if (parts.size() == 2) {
      problem = parts[0].empty() || parts[0] == "*" ? "needs a namespace before \"/\""
                                                    : WildcardDomainProblem(parts[0]);
      if (problem.empty()) problem = WildcardDomainProblem(parts[1]);
    } else {
      problem = WildcardDomainProblem(name);
    }
    if (problem.empty() && name.find('*') != std::string::npos) problem = "cannot be a wildcard";
    if (!problem.empty()) {
      return ctx.Error(at, field, absl::StrCat("gateway \"", name, "\": ", problem));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RouteDestination> ParseDestination(const Context& ctx, const YAML::Node& item,
                                                  const std::string& field) {
  RouteDestination destination;
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> target,
                      Map(ctx, item, "destination", field + ".destination"));
  if (!target.has_value()) return ctx.Error(item, field + ".destination", "is required");
  NW_ASSIGN_OR_RETURN(destination.host, String(ctx, *target, "host", field + ".destination.host"));
  if (destination.host.empty() || destination.host == "*") {
    return ctx.Error(*target, field + ".destination.host",
                     absl::StrCat("invalid destination host \"", destination.host, "\""));
  }
  if (std::string problem = WildcardDomainProblem(destination.host); !problem.empty()) {
    return ctx.Error(Child(*target, "host"), field + ".destination.host", problem);
  }
  NW_ASSIGN_OR_RETURN(destination.subset,
                      String(ctx, *target, "subset", field + ".destination.subset"));
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> port,
                      Map(ctx, *target, "port", field + ".destination.port"));
  if (port.has_value()) {
    YAML::Node number = Child(*port, "number");
    if (Present(number)) {
      NW_ASSIGN_OR_RETURN(destination.port,
                          PortNumber(ctx, number, field + ".destination.port.number"));
    }
  }
  YAML::Node weight = Child(item, "weight");
  if (Present(weight)) {
    int32_t value = -1;
    if (!weight.IsScalar() || !absl::SimpleAtoi(weight.Scalar(), &value) || value < 0) {
      return ctx.Error(weight, field + ".weight", "must be a number, 0 or more");
    }
    destination.weight = static_cast<uint32_t>(value);
  }
  return destination;
}

absl::Status ParseRoute(const Context& ctx, const YAML::Node& item, const std::string& field,
                        bool tls, const VirtualService& service, L4Route& route) {
  NW_RETURN_IF_ERROR(
      ForEach(ctx, item, "match", field + ".match",
              [&](const YAML::Node& m, const std::string& match_field) -> absl::Status {
                L4Match match;
                if (tls) {
                  NW_ASSIGN_OR_RETURN(match.sni_hosts,
                                      StringList(ctx, m, "sniHosts", match_field + ".sniHosts"));
                  if (match.sni_hosts.empty()) {
                    return ctx.Error(m, match_field + ".sniHosts",
                                     "a TLS match must have at least one SNI host");
                  }
                  for (const std::string& sni : match.sni_hosts) {
                    if (std::string problem = WildcardDomainProblem(sni); !problem.empty()) {
                      return ctx.Error(Child(m, "sniHosts"), match_field + ".sniHosts", problem);
                    }
                    bool covered = false;
                    for (const std::string& host : service.hosts)
                      covered |= HostSubsetOf(sni, host);
                    if (!covered) {
                      return ctx.Error(Child(m, "sniHosts"), match_field + ".sniHosts",
                                       absl::StrCat("the SNI host \"", sni,
                                                    "\" is not a match on any of "
                                                    "the hosts [",
                                                    absl::StrJoin(service.hosts, ", "), "]"));
                    }
                  }
                }
                YAML::Node port = Child(m, "port");
                if (Present(port)) {
                  NW_ASSIGN_OR_RETURN(match.port, PortNumber(ctx, port, match_field + ".port"));
                }
                NW_ASSIGN_OR_RETURN(match.gateways,
                                    StringList(ctx, m, "gateways", match_field + ".gateways"));
                NW_RETURN_IF_ERROR(ValidateGatewayNames(ctx, Child(m, "gateways"),
                                                        match_field + ".gateways", match.gateways));
                route.match.push_back(std::move(match));
                return absl::OkStatus();
              }));
  if (tls && route.match.empty()) {
    return ctx.Error(item, field + ".match", "a TLS route must have at least one match condition");
  }
  NW_RETURN_IF_ERROR(ForEach(ctx, item, "route", field + ".route",
                             [&](const YAML::Node& r, const std::string& route_field) {
                               absl::StatusOr<RouteDestination> destination =
                                   ParseDestination(ctx, r, route_field);
                               if (!destination.ok()) return destination.status();
                               route.route.push_back(*std::move(destination));
                               return absl::OkStatus();
                             }));
  if (route.route.empty()) {
    return ctx.Error(item, field + ".route",
                     absl::StrCat(tls ? "a TLS" : "a TCP", " route needs a destination"));
  }
  uint64_t total = 0;
  for (const RouteDestination& destination : route.route) total += destination.weight;
  // Modern Istio weighs destinations relative to their sum, which only must not be zero.
  if (route.route.size() > 1 && total == 0) {
    return ctx.Error(item, field + ".route", "total destination weight = 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseVirtualService(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  VirtualService service;
  NW_ASSIGN_OR_RETURN(service.meta, Metadata(ctx, object, "VirtualService", /*namespaced=*/true));
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> spec, Map(ctx, object, "spec", "spec"));
  YAML::Node node = spec.value_or(YAML::Node(YAML::NodeType::Undefined));
  NW_ASSIGN_OR_RETURN(service.hosts, StringList(ctx, node, "hosts", "spec.hosts"));
  if (service.hosts.empty()) {
    return ctx.Error(object, "spec.hosts", "a virtual service must have at least one host");
  }
  for (const std::string& host : service.hosts) {
    if (std::string problem = WildcardDomainProblem(host);
        !problem.empty() && !IpAddress::Parse(host).ok()) {
      return ctx.Error(Child(node, "hosts"), "spec.hosts", problem);
    }
  }
  NW_ASSIGN_OR_RETURN(service.gateways, StringList(ctx, node, "gateways", "spec.gateways"));
  NW_RETURN_IF_ERROR(
      ValidateGatewayNames(ctx, Child(node, "gateways"), "spec.gateways", service.gateways));
  NW_ASSIGN_OR_RETURN(service.export_to, StringList(ctx, node, "exportTo", "spec.exportTo"));
  for (const std::string& target : service.export_to) {
    if (target != "." && target != "*" && target != "~" && !WildcardDomainProblem(target).empty()) {
      return ctx.Error(Child(node, "exportTo"), "spec.exportTo",
                       absl::StrCat("\"", target, "\" is not \".\", \"*\", \"~\" or a namespace"));
    }
  }
  YAML::Node http = Child(node, "http");
  if (Present(http)) {
    if (!http.IsSequence()) return ctx.Error(http, "spec.http", "expected a list");
    service.http_routes = http.size();
  }
  for (bool tls : {true, false}) {
    const char* key = tls ? "tls" : "tcp";
    NW_RETURN_IF_ERROR(ForEach(ctx, node, key, absl::StrCat("spec.", key),
                               [&](const YAML::Node& item, const std::string& field) {
                                 L4Route route;
                                 NW_RETURN_IF_ERROR(
                                     ParseRoute(ctx, item, field, tls, service, route));
                                 (tls ? service.tls : service.tcp).push_back(std::move(route));
                                 return absl::OkStatus();
                               }));
  }
  if (service.http_routes == 0 && service.tls.empty() && service.tcp.empty()) {
    return ctx.Error(object, "spec", "http, tcp or tls must be provided in virtual service");
  }
  if (service.http_routes > 0) {
    service.warnings.push_back(absl::StrCat(
        DescribeObject("VirtualService", service.meta), ": its ", service.http_routes,
        " http route(s) are not applied by the nodeward gateway, which routes TLS by SNI (tls) "
        "and TCP by port (tcp) only"));
  }
  out.virtual_services.push_back(std::move(service));
  return absl::OkStatus();
}

}  // namespace nodeward::policy::internal
