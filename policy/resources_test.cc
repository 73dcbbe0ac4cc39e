#include "policy/resources.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/port_number.h"
#include "common/testing/literals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using literals::IpOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kManifests[] = R"yaml(
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    nodeward.io/dataplane-mode: enabled
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-1
  namespace: shop
  labels: {app: reviews}
  creationTimestamp: "2024-05-01T10:00:00Z"
  unknownField: ignored
spec:
  nodeName: node-a
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 9080}
    - {containerPort: 9090, protocol: UDP}
status:
  phase: Running
  podIP: 10.0.0.9
  podIPs: [{ip: 10.0.0.7}, {ip: "fd00::0007"}]
  conditions:
  - {type: Initialized, status: "True"}
  - {type: Ready, status: "True"}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy}
spec:
  serviceAccount: old-style
status: {podIP: 10.0.0.8}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector: {app: reviews}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 8081, targetPort: 9901}
  - {name: plain, port: 7000}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: shop
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports: [{name: http, port: 9080, protocol: TCP}]
endpoints:
- addresses: [10.0.0.7]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-1, namespace: shop}
- addresses: [10.0.0.99]
  conditions: {ready: false}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector:
    matchLabels: {app: reviews}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
    9090: {}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  exportTo: ["."]
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 8081}
      tls:
        mode: MUTUAL
        clientCertificate: /certs/cert.pem
        privateKey: /certs/key.pem
        caCertificates: /certs/ca.pem
        subjectAltNames: [admin.example.com]
        sni: admin.example.com
        insecureSkipVerify: false
        caCrl: /certs/crl.pem
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: unknown-kinds-are-ignored}
---
)yaml";

TEST(ResourcesTest, ParsesEveryKnownKind) {
  ResourceSet set;
  ASSERT_TRUE(AppendYamlResources(kManifests, "m.yaml", set).ok());
  ASSERT_EQ(set.namespaces.size(), 1u);
  EXPECT_EQ(set.namespaces[0].meta.labels.at("nodeward.io/dataplane-mode"), "enabled");
  EXPECT_EQ(set.namespaces[0].meta.origin, "m.yaml:2");

  ASSERT_EQ(set.pods.size(), 2u);
  const Pod& pod = set.pods[0];
  EXPECT_EQ(pod.meta.ns, "shop");
  EXPECT_EQ(pod.service_account, "default");
  EXPECT_EQ(pod.node_name, "node-a");
  EXPECT_TRUE(pod.ready);
  EXPECT_THAT(pod.ips, ElementsAre(IpOf("10.0.0.7"), IpOf("fd00::7")));  // podIPs wins over podIP
  ASSERT_EQ(pod.ports.size(), 2u);
  EXPECT_EQ(pod.ports[0].name, "http");
  EXPECT_EQ(pod.ports[0].container_port, 9080u);
  EXPECT_EQ(pod.ports[1].protocol, "UDP");
  EXPECT_EQ(pod.meta.creation_timestamp,
            absl::FromCivil(absl::CivilSecond(2024, 5, 1, 10, 0, 0), absl::UTCTimeZone()));
  EXPECT_EQ(set.pods[1].meta.ns, "default");
  EXPECT_EQ(set.pods[1].service_account, "old-style");
  EXPECT_FALSE(set.pods[1].ready);
  EXPECT_THAT(set.pods[1].ips, ElementsAre(IpOf("10.0.0.8")));

  ASSERT_EQ(set.services.size(), 2u);
  const Service& service = set.services[0];
  EXPECT_THAT(service.cluster_ips, ElementsAre(IpOf("10.96.0.10")));
  ASSERT_EQ(service.ports.size(), 3u);
  EXPECT_EQ(service.ports[0].target_port_name, "http");
  EXPECT_EQ(service.ports[1].target_port_number, 9901u);
  EXPECT_EQ(service.ports[2].target_port_number, 7000u);  // defaults to the port
  EXPECT_TRUE(set.services[1].cluster_ips.empty());       // headless

  ASSERT_EQ(set.endpoint_slices.size(), 1u);
  const EndpointSlice& slice = set.endpoint_slices[0];
  EXPECT_EQ(slice.service_name, "reviews");
  ASSERT_EQ(slice.endpoints.size(), 2u);
  EXPECT_EQ(slice.endpoints[0].target_pod_name, "reviews-1");
  EXPECT_FALSE(slice.endpoints[1].ready);

  ASSERT_EQ(set.peer_authentications.size(), 1u);
  const PeerAuthentication& policy = set.peer_authentications[0];
  ASSERT_TRUE(policy.selector.has_value());
  EXPECT_EQ(policy.mode, MtlsMode::kStrict);
  EXPECT_EQ(policy.port_level.at(9080), MtlsMode::kDisable);
  EXPECT_EQ(policy.port_level.at(9090), MtlsMode::kUnset);

  ASSERT_EQ(set.destination_rules.size(), 1u);
  const DestinationRule& rule = set.destination_rules[0];
  EXPECT_EQ(rule.host, "reviews");
  EXPECT_THAT(rule.export_to, ElementsAre("."));
  ASSERT_TRUE(rule.tls.has_value());
  EXPECT_EQ(rule.tls->mode, TlsMode::kIstioMutual);
  ASSERT_EQ(rule.port_level.size(), 1u);
  const ClientTlsSettings& tls = *rule.port_level[0].tls;
  EXPECT_EQ(tls.mode, TlsMode::kMutual);
  EXPECT_EQ(tls.client_certificate, "/certs/cert.pem");
  EXPECT_EQ(tls.private_key, "/certs/key.pem");
  EXPECT_EQ(tls.ca_certificates, "/certs/ca.pem");
  EXPECT_THAT(tls.subject_alt_names, ElementsAre("admin.example.com"));
  EXPECT_EQ(tls.sni, "admin.example.com");
  EXPECT_EQ(tls.ca_crl, "/certs/crl.pem");
}

TEST(ResourcesTest, ParsesJsonAndApiLists) {
  // The API server answers lists whose items carry no kind or apiVersion.
  constexpr char kList[] = R"json({"kind":"PodList","apiVersion":"v1",
    "metadata":{"resourceVersion":"12"},
    "items":[{"metadata":{"name":"a","namespace":"x","resourceVersion":"11"},
              "spec":{"serviceAccountName":"sa"},"status":{"podIP":"10.1.0.1"}}]})json";
  ResourceSet set;
  ASSERT_TRUE(AppendYamlResources(kList, "list.json", set).ok());
  ASSERT_EQ(set.pods.size(), 1u);
  EXPECT_EQ(set.pods[0].service_account, "sa");
  EXPECT_EQ(set.pods[0].meta.resource_version, "11");

  constexpr char kGenericList[] = R"yaml(
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: one}
)yaml";
  ResourceSet generic;
  ASSERT_TRUE(AppendYamlResources(kGenericList, "list.yaml", generic).ok());
  ASSERT_EQ(generic.namespaces.size(), 1u);
}

struct ErrorCase {
  std::string name;
  std::string yaml;
  std::string expected;  // a substring of the error
};

class ResourceErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ResourceErrorTest, NamesFileLineResourceAndField) {
  ResourceSet set;
  absl::Status status = AppendYamlResources(GetParam().yaml, "cfg/bad.yaml", set);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ResourceErrorTest,
    ::testing::Values(
        ErrorCase{"BadPeerAuthenticationMode", R"(apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: ns}
spec:
  mtls:
    mode: STRICTEST
)",
                  "cfg/bad.yaml:6: PeerAuthentication ns/p: spec.mtls.mode: unknown mode "
                  "\"STRICTEST\""},
        ErrorCase{"BadPortKey", R"(apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: ns}
spec:
  selector: {matchLabels: {app: a}}
  portLevelMtls:
    http: {mode: STRICT}
)",
                  "cfg/bad.yaml:7: PeerAuthentication ns/p: spec.portLevelMtls key: \"http\" is "
                  "not a port number"},
        ErrorCase{"BadDestinationRuleMode", R"(---
apiVersion: v1
kind: Namespace
metadata: {name: ok}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec:
  host: x
  trafficPolicy:
    tls: {mode: MUTAL}
)",
                  "cfg/bad.yaml:12: DestinationRule ns/d: spec.trafficPolicy.tls.mode: unknown "
                  "mode \"MUTAL\""},
        ErrorCase{
            "MutualWithoutCertificate", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec:
  host: x
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL}
)",
            "DestinationRule ns/d: spec.trafficPolicy.portLevelSettings[0].tls: MUTUAL needs"},
        ErrorCase{"CredentialNameWithFiles", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec:
  host: x
  trafficPolicy:
    tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}
)",
                  "credentialName cannot be combined"},
        ErrorCase{"MissingHost", R"(apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec: {trafficPolicy: {}}
)",
                  "DestinationRule ns/d: spec.host: missing"},
        ErrorCase{"BadWildcard", R"(apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec: {host: "a.*.com"}
)",
                  "spec.host: \"a.*.com\": a wildcard"},
        ErrorCase{"BadPodIp", R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
status:
  podIPs:
  - ip: 10.0.0.300
)",
                  "cfg/bad.yaml:6: Pod ns/p: status.podIPs[0].ip: \"10.0.0.300\" is not an IP"},
        ErrorCase{"BadContainerPort", R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  containers:
  - name: c
    ports: [{containerPort: 70000}]
)",
                  "Pod ns/p: spec.containers[0].ports[0].containerPort: \"70000\" is not a port"},
        ErrorCase{"BadServicePort", R"(apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  ports:
  - port: 80
    targetPort: 0
)",
                  "cfg/bad.yaml:7: Service ns/s: spec.ports[0].targetPort"},
        ErrorCase{"BadTimestamp", R"(apiVersion: v1
kind: Namespace
metadata:
  name: n
  creationTimestamp: yesterday
)",
                  "cfg/bad.yaml:5: Namespace n: metadata.creationTimestamp: not an RFC 3339"},
        ErrorCase{"MissingName", R"(apiVersion: v1
kind: Service
metadata: {namespace: ns}
)",
                  "Service ns/(unnamed): metadata.name: missing"},
        ErrorCase{"LabelsNotAMap", R"(apiVersion: v1
kind: Namespace
metadata:
  name: n
  labels: [a, b]
)",
                  "cfg/bad.yaml:5: Namespace n: metadata.labels: expected a map"},
        ErrorCase{"UnsupportedVersion", R"(apiVersion: security.istio.io/v1alpha1
kind: PeerAuthentication
metadata: {name: p}
)",
                  "cfg/bad.yaml:1: PeerAuthentication: apiVersion: unsupported version"},
        ErrorCase{"BadInsecureSkipVerify", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec:
  host: x
  trafficPolicy:
    tls: {mode: SIMPLE, insecureSkipVerify: maybe}
)",
                  "spec.trafficPolicy.tls.insecureSkipVerify: expected true or false"},
        ErrorCase{"NestedList", R"(apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: List
  items: []
)",
                  "cfg/bad.yaml:4: List: kind: a List inside a List is not supported"},
        // A port is a port only in canonical decimal, in every field that takes one.
        ErrorCase{"LeadingZeroContainerPort", R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec: {containers: [{name: c, ports: [{containerPort: 08080}]}]}
)",
                  "containerPort: \"08080\" is not a port number (1-65535, without leading zeros)"},
        ErrorCase{"LeadingZeroServicePort", R"(apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {ports: [{port: 080}]}
)",
                  "Service ns/s: spec.ports[0].port: \"080\" is not a port number"},
        ErrorCase{"LeadingZeroTargetPort", R"(apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {ports: [{port: 80, targetPort: "08080"}]}
)",
                  "spec.ports[0].targetPort: \"08080\" is not a port number"},
        ErrorCase{"SignedEndpointSlicePort", R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: e, namespace: ns}
addressType: IPv4
ports: [{port: "+80"}]
)",
                  "ports[0].port: \"+80\" is not a port number"},
        ErrorCase{"LeadingZeroPortLevelMtls", R"(apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: ns}
spec:
  selector: {matchLabels: {app: a}}
  portLevelMtls: {"08080": {mode: STRICT}}
)",
                  "spec.portLevelMtls key: \"08080\" is not a port number"},
        ErrorCase{"LeadingZeroPortLevelSettings", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec:
  host: x
  trafficPolicy: {portLevelSettings: [{port: {number: 0443}}]}
)",
                  "portLevelSettings[0].port.number: \"0443\" is not a port number"},
        ErrorCase{"HexPort", R"(apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {ports: [{port: 0x50}]}
)",
                  "\"0x50\" is not a port number"},
        ErrorCase{"ExportToNowhereWithOthers", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec: {host: x, exportTo: ["~", "."]}
)",
                  "spec.exportTo: \"~\" (exported nowhere) cannot be combined"},
        ErrorCase{"WorkloadSelectorNotAMap", R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d, namespace: ns}
spec: {host: x, workloadSelector: [a]}
)",
                  "spec.workloadSelector: expected a map"},
        ErrorCase{"NotAnObject", "- just\n- a list\n", "cfg/bad.yaml:1: document"},
        ErrorCase{"SyntaxError", "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
                  "cfg/bad.yaml:4: invalid YAML"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(ResourcesTest, PortNumbersAreReadStrictly) {
  for (absl::string_view good : {"1", "80", "8080", "65535"}) {
    EXPECT_TRUE(ParsePortNumber(good).has_value()) << good;
  }
  for (absl::string_view bad :
       {"", "0", "08080", "+80", " 80", "80 ", "0x50", "80.0", "65536", "123456", "-1"}) {
    EXPECT_FALSE(ParsePortNumber(bad).has_value()) << bad;
  }
}

TEST(ResourcesTest, DestinationRuleWorkloadSelectorAndTrafficPolicyPresence) {
  ResourceSet set;
  ASSERT_TRUE(AppendYamlResources(R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: ns}
spec: {host: x, workloadSelector: {matchLabels: {app: c}}, trafficPolicy: {loadBalancer: {}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: ns}
spec: {host: x, exportTo: ["~"], workloadSelector: {}}
)",
                                  "dr.yaml", set)
                  .ok());
  ASSERT_EQ(set.destination_rules.size(), 2u);
  EXPECT_EQ(set.destination_rules[0].workload_selector, Labels({{"app", "c"}}));
  EXPECT_TRUE(set.destination_rules[0].has_traffic_policy);
  EXPECT_FALSE(set.destination_rules[0].tls.has_value());
  // An empty selector is still a selector: Istio keeps such a rule private.
  EXPECT_EQ(set.destination_rules[1].workload_selector, Labels());
  EXPECT_FALSE(set.destination_rules[1].has_traffic_policy);
}

TEST(ResourcesTest, SnapshotRefusesKindsOverTheirLimit) {
  ResourceSet set;
  for (int i = 0; i < 3; ++i) {
    Service service;
    service.meta.name = absl::StrCat("s", i);
    service.meta.ns = "ns";
    set.services.push_back(service);
  }
  SnapshotOptions options;
  options.limits.max_services = 2;
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(set, options);
  ASSERT_FALSE(snapshot.ok());
  EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(snapshot.status().message()),
              HasSubstr("too many Services: 3 (at most 2 are loaded)"));
  options.limits.max_services = 3;
  EXPECT_TRUE(Snapshot::Build(set, options).ok());
}

TEST(ResourcesTest, DuplicateObjectsNameBothOrigins) {
  ResourceSet set;
  ASSERT_TRUE(
      AppendYamlResources("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n", "one.yaml", set)
          .ok());
  ASSERT_TRUE(AppendYamlResources("\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
                                  "two.yaml", set)
                  .ok());
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(set, {});
  ASSERT_FALSE(snapshot.ok());
  EXPECT_THAT(std::string(snapshot.status().message()),
              HasSubstr("Namespace a is defined twice: at one.yaml:1 and at two.yaml:2"));
}

TEST(ResourcesTest, MalformedStreamsReturnInsteadOfHanging) {
  // Inputs on which yaml-cpp 0.7's LoadAll loops forever; returning at all is the point.
  ResourceSet set;
  EXPECT_FALSE(
      AppendYamlResources("!p:\"http\",\"port\":9080,\"pro\":{\"ready\":true},\"ta[", "x.yaml", set)
          .ok());
  for (const char* text : {",", "---\n,\n---\n,\n"}) {
    EXPECT_TRUE(AppendYamlResources(text, "x.yaml", set).ok()) << text;
  }
  EXPECT_EQ(set.size(), 0u);
}

TEST(ResourcesTest, DocumentMarkersKeepLineNumbers) {
  constexpr char kText[] = R"(# leading comment
apiVersion: v1
kind: Namespace
metadata: {name: a}
...
--- # a comment after the marker
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
---
apiVersion: v1
kind: Namespace
metadata:
  name: c
  labels: 7
)";
  ResourceSet set;
  absl::Status status = AppendYamlResources(kText, "m.yaml", set);
  EXPECT_THAT(std::string(status.message()), HasSubstr("m.yaml:16: Namespace c: metadata.labels"));
  ASSERT_EQ(set.namespaces.size(), 2u);
  EXPECT_EQ(set.namespaces[0].meta.origin, "m.yaml:2");
  EXPECT_EQ(set.namespaces[1].meta.origin, "m.yaml:7");
}

// Addresses are values, not text: any spelling of one finds the pod.
TEST(ResourcesTest, AddressesAreOneTypeWhateverTheirSpelling) {
  ResourceSet set;
  ASSERT_TRUE(AppendYamlResources(R"(apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
status: {podIPs: [{ip: "FD00:0:0::1"}, {ip: 10.0.0.1}]}
)",
                                  "a.yaml", set)
                  .ok());
  ASSERT_EQ(set.pods.size(), 1u);
  EXPECT_THAT(set.pods[0].ips, ElementsAre(IpOf("fd00::1"), IpOf("10.0.0.1")));
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(set, {});
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  ASSERT_NE((*snapshot)->FindPodByIp(IpOf("fd00:0000::0001")), nullptr);
  EXPECT_EQ((*snapshot)->FindPodByIp(IpOf("fd00::1"))->meta.name, "p");
  for (const char* bad : {"\"\"", "10.0.0", "10.0.0.1/32"}) {
    ResourceSet scratch;
    absl::Status status = AppendYamlResources(
        absl::StrCat("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\n",
                     "status: {podIP: ", bad, "}\n"),
        "b.yaml", scratch);
    EXPECT_THAT(std::string(status.message()), HasSubstr("is not an IP address")) << bad;
  }
}

}  // namespace
}  // namespace nodeward::policy
