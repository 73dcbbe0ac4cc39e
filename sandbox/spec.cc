// Over 600 lines on purpose: the sandbox file's parser and the config directory it points at
// are validated together (a pod's namespace, labels and ports are checked against the config),
// and each check names the line the user wrote.
#include "sandbox/spec.h"

#include <arpa/inet.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <exception>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sandbox/system.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::sandbox {
namespace {

constexpr char kRunRoot[] = "/run/nodeward-sandbox";
constexpr char kModeLabel[] = "nodeward.io/dataplane-mode";
constexpr char kIstioModeLabel[] = "istio.io/dataplane-mode";

// A Kubernetes-style DNS label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most `max` characters.
absl::Status ValidateLabelName(const std::string& value, absl::string_view what, size_t max) {
  bool ok = !value.empty() && value.size() <= max && value.front() != '-' && value.back() != '-';
  for (char c : value) ok &= absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-';
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", value,
                                                   "\" must be lower-case letters, digits and "
                                                   "'-' (not at either end), at most ",
                                                   max, " characters"));
  }
  return absl::OkStatus();
}

absl::Status CheckKeys(const YAML::Node& map, absl::string_view where,
                       const std::set<std::string>& allowed) {
  for (const auto& entry : map) {
    std::string key = entry.first.as<std::string>();
    if (!allowed.contains(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown key \"", key,
                       "\" (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Scalar(const YAML::Node& node, absl::string_view where) {
  if (!node.IsScalar())
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected a string"));
  return node.Scalar();
}

absl::StatusOr<PodSpec> ParsePod(const YAML::Node& node, const std::string& where) {
  if (!node.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a map"));
  if (absl::Status keys = CheckKeys(
          node, where,
          {"name", "namespace", "serviceAccount", "node", "ports", "labels", "tls", "gateway"});
      !keys.ok()) {
    return keys;
  }
  PodSpec pod;
  for (auto [key, field] :
       {std::pair{"name", &pod.name}, std::pair{"namespace", &pod.namespace_name},
        std::pair{"serviceAccount", &pod.service_account}, std::pair{"node", &pod.node}}) {
    if (!node[key]) continue;
    absl::StatusOr<std::string> value = Scalar(node[key], absl::StrCat(where, ".", key));
    if (!value.ok()) return value.status();
    *field = *value;
  }
  if (pod.name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": name is missing"));
  const std::string at = absl::StrCat("pod ", pod.name);
  if (absl::Status s = ValidateLabelName(pod.name, absl::StrCat(at, ": name"), 40); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateLabelName(pod.namespace_name, absl::StrCat(at, ": namespace"), 63);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ValidateLabelName(pod.service_account, absl::StrCat(at, ": serviceAccount"), 63);
      !s.ok()) {
    return s;
  }
  if (pod.node.empty()) return absl::InvalidArgumentError(absl::StrCat(at, ": node is missing"));
  if (YAML::Node ports = node["ports"]) {
    if (!ports.IsSequence()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": ports must be a list of numbers"));
    }
    for (const YAML::Node& item : ports) {
      // A number, or {port: N, name: NAME} for a named container port.
      // yaml-cpp's Node assignment rebinds the node it refers to, so the map form gets its
      // own handle rather than overwriting `item`.
      YAML::Node port;
      port.reset(item);
      std::string port_name;
      if (item.IsMap()) {
        if (absl::Status keys = CheckKeys(item, absl::StrCat(at, ": ports[]"), {"port", "name"});
            !keys.ok()) {
          return keys;
        }
        port.reset(item["port"]);
        if (!port)
          return absl::InvalidArgumentError(absl::StrCat(at, ": ports[]: port is missing"));
        if (item["name"]) {
          absl::StatusOr<std::string> name =
              Scalar(item["name"], absl::StrCat(at, ": ports[].name"));
          if (!name.ok()) return name.status();
          if (absl::Status s = ValidateLabelName(*name, absl::StrCat(at, ": port name"), 15);
              !s.ok()) {
            return s;
          }
          port_name = *name;
        }
      }
      int number = 0;
      if (!port.IsScalar() || !YAML::convert<int>::decode(port, number) || number < 1 ||
          number > 65535) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": port \"",
                                                       port.IsScalar() ? port.Scalar() : "?",
                                                       "\" is not a number in 1-65535"));
      }
      if (number >= 15000 && number <= 15021) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": port ", number, " is reserved for the agent (15000-15021)"));
      }
      if (std::find(pod.ports.begin(), pod.ports.end(), number) != pod.ports.end()) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": port ", number, " listed twice"));
      }
      for (const auto& [other, name] : pod.port_names) {
        if (!port_name.empty() && name == port_name) {
          return absl::InvalidArgumentError(
              absl::StrCat(at, ": port name ", port_name, " used twice"));
        }
      }
      if (!port_name.empty()) pod.port_names[number] = port_name;
      pod.ports.push_back(number);
    }
  }
  if (YAML::Node labels = node["labels"]) {
    if (!labels.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": labels must be a map"));
    }
    for (const auto& entry : labels) {
      if (!entry.first.IsScalar() || !entry.second.IsScalar()) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": labels must map strings to strings"));
      }
      const std::string key = entry.first.Scalar();
      const std::string value = entry.second.Scalar();
      if (absl::StrContains(key, ",") || absl::StrContains(value, ",") ||
          absl::StrContains(key, "=")) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": label ", key, "=", value, " may not contain ',' (or '=' in keys)"));
      }
      pod.labels[key] = value;
    }
  }
  if (YAML::Node gateway = node["gateway"]) {
    if (!gateway.IsScalar() || !YAML::convert<bool>::decode(gateway, pod.gateway)) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": gateway must be true or false"));
    }
  }
  if (YAML::Node tls = node["tls"]) {
    if (!tls.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": tls must be a map {cert, key}"));
    }
    if (absl::Status keys = CheckKeys(tls, absl::StrCat(at, ": tls"), {"cert", "key"});
        !keys.ok()) {
      return keys;
    }
    for (auto [key, field] : {std::pair{"cert", &pod.tls_cert}, std::pair{"key", &pod.tls_key}}) {
      if (!tls[key]) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": tls.", key, " is missing"));
      }
      absl::StatusOr<std::string> value = Scalar(tls[key], absl::StrCat(at, ": tls.", key));
      if (!value.ok()) return value.status();
      *field = *value;
    }
  }
  return pod;
}

bool IsIpAddress(const std::string& text) {
  unsigned char buffer[16];
  return inet_pton(AF_INET, text.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, text.c_str(), buffer) == 1;
}

absl::StatusOr<TrafficSpec> ParseTraffic(const YAML::Node& node, const std::string& where,
                                         const SandboxSpec& spec) {
  if (!node.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a map"));
  if (absl::Status keys =
          CheckKeys(node, where, {"from", "to", "port", "expect", "wire", "received", "reason"});
      !keys.ok()) {
    return keys;
  }
  TrafficSpec traffic;
  for (auto [key, field] :
       {std::pair{"from", &traffic.from}, std::pair{"to", &traffic.to},
        std::pair{"expect", &traffic.expect}, std::pair{"reason", &traffic.reason}}) {
    if (!node[key]) continue;
    absl::StatusOr<std::string> value = Scalar(node[key], absl::StrCat(where, ".", key));
    if (!value.ok()) return value.status();
    *field = *value;
  }
  if (traffic.from.empty() || traffic.to.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": from and to are required"));
  }
  for (auto [key, field] :
       {std::pair{"wire", &traffic.wire}, std::pair{"received", &traffic.received}}) {
    if (!node[key]) continue;
    bool value = false;
    if (!node[key].IsScalar() || !YAML::convert<bool>::decode(node[key], value)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected true or false"));
    }
    *field = value;
  }
  if (FindPod(spec, traffic.from) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": from \"", traffic.from, "\" is not a pod of the sandbox"));
  }
  if (!IsIpAddress(traffic.to) && !absl::StrContains(traffic.to, ".") &&
      FindPod(spec, traffic.to) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": to \"", traffic.to,
        "\" is neither a pod of the sandbox, a Service (name.namespace) nor an IP address"));
  }
  if (!node["port"] || !node["port"].IsScalar() ||
      !YAML::convert<int>::decode(node["port"], traffic.port) || traffic.port < 1 ||
      traffic.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": port must be a number in 1-65535"));
  }
  if (!traffic.expect.empty() && std::find_if(std::begin(kTrafficExpectations),
                                              std::end(kTrafficExpectations), [&](const char* e) {
                                                return traffic.expect == e;
                                              }) == std::end(kTrafficExpectations)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expect \"", traffic.expect,
                                                   "\" is not one of ",
                                                   absl::StrJoin(kTrafficExpectations, ", ")));
  }
  return traffic;
}

std::string PodUid(const std::string& sandbox, const PodSpec& pod) {
  return absl::StrCat("sandbox-", sandbox, "-", pod.namespace_name, "-", pod.name);
}

}  // namespace

absl::Status RenameSandbox(SandboxSpec& spec, const std::string& name) {
  if (absl::Status valid = ValidateSandboxName(name); !valid.ok()) return valid;
  spec.name = name;
  for (PodSpec& pod : spec.pods) pod.uid = PodUid(name, pod);
  return absl::OkStatus();
}

const PodSpec* FindPod(const SandboxSpec& spec, const std::string& pod) {
  for (const PodSpec& candidate : spec.pods) {
    if (pod == candidate.name ||
        pod == absl::StrCat(candidate.namespace_name, "/", candidate.name)) {
      return &candidate;
    }
  }
  return nullptr;
}

absl::StatusOr<TrafficTarget> ResolveTarget(const SandboxSpec& spec, const ClusterConfig& config,
                                            const std::string& to) {
  TrafficTarget target;
  if (IsIpAddress(to)) {
    target.address = to;
    for (const PodSpec& pod : spec.pods) {
      if (pod.address == to) target.pod = &pod;
    }
    if (target.pod == nullptr) {
      for (const ServiceInfo& service : config.services) {
        if (service.cluster_ip == to)
          return ResolveTarget(spec, config,
                               absl::StrCat(service.name, ".", service.namespace_name));
      }
    }
    return target;
  }
  if (const PodSpec* pod = FindPod(spec, to); pod != nullptr) {
    target.address = pod->address;
    target.pod = pod;
    return target;
  }
  for (const ServiceInfo& service : config.services) {
    if (to != absl::StrCat(service.name, ".", service.namespace_name)) continue;
    if (service.cluster_ip.empty() || service.cluster_ip == "None") {
      return absl::InvalidArgumentError(absl::StrCat("Service ", to, " has no clusterIP"));
    }
    target.address = service.cluster_ip;
    for (const PodSpec& pod : spec.pods) {
      if (pod.namespace_name != service.namespace_name || service.selector.empty()) continue;
      bool selected = true;
      for (const auto& [key, value] : service.selector) {
        auto label = pod.labels.find(key);
        selected &= label != pod.labels.end() && label->second == value;
      }
      if (selected) {
        target.pod = &pod;
        break;
      }
    }
    return target;
  }
  return absl::NotFoundError(absl::StrCat(
      "\"", to, "\" is neither a pod, a Service (name.namespace) of the configuration nor an IP"));
}

absl::Status ValidateSandboxName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 12;
  for (char c : name) ok &= absl::ascii_islower(c) || absl::ascii_isdigit(c);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sandbox name \"", name, "\" must be 1-12 lower-case letters or digits (no '-')"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SandboxSpec> LoadSandboxFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::string base_dir = ".";
  if (size_t slash = path.rfind('/'); slash != std::string::npos) {
    base_dir = slash == 0 ? "/" : path.substr(0, slash);
  }
  char resolved[PATH_MAX];
  if (realpath(base_dir.c_str(), resolved) != nullptr) base_dir = resolved;
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(*text, base_dir);
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

absl::StatusOr<SandboxSpec> ParseSandbox(const std::string& text, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("expected a map at the top level");
  if (absl::Status keys = CheckKeys(
          root, "top level",
          {"name", "trustDomain", "nodes", "pods", "config", "traffic", "certLifetime", "outside"});
      !keys.ok()) {
    return keys;
  }
  SandboxSpec spec;
  try {
    if (!root["name"]) return absl::InvalidArgumentError("name is missing");
    absl::StatusOr<std::string> name = Scalar(root["name"], "name");
    if (!name.ok()) return name.status();
    spec.name = *name;
    if (absl::Status valid = ValidateSandboxName(spec.name); !valid.ok()) return valid;
    if (root["trustDomain"]) {
      absl::StatusOr<std::string> domain = Scalar(root["trustDomain"], "trustDomain");
      if (!domain.ok()) return domain.status();
      spec.trust_domain = *domain;
    }
    if (spec.trust_domain.empty() || absl::StrContains(spec.trust_domain, "/")) {
      return absl::InvalidArgumentError(
          absl::StrCat("trustDomain \"", spec.trust_domain, "\" is not a trust domain"));
    }

    if (YAML::Node outside = root["outside"]) {
      if (!outside.IsScalar() || !YAML::convert<bool>::decode(outside, spec.outside)) {
        return absl::InvalidArgumentError("outside must be true or false");
      }
    }
    if (root["certLifetime"]) {
      absl::StatusOr<std::string> text = Scalar(root["certLifetime"], "certLifetime");
      if (!text.ok()) return text.status();
      if (!absl::ParseDuration(*text, &spec.cert_lifetime) ||
          spec.cert_lifetime < absl::Seconds(2)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "certLifetime \"", *text, "\" is not a duration of at least 2s (e.g. 6s, 1h)"));
      }
    }

    YAML::Node nodes = root["nodes"];
    if (!nodes || !nodes.IsSequence() || nodes.size() == 0) {
      return absl::InvalidArgumentError("nodes must be a non-empty list of node names");
    }
    if (nodes.size() > 200) return absl::InvalidArgumentError("at most 200 nodes");
    std::set<std::string> members = {kFabric, kOutside};
    for (const YAML::Node& item : nodes) {
      absl::StatusOr<std::string> node_name = Scalar(item, "nodes[]");
      if (!node_name.ok()) return node_name.status();
      if (absl::Status s = ValidateLabelName(*node_name, "node name", 40); !s.ok()) return s;
      if (!members.insert(*node_name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("node \"", *node_name,
                         "\" is listed twice (or is a reserved name: \"fabric\", \"outside\")"));
      }
      NodeSpec node;
      node.name = *node_name;
      node.index = static_cast<int>(spec.nodes.size()) + 1;
      node.address = absl::StrCat("10.240.0.", node.index);
      node.pod_cidr = absl::StrCat("10.241.", node.index, ".0/24");
      node.pod_gateway = absl::StrCat("10.241.", node.index, ".1");
      spec.nodes.push_back(std::move(node));
    }

    if (YAML::Node pods = root["pods"]) {
      if (!pods.IsSequence()) return absl::InvalidArgumentError("pods must be a list");
      std::map<std::string, int> per_node;
      for (size_t i = 0; i < pods.size(); ++i) {
        absl::StatusOr<PodSpec> pod = ParsePod(pods[i], absl::StrCat("pods[", i, "]"));
        if (!pod.ok()) return pod.status();
        auto node = std::find_if(spec.nodes.begin(), spec.nodes.end(),
                                 [&](const NodeSpec& n) { return n.name == pod->node; });
        if (node == spec.nodes.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("pod ", pod->name, ": node \"", pod->node, "\" is not in nodes"));
        }
        if (!members.insert(pod->name).second) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pod name \"", pod->name,
              "\" is used twice, is also a node name or is reserved (\"fabric\", \"outside\"): "
              "each pod and node gets its own netns nws-<sandbox>-<name>"));
        }
        for (std::string* path : {&pod->tls_cert, &pod->tls_key}) {
          if (!path->empty() && path->front() != '/') *path = absl::StrCat(base_dir, "/", *path);
        }
        pod->node_index = node->index;
        pod->index_on_node = per_node[pod->node]++;
        if (pod->index_on_node >= 250) {
          return absl::InvalidArgumentError(absl::StrCat("node ", pod->node, ": at most 250 pods"));
        }
        pod->address = absl::StrCat("10.241.", pod->node_index, ".", pod->index_on_node + 2);
        pod->uid = PodUid(spec.name, *pod);
        spec.pods.push_back(*std::move(pod));
      }
    }

    if (root["config"]) {
      absl::StatusOr<std::string> config = Scalar(root["config"], "config");
      if (!config.ok()) return config.status();
      std::string dir = *config;
      if (!dir.empty() && dir.front() != '/') dir = absl::StrCat(base_dir, "/", dir);
      while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
      spec.config_dir = dir;
    }

    if (YAML::Node traffic = root["traffic"]) {
      if (!traffic.IsSequence()) return absl::InvalidArgumentError("traffic must be a list");
      for (size_t i = 0; i < traffic.size(); ++i) {
        absl::StatusOr<TrafficSpec> entry =
            ParseTraffic(traffic[i], absl::StrCat("traffic[", i, "]"), spec);
        if (!entry.ok()) return entry.status();
        spec.traffic.push_back(*std::move(entry));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return spec;
}

std::string RunDir(const std::string& sandbox) { return absl::StrCat(kRunRoot, "/", sandbox); }
std::string NetnsPrefix(const std::string& sandbox) { return absl::StrCat("nws-", sandbox, "-"); }
std::string NetnsName(const std::string& sandbox, const std::string& member) {
  return absl::StrCat(NetnsPrefix(sandbox), member);
}
std::string NetnsPath(const std::string& netns_name) {
  return absl::StrCat("/run/netns/", netns_name);
}
std::string CgroupRoot() { return "/sys/fs/cgroup/unified"; }
std::string SandboxCgroup(const std::string& sandbox) {
  return absl::StrCat(CgroupRoot(), "/nodeward-sandbox-", sandbox);
}
std::string PinPrefix(const std::string& sandbox) {
  return absl::StrCat("/sys/fs/bpf/nodeward-sandbox-", sandbox, "-");
}

std::string SpiffeId(const std::string& trust_domain, const std::string& namespace_name,
                     const std::string& service_account) {
  return absl::StrCat("spiffe://", trust_domain, "/ns/", namespace_name, "/sa/", service_account);
}

absl::StatusOr<ClusterConfig> LoadConfigDir(const std::string& directory) {
  ClusterConfig config;
  if (directory.empty()) return config;
  if (!Exists(directory)) {
    return absl::NotFoundError(absl::StrCat("config directory ", directory, " does not exist"));
  }
  std::vector<std::string> names = ListDirectory(directory);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (name.front() == '.') continue;
    if (!absl::EndsWith(name, ".yaml") && !absl::EndsWith(name, ".yml") &&
        !absl::EndsWith(name, ".json")) {
      continue;
    }
    if (absl::StartsWith(name, "sandbox-")) {
      return absl::InvalidArgumentError(absl::StrCat(
          directory, "/", name, ": names starting with \"sandbox-\" are kept for generated files"));
    }
    const std::string path = absl::StrCat(directory, "/", name);
    absl::StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) return text.status();
    std::vector<YAML::Node> documents;
    try {
      documents = YAML::LoadAll(*text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not valid YAML: ", e.what()));
    }
    for (const YAML::Node& document : documents) {
      if (!document.IsMap() || !document["kind"] || !document["kind"].IsScalar()) continue;
      if (document["kind"].Scalar() == "Service") {
        // Only what traffic entries need; the agents' parser validates the rest.
        YAML::Node metadata = document["metadata"];
        YAML::Node service_spec = document["spec"];
        if (!metadata.IsMap() || !metadata["name"] || !metadata["name"].IsScalar()) continue;
        ServiceInfo service;
        service.name = metadata["name"].Scalar();
        service.namespace_name = metadata["namespace"] && metadata["namespace"].IsScalar()
                                     ? metadata["namespace"].Scalar()
                                     : "default";
        if (service_spec.IsMap()) {
          if (YAML::Node ip = service_spec["clusterIP"]; ip && ip.IsScalar()) {
            service.cluster_ip = ip.Scalar();
          }
          if (YAML::Node selector = service_spec["selector"]; selector && selector.IsMap()) {
            for (const auto& entry : selector) {
              if (entry.first.IsScalar() && entry.second.IsScalar()) {
                service.selector[entry.first.Scalar()] = entry.second.Scalar();
              }
            }
          }
        }
        config.services.push_back(std::move(service));
        continue;
      }
      if (document["kind"].Scalar() != "Namespace") continue;
      YAML::Node metadata = document["metadata"];
      if (!metadata.IsMap() || !metadata["name"] || !metadata["name"].IsScalar()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": a Namespace without a name"));
      }
      std::map<std::string, std::string>& labels = config.namespaces[metadata["name"].Scalar()];
      if (YAML::Node found = metadata["labels"]; found && found.IsMap()) {
        for (const auto& entry : found) {
          if (entry.first.IsScalar() && entry.second.IsScalar()) {
            labels[entry.first.Scalar()] = entry.second.Scalar();
          }
        }
      }
    }
    config.files.emplace_back(name, *std::move(text));
  }
  return config;
}

void DecideEnrollment(const ClusterConfig& config, SandboxSpec& spec) {
  for (PodSpec& pod : spec.pods) {
    bool namespace_enrolled = false;
    if (auto ns = config.namespaces.find(pod.namespace_name); ns != config.namespaces.end()) {
      auto mode = ns->second.find(kModeLabel);
      auto istio = ns->second.find(kIstioModeLabel);
      namespace_enrolled = (mode != ns->second.end() && mode->second == "enabled") ||
                           (istio != ns->second.end() && istio->second == "ambient");
    }
    auto mode = pod.labels.find(kModeLabel);
    auto istio = pod.labels.find(kIstioModeLabel);
    const bool opted_out = (mode != pod.labels.end() && mode->second == "none") ||
                           (istio != pod.labels.end() && istio->second == "none");
    pod.enrolled = namespace_enrolled && !opted_out;
  }
}

std::string PodsYaml(const SandboxSpec& spec) {
  YAML::Emitter out;
  out << YAML::Comment(
      absl::StrCat("Pods of sandbox ", spec.name, ", generated by nodeward-sandbox"));
  for (const PodSpec& pod : spec.pods) {
    out << YAML::BeginDoc << YAML::BeginMap;
    out << YAML::Key << "apiVersion" << YAML::Value << "v1";
    out << YAML::Key << "kind" << YAML::Value << "Pod";
    out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << pod.name;
    out << YAML::Key << "namespace" << YAML::Value << pod.namespace_name;
    out << YAML::Key << "uid" << YAML::Value << pod.uid;
    if (!pod.labels.empty()) {
      out << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
      for (const auto& [key, value] : pod.labels) {
        out << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
      }
      out << YAML::EndMap;
    }
    out << YAML::EndMap;  // metadata
    out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "serviceAccountName" << YAML::Value << pod.service_account;
    out << YAML::Key << "nodeName" << YAML::Value << pod.node;
    out << YAML::Key << "containers" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << "app";
    out << YAML::Key << "image" << YAML::Value << "nodeward-sandbox";
    if (!pod.ports.empty()) {
      out << YAML::Key << "ports" << YAML::Value << YAML::BeginSeq;
      for (int port : pod.ports) {
        out << YAML::BeginMap;
        if (auto name = pod.port_names.find(port); name != pod.port_names.end()) {
          out << YAML::Key << "name" << YAML::Value << name->second;
        }
        out << YAML::Key << "containerPort" << YAML::Value << port << YAML::Key << "protocol"
            << YAML::Value << "TCP" << YAML::EndMap;
      }
      out << YAML::EndSeq;
    }
    out << YAML::EndMap << YAML::EndSeq;  // containers
    out << YAML::EndMap;                  // spec
    out << YAML::Key << "status" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "phase" << YAML::Value << "Running";
    out << YAML::Key << "podIP" << YAML::Value << pod.address;
    out << YAML::Key << "podIPs" << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key
        << "ip" << YAML::Value << pod.address << YAML::EndMap << YAML::EndSeq;
    out << YAML::Key << "conditions" << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key
        << "type" << YAML::Value << "Ready" << YAML::Key << "status" << YAML::Value
        << YAML::DoubleQuoted << "True" << YAML::EndMap << YAML::EndSeq;
    out << YAML::EndMap;  // status
    out << YAML::EndMap;
  }
  return absl::StrCat(out.c_str(), "\n");
}

std::string MissingNamespacesYaml(const SandboxSpec& spec, const ClusterConfig& config) {
  std::set<std::string> missing;
  for (const PodSpec& pod : spec.pods) {
    if (!config.namespaces.contains(pod.namespace_name)) missing.insert(pod.namespace_name);
  }
  if (missing.empty()) return "";
  YAML::Emitter out;
  out << YAML::Comment("Namespaces of sandbox pods that the configuration does not define");
  for (const std::string& name : missing) {
    out << YAML::BeginDoc << YAML::BeginMap;
    out << YAML::Key << "apiVersion" << YAML::Value << "v1";
    out << YAML::Key << "kind" << YAML::Value << "Namespace";
    out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
        << YAML::Value << name << YAML::EndMap;
    out << YAML::EndMap;
  }
  return absl::StrCat(out.c_str(), "\n");
}

}  // namespace nodeward::sandbox
