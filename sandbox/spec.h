// The sandbox description (a YAML file), the addresses and names derived from it, and the
// Kubernetes configuration the agents read: the user's files plus generated Pods and
// Namespaces.
//
//   name: demo                  # [a-z0-9]{1,12}: prefixes every object of the sandbox
//   trustDomain: cluster.local  # optional
//   nodes: [node1, node2]
//   pods:
//   - {name: web, namespace: frontend, serviceAccount: web, node: node1, ports: [8080],
//      labels: {app: web}}
//   - {name: ext, node: node2, ports: [{port: 8443, name: https}],   # named container port
//      tls: {cert: pki/server-cert.pem, key: pki/server-key.pem}}    # the app serves TLS
//   - {name: gw, namespace: istio-ingress, serviceAccount: gateway, node: node1,
//      labels: {istio: ingressgateway}, gateway: true}    # runs nodeward-gateway, not the app
//   outside: true               # optional; a netns "outside" that is not a node (clients)
//   certLifetime: 6s            # optional; workload certificate lifetime (rotation at half)
//   config: config/             # optional; directory of Kubernetes YAML, relative to this file
//   traffic:                    # optional; the calls `nodeward-sandbox demo` makes
//   - {from: web, to: api.back, port: 80, expect: mtls}
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace nodeward::sandbox {

struct NodeSpec {
  std::string name;
  int index = 0;            // 1-based
  std::string address;      // 10.240.0.<index>, on the fabric bridge
  std::string pod_cidr;     // 10.241.<index>.0/24
  std::string pod_gateway;  // 10.241.<index>.1, the node end of every pod veth
};

struct PodSpec {
  std::string name;
  std::string namespace_name = "default";
  std::string service_account = "default";
  std::string node;
  std::vector<int> ports;
  std::map<int, std::string> port_names;  // container port names, where given
  std::map<std::string, std::string> labels;
  // When set (absolute paths), the pod's application serves TLS with this certificate chain
  // and key on every port.
  std::string tls_cert, tls_key;
  // The pod runs nodeward-gateway (for the Gateways selecting its labels) instead of the
  // application, whatever its ports say.
  bool gateway = false;
  // Derived.
  int node_index = 0;     // 1-based index of `node`
  int index_on_node = 0;  // 0-based
  std::string address;    // 10.241.<node_index>.<index_on_node + 2>
  std::string uid;
  bool enrolled = false;  // decided from the Namespace labels of the configuration
};

// One call of the demo's traffic matrix.
struct TrafficSpec {
  std::string from;    // a pod: "name" or "namespace/name"
  std::string to;      // a pod, a Service as "name.namespace", or an IP address
  int port = 0;        // the port dialled (a Service port for a Service)
  std::string expect;  // empty (anything goes) or one of kTrafficExpectations
  // Further checks, each only when given:
  std::optional<bool> wire;      // the marker is (true) or is not (false) readable on the wire
  std::optional<bool> received;  // the server application received the marker (or did not)
  std::string reason;            // a refusal's or failure's access-log reason contains this
};
inline constexpr const char* kTrafficExpectations[] = {"mtls",      "plaintext",       "refused",
                                                       "same-node", "tls-origination", "error"};

struct SandboxSpec {
  std::string name;
  std::string trust_domain = "cluster.local";
  std::vector<NodeSpec> nodes;
  std::vector<PodSpec> pods;
  std::string config_dir;  // absolute, empty when the file names none
  std::vector<TrafficSpec> traffic;
  // Lifetime of workload certificates (nodeward-sds --cert-lifetime); zero: its default.
  absl::Duration cert_lifetime = absl::ZeroDuration();
  // A network namespace "outside" on the fabric (10.240.0.250) that is no node: clients from
  // outside the cluster, with routes to every pod CIDR through its node, as a load balancer
  // reaches a gateway pod.
  bool outside = false;
};
inline constexpr char kOutside[] = "outside";
inline constexpr char kOutsideAddress[] = "10.240.0.250";

// Parses and validates a sandbox file; unknown keys are errors (they are usually typos).
absl::StatusOr<SandboxSpec> LoadSandboxFile(const std::string& path);
absl::StatusOr<SandboxSpec> ParseSandbox(const std::string& text, const std::string& base_dir);

// Renames a parsed sandbox (and the pod uids derived from its name).
absl::Status RenameSandbox(SandboxSpec& spec, const std::string& name);

// The pod named "name" or "namespace/name", or nullptr.
const PodSpec* FindPod(const SandboxSpec& spec, const std::string& pod);

// Sandbox names become parts of interface-free object names; only [a-z0-9]{1,12}, so that the
// prefix of one sandbox is never the prefix of another.
absl::Status ValidateSandboxName(const std::string& name);

// Names and paths of a sandbox's objects.
std::string RunDir(const std::string& sandbox);  // /run/nodeward-sandbox/NAME
std::string NetnsName(const std::string& sandbox, const std::string& member);  // nws-NAME-X
std::string NetnsPrefix(const std::string& sandbox);                           // nws-NAME-
std::string NetnsPath(const std::string& netns_name);                          // /run/netns/...
std::string CgroupRoot();                               // /sys/fs/cgroup/unified
std::string SandboxCgroup(const std::string& sandbox);  // <root>/nodeward-sandbox-NAME
std::string PinPrefix(const std::string& sandbox);      // /sys/fs/bpf/nodeward-sandbox-NAME-
inline constexpr char kFabric[] = "fabric";

std::string SpiffeId(const std::string& trust_domain, const std::string& namespace_name,
                     const std::string& service_account);

struct ServiceInfo {
  std::string namespace_name, name, cluster_ip;
  std::map<std::string, std::string> selector;
};

// The user's configuration directory, parsed just enough to decide enrollment and to resolve
// the Services that traffic entries name.
struct ClusterConfig {
  // File name -> contents, copied verbatim to the agents' configuration directory.
  std::vector<std::pair<std::string, std::string>> files;
  // Namespace name -> labels, for every Namespace object found.
  std::map<std::string, std::map<std::string, std::string>> namespaces;
  std::vector<ServiceInfo> services;
};

absl::StatusOr<ClusterConfig> LoadConfigDir(const std::string& directory);

// Sets PodSpec::enrolled: the namespace is labelled nodeward.io/dataplane-mode=enabled or
// istio.io/dataplane-mode=ambient, and the pod does not opt out with either label = none.
void DecideEnrollment(const ClusterConfig& config, SandboxSpec& spec);

// Where a traffic entry's `to` leads.
struct TrafficTarget {
  std::string address;           // the IP dialled
  const PodSpec* pod = nullptr;  // the destination pod when known (a Service: its first
                                 // selected pod); points into the SandboxSpec
};
absl::StatusOr<TrafficTarget> ResolveTarget(const SandboxSpec& spec, const ClusterConfig& config,
                                            const std::string& to);

// A v1 Pod per pod of the sandbox (multi-document YAML).
std::string PodsYaml(const SandboxSpec& spec);
// A v1 Namespace (no labels) for every pod namespace the configuration does not define;
// empty when there is none.
std::string MissingNamespacesYaml(const SandboxSpec& spec, const ClusterConfig& config);

}  // namespace nodeward::sandbox
