// PeerAuthentication (security.istio.io) and DestinationRule (networking.istio.io): the fields
// that decide mTLS modes and client TLS, checked as Istio's own validation checks them.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "policy/kind_parsers.h"

namespace nodeward::policy::internal {
namespace {

absl::StatusOr<MtlsMode> ParseMtlsMode(const Context& ctx, const YAML::Node& map,
                                       absl::string_view field) {
  NW_ASSIGN_OR_RETURN(std::string mode, String(ctx, map, "mode", field));
  if (mode.empty() || mode == "UNSET") return MtlsMode::kUnset;
  if (mode == "DISABLE") return MtlsMode::kDisable;
  if (mode == "PERMISSIVE") return MtlsMode::kPermissive;
  if (mode == "STRICT") return MtlsMode::kStrict;
  return ctx.Error(
      Child(map, "mode"), field,
      absl::StrCat("unknown mode \"", mode, "\" (expected UNSET, DISABLE, PERMISSIVE or STRICT)"));
}

absl::StatusOr<std::optional<ClientTlsSettings>> ParseClientTls(const Context& ctx,
                                                                const YAML::Node& parent,
                                                                absl::string_view field) {
  YAML::Node node = Child(parent, "tls");
  if (!Present(node)) return std::optional<ClientTlsSettings>();
  if (!node.IsMap()) return ctx.Error(node, field, "expected a map");
  ClientTlsSettings tls;
  std::string prefix = absl::StrCat(field, ".");
  NW_ASSIGN_OR_RETURN(std::string mode, String(ctx, node, "mode", prefix + "mode"));
  if (mode.empty() || mode == "DISABLE") {
    tls.mode = TlsMode::kDisable;
  } else if (mode == "SIMPLE") {
    tls.mode = TlsMode::kSimple;
  } else if (mode == "MUTUAL") {
    tls.mode = TlsMode::kMutual;
  } else if (mode == "ISTIO_MUTUAL") {
    tls.mode = TlsMode::kIstioMutual;
  } else {
    return ctx.Error(Child(node, "mode"), prefix + "mode",
                     absl::StrCat("unknown mode \"", mode,
                                  "\" (expected DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)"));
  }
  NW_ASSIGN_OR_RETURN(tls.client_certificate,
                      String(ctx, node, "clientCertificate", prefix + "clientCertificate"));
  NW_ASSIGN_OR_RETURN(tls.private_key, String(ctx, node, "privateKey", prefix + "privateKey"));
  NW_ASSIGN_OR_RETURN(tls.ca_certificates,
                      String(ctx, node, "caCertificates", prefix + "caCertificates"));
  NW_ASSIGN_OR_RETURN(tls.subject_alt_names,
                      StringList(ctx, node, "subjectAltNames", prefix + "subjectAltNames"));
  NW_ASSIGN_OR_RETURN(tls.sni, String(ctx, node, "sni", prefix + "sni"));
  NW_ASSIGN_OR_RETURN(std::optional<bool> skip,
                      Bool(ctx, node, "insecureSkipVerify", prefix + "insecureSkipVerify"));
  tls.insecure_skip_verify = skip.value_or(false);
  NW_ASSIGN_OR_RETURN(tls.ca_crl, String(ctx, node, "caCrl", prefix + "caCrl"));
  NW_ASSIGN_OR_RETURN(tls.credential_name,
                      String(ctx, node, "credentialName", prefix + "credentialName"));
  // Istio's own validation of ClientTLSSettings.
  if (!tls.credential_name.empty() && (!tls.client_certificate.empty() ||
                                       !tls.private_key.empty() || !tls.ca_certificates.empty())) {
    return ctx.Error(node, field,
                     "credentialName cannot be combined with clientCertificate, privateKey or "
                     "caCertificates");
  }
  if (tls.mode == TlsMode::kMutual && tls.credential_name.empty() &&
      (tls.client_certificate.empty() || tls.private_key.empty())) {
    return ctx.Error(node, field,
                     "MUTUAL needs clientCertificate and privateKey (or credentialName)");
  }
  return std::optional<ClientTlsSettings>(std::move(tls));
}

}  // namespace

absl::Status ParsePeerAuthentication(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  PeerAuthentication policy;
  NW_ASSIGN_OR_RETURN(policy.meta,
                      Metadata(ctx, object, "PeerAuthentication", /*namespaced=*/true));
  YAML::Node spec = Child(object, "spec");
  if (Present(spec) && !spec.IsMap()) return ctx.Error(spec, "spec", "expected a map");
  YAML::Node selector = Child(spec, "selector");
  if (Present(selector) && !selector.IsMap()) {
    return ctx.Error(selector, "spec.selector", "expected a map");
  }
  NW_ASSIGN_OR_RETURN(std::optional<Labels> match,
                      LabelMap(ctx, selector, "matchLabels", "spec.selector.matchLabels"));
  if (match.has_value() && !match->empty()) policy.selector = std::move(match);
  YAML::Node mtls = Child(spec, "mtls");
  if (Present(mtls) && !mtls.IsMap()) return ctx.Error(mtls, "spec.mtls", "expected a map");
  NW_ASSIGN_OR_RETURN(policy.mode, ParseMtlsMode(ctx, mtls, "spec.mtls.mode"));
  YAML::Node ports = Child(spec, "portLevelMtls");
  if (Present(ports)) {
    if (!ports.IsMap()) return ctx.Error(ports, "spec.portLevelMtls", "expected a map");
    for (const auto& entry : ports) {
      NW_ASSIGN_OR_RETURN(uint32_t port, PortNumber(ctx, entry.first, "spec.portLevelMtls key"));
      std::string field = absl::StrCat("spec.portLevelMtls[", port, "]");
      if (Present(entry.second) && !entry.second.IsMap()) {
        return ctx.Error(entry.second, field, "expected a map");
      }
      NW_ASSIGN_OR_RETURN(MtlsMode mode, ParseMtlsMode(ctx, entry.second, field + ".mode"));
      policy.port_level[port] = mode;
    }
  }
  out.peer_authentications.push_back(std::move(policy));
  return absl::OkStatus();
}

absl::Status ParseDestinationRule(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  DestinationRule rule;
  NW_ASSIGN_OR_RETURN(rule.meta, Metadata(ctx, object, "DestinationRule", /*namespaced=*/true));
  YAML::Node spec = Child(object, "spec");
  if (!Present(spec) || !spec.IsMap()) return ctx.Error(object, "spec", "missing or not a map");
  NW_ASSIGN_OR_RETURN(rule.host, String(ctx, spec, "host", "spec.host"));
  if (rule.host.empty()) return ctx.Error(spec, "spec.host", "missing");
  if (rule.host.find('*') != std::string::npos && rule.host != "*" &&
      (rule.host.rfind("*.", 0) != 0 || rule.host.find('*', 1) != std::string::npos)) {
    return ctx.Error(Child(spec, "host"), "spec.host",
                     absl::StrCat("\"", rule.host, "\": a wildcard must be a leading \"*.\""));
  }
  NW_ASSIGN_OR_RETURN(rule.export_to, StringList(ctx, spec, "exportTo", "spec.exportTo"));
  for (const std::string& target : rule.export_to) {
    if (target.empty()) {
      return ctx.Error(Child(spec, "exportTo"), "spec.exportTo", "an entry is empty");
    }
    // "~" hides the rule from every namespace; with anything else it would mean nothing.
    if (target == "~" && rule.export_to.size() > 1) {
      return ctx.Error(Child(spec, "exportTo"), "spec.exportTo",
                       "\"~\" (exported nowhere) cannot be combined with other entries");
    }
  }
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> selector,
                      Map(ctx, spec, "workloadSelector", "spec.workloadSelector"));
  if (selector.has_value()) {
    NW_ASSIGN_OR_RETURN(
        std::optional<Labels> labels,
        LabelMap(ctx, *selector, "matchLabels", "spec.workloadSelector.matchLabels"));
    rule.workload_selector = labels.value_or(Labels());
  }
  YAML::Node traffic = Child(spec, "trafficPolicy");
  if (Present(traffic) && !traffic.IsMap()) {
    return ctx.Error(traffic, "spec.trafficPolicy", "expected a map");
  }
  rule.has_traffic_policy = Present(traffic);
  NW_ASSIGN_OR_RETURN(rule.tls, ParseClientTls(ctx, traffic, "spec.trafficPolicy.tls"));
  NW_RETURN_IF_ERROR(
      ForEach(ctx, traffic, "portLevelSettings", "spec.trafficPolicy.portLevelSettings",
              [&](const YAML::Node& item, const std::string& field) -> absl::Status {
                PortTrafficPolicy port;
                YAML::Node selector = Child(item, "port");
                YAML::Node number = Child(selector, "number");
                if (!Present(number)) return ctx.Error(item, field + ".port.number", "missing");
                NW_ASSIGN_OR_RETURN(port.port, PortNumber(ctx, number, field + ".port.number"));
                NW_ASSIGN_OR_RETURN(port.tls, ParseClientTls(ctx, item, field + ".tls"));
                rule.port_level.push_back(std::move(port));
                return absl::OkStatus();
              }));
  out.destination_rules.push_back(std::move(rule));
  return absl::OkStatus();
}

}  // namespace nodeward::policy::internal
