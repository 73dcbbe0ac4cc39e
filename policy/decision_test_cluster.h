// Test-only: a small cluster in YAML and helpers to write policies on top of it, shared by the
// decision tests (decisions_test.cc, destination_rules_test.cc, authorization_test.cc).
#pragma once

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/substitute.h"
#include "gtest/gtest.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/trace.h"

namespace nodeward::policy::testing_cluster {

// A small cluster: "shop" and "billing" are enrolled (two label spellings), "legacy" is not.
inline constexpr char kCluster[] = R"yaml(
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {nodeward.io/dataplane-mode: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: billing, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 10.0.1.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-1, namespace: shop, labels: {app: reviews, version: v1}}
spec:
  serviceAccountName: reviews
  containers:
  - name: app
    ports: [{name: http, containerPort: 9080}, {name: metrics, containerPort: 15090}]
status: {podIP: 10.0.1.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-unready, namespace: shop, labels: {app: reviews, version: v2}}
spec:
  serviceAccountName: reviews
  containers:
  - name: app
    ports: [{name: http, containerPort: 9080}]
status: {podIP: 10.0.1.4, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: optout
  namespace: shop
  labels: {app: optout, nodeward.io/dataplane-mode: none}
status: {podIP: 10.0.1.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: shop, labels: {app: hostnet}}
spec: {hostNetwork: true}
status: {podIP: 192.168.0.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: payments-1, namespace: billing, labels: {app: payments}}
spec:
  serviceAccountName: payments
  containers:
  - name: app
    ports: [{name: grpc, containerPort: 8443}]
status: {podIP: 10.0.2.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: payments-2, namespace: billing, labels: {app: payments}}
spec:
  serviceAccountName: payments
  containers:
  - name: app
    ports: [{name: grpc, containerPort: 8443}]
status: {podIP: 10.0.2.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: gateway, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {serviceAccountName: ingress}
status: {podIP: 10.0.9.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old-1, namespace: legacy, labels: {app: old}}
status: {podIP: 10.0.3.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.1.1
  selector: {app: reviews}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 15090}
---
apiVersion: v1
kind: Service
metadata: {name: optout, namespace: shop}
spec: {clusterIP: 10.96.1.3, selector: {app: optout}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec: {clusterIP: 10.96.1.9, selector: {app: nothing}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: billing}
spec:
  clusterIP: 10.96.2.1
  selector: {app: payments}
  ports: [{name: grpc, port: 443, targetPort: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {clusterIP: 10.96.3.1, selector: {app: old}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: billing}
spec: {clusterIP: 10.96.2.9, ports: [{name: web, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sliced-x
  namespace: billing
  labels: {kubernetes.io/service-name: sliced}
addressType: IPv4
ports: [{name: web, port: 8081}]
endpoints:
- addresses: [10.0.2.2]
  targetRef: {kind: Pod, name: payments-2, namespace: billing}
- addresses: [10.0.2.1]
  conditions: {ready: false}
)yaml";

// A PeerAuthentication. `selector` is an app label ("" for none), `ports` a flow map body
// such as "9080: {mode: DISABLE}".
inline std::string Pa(absl::string_view name, absl::string_view ns, absl::string_view mode,
                      absl::string_view selector = "", absl::string_view created = "",
                      absl::string_view ports = "") {
  std::string yaml = absl::Substitute(
      "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
      "metadata: {name: $0, namespace: $1$2}\nspec:\n  mtls: {$3}\n",
      name, ns, created.empty() ? "" : absl::StrCat(", creationTimestamp: \"", created, "\""),
      mode.empty() ? "" : absl::StrCat("mode: ", mode));
  if (!selector.empty())
    absl::StrAppend(&yaml, "  selector: {matchLabels: {app: ", selector, "}}\n");
  if (!ports.empty()) absl::StrAppend(&yaml, "  portLevelMtls: {", ports, "}\n");
  return yaml;
}

// A DestinationRule; `tls` and `extra_spec` are YAML fragments.
inline std::string Dr(absl::string_view name, absl::string_view ns, absl::string_view host,
                      absl::string_view tls, absl::string_view export_to = "",
                      absl::string_view created = "", absl::string_view port_level = "") {
  std::string yaml = absl::Substitute(
      "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
      "metadata: {name: $0, namespace: $1$2}\nspec:\n  host: \"$3\"\n",
      name, ns, created.empty() ? "" : absl::StrCat(", creationTimestamp: \"", created, "\""),
      host);
  if (!export_to.empty()) absl::StrAppend(&yaml, "  exportTo: [", export_to, "]\n");
  absl::StrAppend(&yaml, "  trafficPolicy:\n");
  if (!tls.empty()) absl::StrAppend(&yaml, "    tls: {", tls, "}\n");
  if (!port_level.empty()) absl::StrAppend(&yaml, "    portLevelSettings: [", port_level, "]\n");
  return yaml;
}

inline std::shared_ptr<const Snapshot> Load(const std::string& extra,
                                            SnapshotOptions options = {}) {
  ResourceSet set;
  absl::Status status = AppendYamlResources(kCluster, "cluster.yaml", set);
  EXPECT_TRUE(status.ok()) << status;
  status = AppendYamlResources(extra, "extra.yaml", set);
  EXPECT_TRUE(status.ok()) << status;
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
      Snapshot::Build(std::move(set), std::move(options));
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return snapshot.ok() ? *snapshot : nullptr;
}

inline const Pod& PodNamed(const Snapshot& snapshot, absl::string_view ns, absl::string_view name) {
  const Pod* pod = snapshot.FindPod(ns, name);
  EXPECT_NE(pod, nullptr) << ns << "/" << name;
  static const Pod* missing = new Pod();
  return pod != nullptr ? *pod : *missing;
}

// "ns/name", or a bare name in shop.
inline const Pod& PodRef(const Snapshot& snapshot, const std::string& ref) {
  const size_t slash = ref.find('/');
  if (slash == std::string::npos) return PodNamed(snapshot, "shop", ref);
  return PodNamed(snapshot, ref.substr(0, slash), ref.substr(slash + 1));
}

inline std::string AllWarnings(const Trace& trace) { return absl::StrJoin(trace.warnings, "\n"); }

}  // namespace nodeward::policy::testing_cluster
