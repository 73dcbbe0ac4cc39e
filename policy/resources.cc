#include "policy/resources.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "policy/gateway_kind_parsers.h"
#include "policy/kind_parsers.h"
#include "policy/object_parser.h"
#include "policy/yaml_fields.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy {

std::string DescribeObject(absl::string_view kind, const ObjectMeta& meta) {
  absl::string_view name = meta.name.empty() ? absl::string_view("(unnamed)") : meta.name;
  if (meta.ns.empty()) return absl::StrCat(kind, " ", name);
  return absl::StrCat(kind, " ", meta.ns, "/", name);
}

absl::string_view MtlsModeName(MtlsMode mode) {
  switch (mode) {
    case MtlsMode::kUnset:
      return "UNSET";
    case MtlsMode::kDisable:
      return "DISABLE";
    case MtlsMode::kPermissive:
      return "PERMISSIVE";
    case MtlsMode::kStrict:
      return "STRICT";
  }
  return "UNKNOWN";
}

absl::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kDisable:
      return "DISABLE";
    case TlsMode::kSimple:
      return "SIMPLE";
    case TlsMode::kMutual:
      return "MUTUAL";
    case TlsMode::kIstioMutual:
      return "ISTIO_MUTUAL";
  }
  return "UNKNOWN";
}

absl::StatusOr<IpBlock> ParseIpBlock(absl::string_view text) {
  IpBlock block;
  block.text = std::string(text);
  absl::string_view address = text;
  std::optional<uint32_t> length;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    address = text.substr(0, slash);
    absl::string_view bits = text.substr(slash + 1);
    uint32_t value = 0;
    // Canonical digits only, as for ports: "/08" is not a prefix length.
    if (bits.empty() || bits.size() > 3 || (bits.size() > 1 && bits.front() == '0') ||
        !std::all_of(bits.begin(), bits.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(bits, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" is not an IP address or CIDR block"));
    }
    length = value;
  }
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(address);
  if (!ip.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not an IP address or CIDR block"));
  }
  block.v6 = ip->family == AF_INET6;
  block.address = ip->bytes;
  const uint32_t max = block.v6 ? 128 : 32;
  if (length.value_or(max) > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": the prefix length is over ", max));
  }
  block.prefix_length = static_cast<uint8_t>(length.value_or(max));
  for (uint32_t bit = block.prefix_length; bit < max; ++bit) {
    block.address[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return block;
}

StringMatcher ParseStringMatcher(absl::string_view text) {
  // The order is Istio's (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go
  // stringToMatch): "*" alone, then a leading "*", then a trailing one.
  StringMatcher matcher;
  matcher.text = std::string(text);
  if (text == "*") {
    matcher.kind = StringMatcher::Kind::kPresence;
  } else if (absl::StartsWith(text, "*")) {
    matcher.kind = StringMatcher::Kind::kSuffix;
    matcher.value = std::string(text.substr(1));
  } else if (absl::EndsWith(text, "*")) {
    matcher.kind = StringMatcher::Kind::kPrefix;
    matcher.value = std::string(text.substr(0, text.size() - 1));
  } else {
    matcher.value = std::string(text);
  }
  return matcher;
}

absl::string_view AuthorizationActionName(AuthorizationAction action) {
  switch (action) {
    case AuthorizationAction::kAllow:
      return "ALLOW";
    case AuthorizationAction::kDeny:
      return "DENY";
    case AuthorizationAction::kAudit:
      return "AUDIT";
    case AuthorizationAction::kCustom:
      return "CUSTOM";
  }
  return "UNKNOWN";
}

void ResourceSet::Append(ResourceSet&& other) {
  auto move_all = [](auto& into, auto& from) {
    into.insert(into.end(), std::make_move_iterator(from.begin()),
                std::make_move_iterator(from.end()));
  };
  move_all(namespaces, other.namespaces);
  move_all(pods, other.pods);
  move_all(services, other.services);
  move_all(endpoint_slices, other.endpoint_slices);
  move_all(peer_authentications, other.peer_authentications);
  move_all(destination_rules, other.destination_rules);
  move_all(authorization_policies, other.authorization_policies);
  move_all(gateways, other.gateways);
  move_all(virtual_services, other.virtual_services);
  move_all(secrets, other.secrets);
}

namespace internal {
namespace {

absl::Status ParseNamespace(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  Namespace ns;
  NW_ASSIGN_OR_RETURN(ns.meta, Metadata(ctx, object, "Namespace", /*namespaced=*/false));
  out.namespaces.push_back(std::move(ns));
  return absl::OkStatus();
}

absl::Status ParseContainerPorts(const Context& ctx, const YAML::Node& container,
                                 absl::string_view field, Pod& pod) {
  return ForEach(ctx, container, "ports", absl::StrCat(field, ".ports"),
                 [&](const YAML::Node& item, const std::string& item_field) -> absl::Status {
                   ContainerPort port;
                   NW_ASSIGN_OR_RETURN(port.name, String(ctx, item, "name", item_field + ".name"));
                   YAML::Node number = Child(item, "containerPort");
                   if (!Present(number)) {
                     return ctx.Error(item, item_field + ".containerPort", "missing");
                   }
                   NW_ASSIGN_OR_RETURN(port.container_port,
                                       PortNumber(ctx, number, item_field + ".containerPort"));
                   NW_ASSIGN_OR_RETURN(std::string protocol,
                                       String(ctx, item, "protocol", item_field + ".protocol"));
                   if (!protocol.empty()) port.protocol = protocol;
                   pod.ports.push_back(std::move(port));
                   return absl::OkStatus();
                 });
}

absl::Status ParsePod(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  Pod pod;
  NW_ASSIGN_OR_RETURN(pod.meta, Metadata(ctx, object, "Pod", /*namespaced=*/true));
  YAML::Node spec = Child(object, "spec");
  if (Present(spec) && !spec.IsMap()) return ctx.Error(spec, "spec", "expected a map");
  NW_ASSIGN_OR_RETURN(std::string account,
                      String(ctx, spec, "serviceAccountName", "spec.serviceAccountName"));
  if (account.empty()) {
    // The deprecated alias still appears in old manifests.
    NW_ASSIGN_OR_RETURN(account, String(ctx, spec, "serviceAccount", "spec.serviceAccount"));
  }
  if (!account.empty()) pod.service_account = account;
  NW_ASSIGN_OR_RETURN(pod.node_name, String(ctx, spec, "nodeName", "spec.nodeName"));
  NW_ASSIGN_OR_RETURN(std::optional<bool> host_network,
                      Bool(ctx, spec, "hostNetwork", "spec.hostNetwork"));
  pod.host_network = host_network.value_or(false);
  for (const char* list : {"containers", "initContainers"}) {
    NW_RETURN_IF_ERROR(ForEach(ctx, spec, list, absl::StrCat("spec.", list),
                               [&](const YAML::Node& item, const std::string& field) {
                                 return ParseContainerPorts(ctx, item, field, pod);
                               }));
  }
  YAML::Node status = Child(object, "status");
  if (Present(status) && !status.IsMap()) return ctx.Error(status, "status", "expected a map");
  NW_ASSIGN_OR_RETURN(pod.phase, String(ctx, status, "phase", "status.phase"));
  NW_RETURN_IF_ERROR(ForEach(ctx, status, "podIPs", "status.podIPs",
                             [&](const YAML::Node& item, const std::string& field) -> absl::Status {
                               YAML::Node ip = Child(item, "ip");
                               if (!Present(ip)) return ctx.Error(item, field + ".ip", "missing");
                               NW_ASSIGN_OR_RETURN(IpAddress value, Ip(ctx, ip, field + ".ip"));
                               pod.ips.push_back(value);
                               return absl::OkStatus();
                             }));
  if (pod.ips.empty()) {
    YAML::Node ip = Child(status, "podIP");
    if (Present(ip)) {
      NW_ASSIGN_OR_RETURN(IpAddress value, Ip(ctx, ip, "status.podIP"));
      pod.ips.push_back(value);
    }
  }
  NW_RETURN_IF_ERROR(ForEach(
      ctx, status, "conditions", "status.conditions",
      [&](const YAML::Node& item, const std::string& field) -> absl::Status {
        NW_ASSIGN_OR_RETURN(std::string type, String(ctx, item, "type", field + ".type"));
        if (type != "Ready") return absl::OkStatus();
        NW_ASSIGN_OR_RETURN(std::string value, String(ctx, item, "status", field + ".status"));
        pod.ready = value == "True";
        return absl::OkStatus();
      }));
  out.pods.push_back(std::move(pod));
  return absl::OkStatus();
}

absl::Status ParseService(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  Service service;
  NW_ASSIGN_OR_RETURN(service.meta, Metadata(ctx, object, "Service", /*namespaced=*/true));
  YAML::Node spec = Child(object, "spec");
  if (Present(spec) && !spec.IsMap()) return ctx.Error(spec, "spec", "expected a map");
  NW_ASSIGN_OR_RETURN(std::string type, String(ctx, spec, "type", "spec.type"));
  NW_ASSIGN_OR_RETURN(std::vector<std::string> ips,
                      StringList(ctx, spec, "clusterIPs", "spec.clusterIPs"));
  if (ips.empty()) {
    NW_ASSIGN_OR_RETURN(std::string ip, String(ctx, spec, "clusterIP", "spec.clusterIP"));
    if (!ip.empty()) ips.push_back(ip);
  }
  if (type != "ExternalName") {
    for (const std::string& ip : ips) {
      if (ip == "None") continue;  // headless: clients address the pods directly
      absl::StatusOr<IpAddress> parsed = IpAddress::Parse(ip);
      if (!parsed.ok()) {
        return ctx.Error(Child(spec, "clusterIPs").IsDefined() ? Child(spec, "clusterIPs")
                                                               : Child(spec, "clusterIP"),
                         "spec.clusterIPs", parsed.status().message());
      }
      service.cluster_ips.push_back(*parsed);
    }
  }
  NW_RETURN_IF_ERROR(
      ForEach(ctx, spec, "ports", "spec.ports",
              [&](const YAML::Node& item, const std::string& field) -> absl::Status {
                ServicePort port;
                NW_ASSIGN_OR_RETURN(port.name, String(ctx, item, "name", field + ".name"));
                YAML::Node number = Child(item, "port");
                if (!Present(number)) return ctx.Error(item, field + ".port", "missing");
                NW_ASSIGN_OR_RETURN(port.port, PortNumber(ctx, number, field + ".port"));
                NW_ASSIGN_OR_RETURN(std::string protocol,
                                    String(ctx, item, "protocol", field + ".protocol"));
                if (!protocol.empty()) port.protocol = protocol;
                YAML::Node target = Child(item, "targetPort");
                if (!Present(target)) {
                  port.target_port_number = port.port;
                } else if (!target.IsScalar() || target.Scalar().empty()) {
                  return ctx.Error(target, field + ".targetPort", "expected a port number or name");
                } else if (absl::ascii_isdigit(target.Scalar()[0])) {
                  NW_ASSIGN_OR_RETURN(port.target_port_number,
                                      PortNumber(ctx, target, field + ".targetPort"));
                } else {
                  port.target_port_name = target.Scalar();
                }
                service.ports.push_back(std::move(port));
                return absl::OkStatus();
              }));
  NW_ASSIGN_OR_RETURN(service.selector, LabelMap(ctx, spec, "selector", "spec.selector"));
  out.services.push_back(std::move(service));
  return absl::OkStatus();
}

absl::Status ParseEndpointSlice(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  EndpointSlice slice;
  NW_ASSIGN_OR_RETURN(slice.meta, Metadata(ctx, object, "EndpointSlice", /*namespaced=*/true));
  auto service = slice.meta.labels.find("kubernetes.io/service-name");
  if (service != slice.meta.labels.end()) slice.service_name = service->second;
  NW_ASSIGN_OR_RETURN(slice.address_type, String(ctx, object, "addressType", "addressType"));
  const bool ip_slice = slice.address_type != "FQDN";
  NW_RETURN_IF_ERROR(
      ForEach(ctx, object, "ports", "ports",
              [&](const YAML::Node& item, const std::string& field) -> absl::Status {
                EndpointSlicePort port;
                NW_ASSIGN_OR_RETURN(port.name, String(ctx, item, "name", field + ".name"));
                YAML::Node number = Child(item, "port");
                if (Present(number)) {
                  NW_ASSIGN_OR_RETURN(port.port, PortNumber(ctx, number, field + ".port"));
                }
                NW_ASSIGN_OR_RETURN(std::string protocol,
                                    String(ctx, item, "protocol", field + ".protocol"));
                if (!protocol.empty()) port.protocol = protocol;
                slice.ports.push_back(std::move(port));
                return absl::OkStatus();
              }));
  NW_RETURN_IF_ERROR(ForEach(
      ctx, object, "endpoints", "endpoints",
      [&](const YAML::Node& item, const std::string& field) -> absl::Status {
        Endpoint endpoint;
        NW_ASSIGN_OR_RETURN(std::vector<std::string> addresses,
                            StringList(ctx, item, "addresses", field + ".addresses"));
        for (const std::string& address : addresses) {
          if (!ip_slice) break;
          absl::StatusOr<IpAddress> ip = IpAddress::Parse(address);
          if (!ip.ok())
            return ctx.Error(Child(item, "addresses"), field + ".addresses", ip.status().message());
          endpoint.addresses.push_back(*ip);
        }
        YAML::Node conditions = Child(item, "conditions");
        NW_ASSIGN_OR_RETURN(std::optional<bool> ready,
                            Bool(ctx, conditions, "ready", field + ".conditions.ready"));
        endpoint.ready = ready.value_or(true);
        YAML::Node target = Child(item, "targetRef");
        NW_ASSIGN_OR_RETURN(std::string target_kind,
                            String(ctx, target, "kind", field + ".targetRef.kind"));
        if (target_kind == "Pod") {
          NW_ASSIGN_OR_RETURN(endpoint.target_pod_name,
                              String(ctx, target, "name", field + ".targetRef.name"));
          NW_ASSIGN_OR_RETURN(endpoint.target_pod_namespace,
                              String(ctx, target, "namespace", field + ".targetRef.namespace"));
          if (endpoint.target_pod_namespace.empty()) {
            endpoint.target_pod_namespace = slice.meta.ns;
          }
        }
        slice.endpoints.push_back(std::move(endpoint));
        return absl::OkStatus();
      }));
  out.endpoint_slices.push_back(std::move(slice));
  return absl::OkStatus();
}

struct KindParser {
  absl::string_view group;
  absl::string_view kind;
  std::vector<absl::string_view> versions;
  absl::Status (*parse)(Context&, const YAML::Node&, ResourceSet&);
};

const std::vector<KindParser>& KindParsers() {
  static const auto* parsers = new std::vector<KindParser>{
      {"", "Namespace", {"v1"}, ParseNamespace},
      {"", "Pod", {"v1"}, ParsePod},
      {"", "Service", {"v1"}, ParseService},
      {"discovery.k8s.io", "EndpointSlice", {"v1", "v1beta1"}, ParseEndpointSlice},
      {"security.istio.io", "PeerAuthentication", {"v1", "v1beta1"}, ParsePeerAuthentication},
      {"networking.istio.io",
       "DestinationRule",
       {"v1", "v1beta1", "v1alpha3"},
       ParseDestinationRule},
      {"security.istio.io", "AuthorizationPolicy", {"v1", "v1beta1"}, ParseAuthorizationPolicy},
      {"networking.istio.io", "Gateway", {"v1", "v1beta1", "v1alpha3"}, ParseGateway},
      {"networking.istio.io", "VirtualService", {"v1", "v1beta1", "v1alpha3"}, ParseVirtualService},
      {"", "Secret", {"v1"}, ParseSecret},
  };
  return *parsers;
}

}  // namespace

std::string ScalarField(const YAML::Node& map, const char* key) {
  YAML::Node node = Child(map, key);
  if (!node.IsDefined() || !node.IsScalar()) return "";
  return node.Scalar();
}

namespace {

absl::Status AppendObjectImpl(const YAML::Node& object, absl::string_view kind_hint,
                              absl::string_view api_version_hint, absl::string_view source_name,
                              int first_line, bool inside_list, ResourceSet& out) {
  if (!object.IsMap()) {
    Context ctx(source_name, first_line, "document");
    return ctx.Error(object, "document", "expected a Kubernetes object (a map)");
  }
  std::string kind = ScalarField(object, "kind");
  if (kind.empty()) kind = std::string(kind_hint);
  std::string api_version = ScalarField(object, "apiVersion");
  if (api_version.empty()) api_version = std::string(api_version_hint);

  // A List wraps objects that keep their own kind; "PodList" items carry none.
  if (kind == "List" || (kind.size() > 4 && absl::EndsWith(kind, "List"))) {
    std::string item_kind = kind == "List" ? "" : kind.substr(0, kind.size() - 4);
    Context ctx(source_name, first_line, kind);
    // Lists of lists exist nowhere in Kubernetes, and with YAML aliases they would let a few
    // bytes expand into exponentially many objects.
    if (inside_list) return ctx.Error(object, "kind", "a List inside a List is not supported");
    YAML::Node items = Child(object, "items");
    if (!Present(items)) return absl::OkStatus();
    if (!items.IsSequence()) return ctx.Error(items, "items", "expected a list");
    for (const YAML::Node& item : items) {
      NW_RETURN_IF_ERROR(AppendObjectImpl(item, item_kind, kind == "List" ? "" : api_version,
                                          source_name, first_line, /*inside_list=*/true, out));
    }
    return absl::OkStatus();
  }

  std::pair<std::string, std::string> group_version =
      api_version.find('/') == std::string::npos
          ? std::pair<std::string, std::string>("", api_version)
          : std::pair<std::string, std::string>(
                absl::StrSplit(api_version, absl::MaxSplits('/', 1)));
  for (const KindParser& parser : KindParsers()) {
    if (parser.kind != kind || parser.group != group_version.first) continue;
    Context ctx(source_name, first_line, kind);
    bool supported = false;
    for (absl::string_view version : parser.versions) supported |= version == group_version.second;
    if (!supported) {
      return ctx.Error(Child(object, "apiVersion"), "apiVersion",
                       absl::StrCat("unsupported version \"", api_version, "\""));
    }
    return parser.parse(ctx, object, out);
  }
  return absl::OkStatus();  // a kind this engine does not use
}

}  // namespace

absl::Status AppendObject(const YAML::Node& object, absl::string_view kind_hint,
                          absl::string_view api_version_hint, absl::string_view source_name,
                          int first_line, ResourceSet& out) {
  try {
    return AppendObjectImpl(object, kind_hint, api_version_hint, source_name, first_line,
                            /*inside_list=*/false, out);
  } catch (const YAML::Exception& e) {
    std::string where(source_name);
    if (first_line >= 0 && !e.mark.is_null()) {
      absl::StrAppend(&where, ":", first_line + e.mark.line + 1);
    }
    return absl::InvalidArgumentError(absl::StrCat(where, ": malformed object: ", e.msg));
  }
}

}  // namespace internal

namespace {

struct Document {
  int first_line;  // from 0
  absl::string_view text;
};

// Splits a stream at its document markers ("---" starts a document, "..." ends one; both only
// at the start of a line, where the YAML spec reserves them). Each document then goes to
// YAML::Load on its own: yaml-cpp 0.7's LoadAll can loop forever on some malformed streams
// (fixed upstream after 0.8), and a parser must not hang on a bad file.
std::vector<Document> SplitDocuments(absl::string_view text) {
  std::vector<Document> documents;
  size_t start = 0;
  int start_line = 0;
  size_t position = 0;
  int line = 0;
  auto close = [&](size_t end) {
    if (end > start) documents.push_back({start_line, text.substr(start, end - start)});
  };
  while (position < text.size()) {
    size_t end_of_line = text.find('\n', position);
    size_t next = end_of_line == absl::string_view::npos ? text.size() : end_of_line + 1;
    absl::string_view content = text.substr(position, next - position);
    auto is_marker = [&](absl::string_view marker) {
      if (!absl::StartsWith(content, marker)) return false;
      if (content.size() == marker.size()) return true;
      char after = content[marker.size()];
      return after == ' ' || after == '\t' || after == '\r' || after == '\n';
    };
    if (is_marker("---")) {
      close(position);
      start = position;
      start_line = line;
    } else if (is_marker("...")) {
      close(next);
      start = next;
      start_line = line + 1;
    }
    position = next;
    ++line;
  }
  close(text.size());
  return documents;
}

}  // namespace

absl::Status AppendYamlResources(absl::string_view text, absl::string_view source_name,
                                 ResourceSet& out) {
  for (const Document& document : SplitDocuments(text)) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(document.text));
    } catch (const YAML::Exception& e) {
      std::string where(source_name);
      if (!e.mark.is_null()) absl::StrAppend(&where, ":", document.first_line + e.mark.line + 1);
      return absl::InvalidArgumentError(absl::StrCat(where, ": invalid YAML: ", e.msg));
    }
    if (!root.IsDefined() || root.IsNull()) continue;  // empty, or only comments
    NW_RETURN_IF_ERROR(internal::AppendObject(root, "", "", source_name, document.first_line, out));
  }
  return absl::OkStatus();
}

}  // namespace nodeward::policy
