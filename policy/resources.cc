#include "policy/resources.h"

#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "policy/object_parser.h"
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

absl::StatusOr<std::string> NormalizeIp(absl::string_view text) {
  // inet_pton wants a NUL-terminated string; anything longer than an IPv6 literal is not one.
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof(buffer)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IP address"));
  }
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  char out[INET6_ADDRSTRLEN];
  in_addr v4;
  if (inet_pton(AF_INET, buffer, &v4) == 1) {
    return std::string(inet_ntop(AF_INET, &v4, out, sizeof(out)));
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, buffer, &v6) == 1) {
    return std::string(inet_ntop(AF_INET6, &v6, out, sizeof(out)));
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IP address"));
}

namespace internal {
namespace {

// Where errors point: the source, and the resource once its metadata is known.
class Context {
 public:
  Context(absl::string_view source_name, int first_line, absl::string_view kind)
      : source_name_(source_name), first_line_(first_line), kind_(kind) {}

  void set_object(std::string description) { object_ = std::move(description); }

  absl::Status Error(const YAML::Node& at, absl::string_view field,
                     absl::string_view problem) const {
    std::string where(source_name_);
    if (first_line_ >= 0) {
      YAML::Mark mark = at.IsDefined() ? at.Mark() : YAML::Mark::null_mark();
      if (!mark.is_null()) absl::StrAppend(&where, ":", first_line_ + mark.line + 1);
    }
    absl::string_view object = object_.empty() ? absl::string_view(kind_) : object_;
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", object, ": ", field, ": ", problem));
  }

  std::string Origin(const YAML::Node& at) const {
    if (first_line_ < 0) return std::string(source_name_);
    YAML::Mark mark = at.Mark();
    if (mark.is_null()) return std::string(source_name_);
    return absl::StrCat(source_name_, ":", first_line_ + mark.line + 1);
  }

 private:
  absl::string_view source_name_;
  int first_line_;  // of the document in the source, from 0; negative: no line numbers
  absl::string_view kind_;
  std::string object_;
};

// Missing keys of a const map come back as "zombie" nodes whose accessors throw, so every
// lookup goes through here and every use checks IsDefined() first.
YAML::Node Child(const YAML::Node& map, const char* key) {
  if (!map.IsDefined() || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  return map[key];
}

bool Present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }

absl::StatusOr<std::string> String(const Context& ctx, const YAML::Node& map, const char* key,
                                   absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::string();
  if (!node.IsScalar()) return ctx.Error(node, field, "expected a string");
  return node.Scalar();
}

absl::StatusOr<std::optional<bool>> Bool(const Context& ctx, const YAML::Node& map, const char* key,
                                         absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::optional<bool>();
  if (node.IsScalar()) {
    std::string value = absl::AsciiStrToLower(node.Scalar());
    if (value == "true") return std::optional<bool>(true);
    if (value == "false") return std::optional<bool>(false);
  }
  return ctx.Error(node, field, "expected true or false");
}

absl::StatusOr<uint32_t> PortNumber(const Context& ctx, const YAML::Node& node,
                                    absl::string_view field) {
  uint32_t value = 0;
  if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value) || value == 0 || value > 65535) {
    std::string shown = node.IsScalar() ? absl::StrCat("\"", node.Scalar(), "\"") : "non-scalar";
    return ctx.Error(node, field, absl::StrCat(shown, " is not a port number (1-65535)"));
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> StringList(const Context& ctx, const YAML::Node& map,
                                                    const char* key, absl::string_view field) {
  std::vector<std::string> values;
  YAML::Node node = Child(map, key);
  if (!Present(node)) return values;
  if (!node.IsSequence()) return ctx.Error(node, field, "expected a list of strings");
  for (const YAML::Node& item : node) {
    if (!item.IsScalar()) return ctx.Error(item, field, "expected a list of strings");
    values.push_back(item.Scalar());
  }
  return values;
}

absl::StatusOr<std::optional<Labels>> LabelMap(const Context& ctx, const YAML::Node& map,
                                               const char* key, absl::string_view field) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return std::optional<Labels>();
  if (!node.IsMap()) return ctx.Error(node, field, "expected a map of strings");
  Labels labels;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar() || !(entry.second.IsScalar() || entry.second.IsNull())) {
      return ctx.Error(entry.first, field, "expected a map of strings");
    }
    labels[entry.first.Scalar()] = entry.second.IsNull() ? "" : entry.second.Scalar();
  }
  return std::optional<Labels>(std::move(labels));
}

absl::StatusOr<ObjectMeta> Metadata(Context& ctx, const YAML::Node& object, absl::string_view kind,
                                    bool namespaced) {
  ObjectMeta meta;
  YAML::Node node = Child(object, "metadata");
  if (!Present(node) || !node.IsMap()) return ctx.Error(object, "metadata", "missing or not a map");
  absl::StatusOr<std::string> name = String(ctx, node, "name", "metadata.name");
  if (!name.ok()) return name.status();
  meta.name = *std::move(name);
  if (namespaced) {
    absl::StatusOr<std::string> ns = String(ctx, node, "namespace", "metadata.namespace");
    if (!ns.ok()) return ns.status();
    // kubectl's rule: a namespaced object without a namespace lands in "default".
    meta.ns = ns->empty() ? "default" : *std::move(ns);
  }
  ctx.set_object(DescribeObject(kind, meta));
  if (meta.name.empty()) return ctx.Error(node, "metadata.name", "missing");
  absl::StatusOr<std::optional<Labels>> labels = LabelMap(ctx, node, "labels", "metadata.labels");
  if (!labels.ok()) return labels.status();
  if (labels->has_value()) meta.labels = **std::move(labels);
  YAML::Node created = Child(node, "creationTimestamp");
  if (Present(created)) {
    std::string error;
    if (!created.IsScalar() ||
        !absl::ParseTime(absl::RFC3339_full, created.Scalar(), &meta.creation_timestamp, &error)) {
      return ctx.Error(created, "metadata.creationTimestamp", "not an RFC 3339 time");
    }
  }
  absl::StatusOr<std::string> version =
      String(ctx, node, "resourceVersion", "metadata.resourceVersion");
  if (!version.ok()) return version.status();
  meta.resource_version = *std::move(version);
  absl::StatusOr<std::string> uid = String(ctx, node, "uid", "metadata.uid");
  if (!uid.ok()) return uid.status();
  meta.uid = *std::move(uid);
  meta.origin = ctx.Origin(object);
  return meta;
}

// Iterates a list field, failing when it is present but not a list.
template <typename Fn>
absl::Status ForEach(const Context& ctx, const YAML::Node& map, const char* key,
                     absl::string_view field, Fn fn) {
  YAML::Node node = Child(map, key);
  if (!Present(node)) return absl::OkStatus();
  if (!node.IsSequence()) return ctx.Error(node, field, "expected a list");
  size_t index = 0;
  for (const YAML::Node& item : node) {
    std::string item_field = absl::StrCat(field, "[", index++, "]");
    if (!item.IsMap()) return ctx.Error(item, item_field, "expected a map");
    if (absl::Status status = fn(item, item_field); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Ip(const Context& ctx, const YAML::Node& node,
                               absl::string_view field) {
  if (!node.IsScalar()) return ctx.Error(node, field, "expected an IP address");
  absl::StatusOr<std::string> ip = NormalizeIp(node.Scalar());
  if (!ip.ok()) return ctx.Error(node, field, ip.status().message());
  return ip;
}

#define NW_ASSIGN_OR_RETURN(lhs, expr)                                                             \
  auto NW_CONCAT(result_, __LINE__) = (expr);                                                      \
  if (!NW_CONCAT(result_, __LINE__).ok()) return std::move(NW_CONCAT(result_, __LINE__)).status(); \
  lhs = *std::move(NW_CONCAT(result_, __LINE__))
#define NW_CONCAT_INNER(a, b) a##b
#define NW_CONCAT(a, b) NW_CONCAT_INNER(a, b)
#define NW_RETURN_IF_ERROR(expr)                      \
  if (absl::Status status_ = (expr); !status_.ok()) { \
    return status_;                                   \
  }

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
                               NW_ASSIGN_OR_RETURN(std::string value, Ip(ctx, ip, field + ".ip"));
                               pod.ips.push_back(std::move(value));
                               return absl::OkStatus();
                             }));
  if (pod.ips.empty()) {
    YAML::Node ip = Child(status, "podIP");
    if (Present(ip)) {
      NW_ASSIGN_OR_RETURN(std::string value, Ip(ctx, ip, "status.podIP"));
      pod.ips.push_back(std::move(value));
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
      absl::StatusOr<std::string> normalized = NormalizeIp(ip);
      if (!normalized.ok()) {
        return ctx.Error(Child(spec, "clusterIPs").IsDefined() ? Child(spec, "clusterIPs")
                                                               : Child(spec, "clusterIP"),
                         "spec.clusterIPs", normalized.status().message());
      }
      service.cluster_ips.push_back(*std::move(normalized));
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
          absl::StatusOr<std::string> ip = NormalizeIp(address);
          if (!ip.ok())
            return ctx.Error(Child(item, "addresses"), field + ".addresses", ip.status().message());
          endpoint.addresses.push_back(*std::move(ip));
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
    if (target.empty() || target == "~") {
      return ctx.Error(Child(spec, "exportTo"), "spec.exportTo",
                       "empty or \"~\" entries are not supported");
    }
  }
  YAML::Node traffic = Child(spec, "trafficPolicy");
  if (Present(traffic) && !traffic.IsMap()) {
    return ctx.Error(traffic, "spec.trafficPolicy", "expected a map");
  }
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
