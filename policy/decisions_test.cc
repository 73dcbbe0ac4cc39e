#include "policy/decisions.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/substitute.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A small cluster: "shop" and "billing" are enrolled (two label spellings), "legacy" is not.
constexpr char kCluster[] = R"yaml(
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
std::string Pa(absl::string_view name, absl::string_view ns, absl::string_view mode,
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
std::string Dr(absl::string_view name, absl::string_view ns, absl::string_view host,
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

std::shared_ptr<const Snapshot> Load(const std::string& extra, SnapshotOptions options = {}) {
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

const Pod& PodNamed(const Snapshot& snapshot, absl::string_view ns, absl::string_view name) {
  const Pod* pod = snapshot.FindPod(ns, name);
  EXPECT_NE(pod, nullptr) << ns << "/" << name;
  static const Pod* missing = new Pod();
  return pod != nullptr ? *pod : *missing;
}

std::string AllWarnings(const Trace& trace) { return absl::StrJoin(trace.warnings, "\n"); }

// ---------------------------------------------------------------------------------------
// Effective PeerAuthentication mode.

struct ModeCase {
  std::string name;
  std::string config;
  std::string pod;  // in "shop" unless "ns/name"
  uint32_t port;
  MtlsMode expected;
  ModeByLevel levels;
  std::string decided_by;  // "" when nothing decides (default PERMISSIVE)
  std::string warning;     // a substring expected among the warnings, if any
  std::string root_namespace = "istio-system";
};

class EffectiveModeTest : public ::testing::TestWithParam<ModeCase> {};

TEST_P(EffectiveModeTest, Resolves) {
  const ModeCase& c = GetParam();
  SnapshotOptions options;
  options.root_namespace = c.root_namespace;
  std::shared_ptr<const Snapshot> snapshot = Load(c.config, options);
  ASSERT_NE(snapshot, nullptr);
  std::string ns = "shop", name = c.pod;
  if (size_t slash = c.pod.find('/'); slash != std::string::npos) {
    ns = c.pod.substr(0, slash);
    name = c.pod.substr(slash + 1);
  }
  EffectiveMtls result = ResolveMtlsMode(*snapshot, PodNamed(*snapshot, ns, name), c.port);
  SCOPED_TRACE(result.trace.ToString());
  EXPECT_EQ(result.mode, c.expected);
  EXPECT_EQ(result.levels.mesh, c.levels.mesh);
  EXPECT_EQ(result.levels.namespace_level, c.levels.namespace_level);
  EXPECT_EQ(result.levels.workload, c.levels.workload);
  EXPECT_EQ(result.levels.port, c.levels.port);
  if (c.decided_by.empty()) {
    EXPECT_THAT(result.trace.deciding, IsEmpty());
  } else {
    EXPECT_THAT(result.trace.deciding, Contains(c.decided_by));
  }
  if (c.warning.empty()) {
    EXPECT_THAT(result.trace.warnings, IsEmpty());
  } else {
    EXPECT_THAT(AllWarnings(result.trace), HasSubstr(c.warning));
  }
}

constexpr MtlsMode U = MtlsMode::kUnset, D = MtlsMode::kDisable, P = MtlsMode::kPermissive,
                   S = MtlsMode::kStrict;

INSTANTIATE_TEST_SUITE_P(
    Levels, EffectiveModeTest,
    ::testing::Values(
        ModeCase{"NothingIsPermissive", "", "reviews-1", 9080, P, {U, U, U, U}, ""},
        ModeCase{"MeshWide",
                 Pa("mesh", "istio-system", "STRICT"),
                 "reviews-1",
                 9080,
                 S,
                 {S, U, U, U},
                 "PeerAuthentication istio-system/mesh"},
        ModeCase{"NamespaceOverridesMesh",
                 Pa("mesh", "istio-system", "STRICT") + Pa("ns", "shop", "DISABLE"),
                 "reviews-1",
                 9080,
                 D,
                 {S, D, U, U},
                 "PeerAuthentication shop/ns"},
        ModeCase{"NamespaceUnsetInheritsMesh",
                 Pa("mesh", "istio-system", "STRICT") + Pa("ns", "shop", ""),
                 "reviews-1",
                 9080,
                 S,
                 {S, U, U, U},
                 "PeerAuthentication istio-system/mesh"},
        ModeCase{"OtherNamespacePolicyDoesNotApply",
                 Pa("ns", "billing", "STRICT"),
                 "reviews-1",
                 9080,
                 P,
                 {U, U, U, U},
                 ""},
        ModeCase{"WorkloadOverridesNamespace",
                 Pa("ns", "shop", "STRICT") + Pa("w", "shop", "PERMISSIVE", "reviews"),
                 "reviews-1",
                 9080,
                 P,
                 {U, S, P, U},
                 "PeerAuthentication shop/w"},
        ModeCase{"SelectorNotMatching",
                 Pa("w", "shop", "STRICT", "ratings"),
                 "reviews-1",
                 9080,
                 P,
                 {U, U, U, U},
                 ""},
        ModeCase{"PortLevelOverridesWorkload",
                 Pa("w", "shop", "STRICT", "reviews", "", "9080: {mode: DISABLE}"),
                 "reviews-1",
                 9080,
                 D,
                 {U, U, S, D},
                 "PeerAuthentication shop/w"},
        ModeCase{"PortLevelOnlyForItsPort",
                 Pa("w", "shop", "STRICT", "reviews", "", "9080: {mode: DISABLE}"),
                 "reviews-1",
                 15090,
                 S,
                 {U, U, S, U},
                 "PeerAuthentication shop/w"},
        ModeCase{"PortLevelUnsetInheritsWorkload",
                 Pa("w", "shop", "STRICT", "reviews", "", "9080: {mode: UNSET}"),
                 "reviews-1",
                 9080,
                 S,
                 {U, U, S, U},
                 "PeerAuthentication shop/w"},
        ModeCase{"WorkloadUnsetPortSetFallsBackToNamespaceElsewhere",
                 Pa("ns", "shop", "STRICT") +
                     Pa("w", "shop", "", "reviews", "", "9080: {mode: PERMISSIVE}"),
                 "reviews-1",
                 15090,
                 S,
                 {U, S, U, U},
                 "PeerAuthentication shop/ns"},
        ModeCase{"PortLevelIgnoredWithoutSelector",
                 Pa("ns", "shop", "STRICT", "", "", "9080: {mode: DISABLE}"),
                 "reviews-1",
                 9080,
                 S,
                 {U, S, U, U},
                 "PeerAuthentication shop/ns",
                 "portLevelMtls is ignored because the policy has no selector"},
        ModeCase{"OlderNamespacePolicyWins",
                 // Listed newest first: order in files must not matter.
                 Pa("newer", "shop", "DISABLE", "", "2024-06-01T00:00:00Z") +
                     Pa("older", "shop", "STRICT", "", "2023-01-01T00:00:00Z"),
                 "reviews-1",
                 9080,
                 S,
                 {U, S, U, U},
                 "PeerAuthentication shop/older",
                 "PeerAuthentication shop/newer is ignored: namespace shop already has the older "
                 "PeerAuthentication shop/older"},
        ModeCase{"SameAgeNameBreaksTie",
                 Pa("b-policy", "shop", "STRICT", "", "2024-01-01T00:00:00Z") +
                     Pa("a-policy", "shop", "DISABLE", "", "2024-01-01T00:00:00Z"),
                 "reviews-1",
                 9080,
                 D,
                 {U, D, U, U},
                 "PeerAuthentication shop/a-policy",
                 "shop/b-policy is ignored"},
        ModeCase{"OlderWorkloadPolicyWins",
                 Pa("w-new", "shop", "DISABLE", "reviews", "2024-06-01T00:00:00Z") +
                     Pa("w-old", "shop", "STRICT", "reviews", "2022-06-01T00:00:00Z"),
                 "reviews-1",
                 9080,
                 S,
                 {U, U, S, U},
                 "PeerAuthentication shop/w-old",
                 "shop/w-new is ignored"},
        ModeCase{"OlderMeshPolicyWins",
                 Pa("m2", "istio-system", "DISABLE", "", "2024-06-01T00:00:00Z") +
                     Pa("m1", "istio-system", "STRICT", "", "2021-06-01T00:00:00Z"),
                 "reviews-1",
                 9080,
                 S,
                 {S, U, U, U},
                 "PeerAuthentication istio-system/m1",
                 "istio-system/m2 is ignored"},
        ModeCase{"RootNamespaceSelectorIsNotMeshWide",
                 Pa("root-w", "istio-system", "STRICT", "reviews"),
                 "reviews-1",
                 9080,
                 P,
                 {U, U, U, U},
                 ""},
        ModeCase{"ConfigurableRootNamespace",
                 Pa("istio-ns", "istio-system", "DISABLE") + Pa("mesh", "billing", "STRICT"),
                 "reviews-1",
                 9080,
                 S,
                 {S, U, U, U},
                 "PeerAuthentication billing/mesh",
                 "",
                 "billing"},
        ModeCase{"WorkloadInRootNamespaceSeesMeshAsItsOnlyLevel",
                 Pa("mesh", "billing", "STRICT"),
                 "billing/payments-1",
                 8443,
                 S,
                 {S, U, U, U},
                 "PeerAuthentication billing/mesh",
                 "",
                 "billing"}),
    [](const ::testing::TestParamInfo<ModeCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Enrollment and identity.

TEST(EnrollmentTest, NamespaceLabelsAndPodOptOut) {
  std::shared_ptr<const Snapshot> snapshot = Load("");
  ASSERT_NE(snapshot, nullptr);
  struct Case {
    std::string ns, pod;
    bool enrolled;
    std::string reason;
  };
  for (const Case& c : std::vector<Case>{
           {"shop", "client", true, "nodeward.io/dataplane-mode=enabled"},
           {"billing", "payments-1", true, "istio.io/dataplane-mode=ambient"},
           {"shop", "optout", false, "opts out with label nodeward.io/dataplane-mode=none"},
           {"shop", "hostnet", false, "host network"},
           {"legacy", "old-1", false, "is not labelled"}}) {
    Enrollment enrollment = ResolveEnrollment(*snapshot, PodNamed(*snapshot, c.ns, c.pod));
    EXPECT_EQ(enrollment.enrolled, c.enrolled) << c.pod;
    EXPECT_THAT(enrollment.reason, HasSubstr(c.reason)) << c.pod;
  }
  Pod orphan;
  orphan.meta.name = "x";
  orphan.meta.ns = "nowhere";
  EXPECT_THAT(ResolveEnrollment(*snapshot, orphan).reason, HasSubstr("unknown"));
  Pod istio_opt_out = PodNamed(*snapshot, "shop", "client");
  istio_opt_out.meta.labels["istio.io/dataplane-mode"] = "none";
  EXPECT_FALSE(ResolveEnrollment(*snapshot, istio_opt_out).enrolled);
}

TEST(IdentityTest, SpiffeIdUsesTrustDomainNamespaceAndServiceAccount) {
  SnapshotOptions options;
  options.trust_domain = "example.org";
  std::shared_ptr<const Snapshot> snapshot = Load("", options);
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(WorkloadSpiffeId(*snapshot, PodNamed(*snapshot, "shop", "reviews-1")),
            "spiffe://example.org/ns/shop/sa/reviews");
  // A pod without serviceAccountName runs as "default".
  EXPECT_EQ(WorkloadSpiffeId(*snapshot, PodNamed(*snapshot, "legacy", "old-1")),
            "spiffe://example.org/ns/legacy/sa/default");
}

// ---------------------------------------------------------------------------------------
// Which DestinationRule applies.

struct RuleCase {
  std::string name;
  std::string config;
  std::string client_ns;
  std::string host;
  std::string service_ns;
  uint32_t port;
  std::string expected_rule;  // "" for none
  std::optional<TlsMode> expected_tls;
  bool port_level = false;
};

class DestinationRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(DestinationRuleTest, Selects) {
  const RuleCase& c = GetParam();
  std::shared_ptr<const Snapshot> snapshot = Load(c.config);
  ASSERT_NE(snapshot, nullptr);
  AppliedDestinationRule applied =
      ResolveDestinationRule(*snapshot, c.client_ns, c.host, c.service_ns, c.port);
  SCOPED_TRACE(applied.trace.ToString());
  if (c.expected_rule.empty()) {
    EXPECT_EQ(applied.rule, nullptr);
  } else {
    ASSERT_NE(applied.rule, nullptr);
    EXPECT_EQ(DescribeObject("DestinationRule", applied.rule->meta), c.expected_rule);
  }
  ASSERT_EQ(applied.tls.has_value(), c.expected_tls.has_value());
  if (c.expected_tls.has_value()) {
    EXPECT_EQ(applied.tls->mode, *c.expected_tls);
  }
  EXPECT_EQ(applied.port_level, c.port_level);
}

constexpr char kPayments[] = "payments.billing.svc.cluster.local";

INSTANTIATE_TEST_SUITE_P(
    Lookup, DestinationRuleTest,
    ::testing::Values(
        RuleCase{"None", "", "shop", kPayments, "billing", 443, "", std::nullopt},
        RuleCase{"ServiceNamespaceDefaultExportsEverywhere",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL"), "shop", kPayments, "billing",
                 443, "DestinationRule billing/p", TlsMode::kIstioMutual},
        RuleCase{"ClientNamespaceBeforeServiceNamespace",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL") +
                     Dr("mine", "shop", kPayments, "mode: DISABLE", "\".\""),
                 "shop", kPayments, "billing", 443, "DestinationRule shop/mine", TlsMode::kDisable},
        RuleCase{"ClientNamespaceRuleNotExportedToItself",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL") +
                     Dr("mine", "shop", kPayments, "mode: DISABLE", "\"legacy\""),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/p",
                 TlsMode::kIstioMutual},
        RuleCase{"PrivateRuleInvisibleToOtherNamespaces",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "\".\""), "shop", kPayments,
                 "billing", 443, "", std::nullopt},
        RuleCase{"PrivateRuleVisibleInItsNamespace",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "\".\""), "billing",
                 kPayments, "billing", 443, "DestinationRule billing/p", TlsMode::kIstioMutual},
        RuleCase{"ExplicitExportToClientNamespace",
                 Dr("p", "billing", "payments", "mode: SIMPLE", "\"shop\""), "shop", kPayments,
                 "billing", 443, "DestinationRule billing/p", TlsMode::kSimple},
        RuleCase{"RootNamespaceLast",
                 Dr("root", "istio-system", "*.billing.svc.cluster.local", "mode: SIMPLE") +
                     Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "\".\""),
                 "shop", kPayments, "billing", 443, "DestinationRule istio-system/root",
                 TlsMode::kSimple},
        RuleCase{"ShortHostIsRelativeToTheRuleNamespace",
                 Dr("p", "shop", "payments", "mode: SIMPLE"), "shop", kPayments, "billing", 443, "",
                 std::nullopt},
        RuleCase{
            "ExactHostBeatsOlderWildcard",
            Dr("wild", "billing", "*.billing.svc.cluster.local", "mode: SIMPLE", "",
               "2020-01-01T00:00:00Z") +
                Dr("exact", "billing", kPayments, "mode: ISTIO_MUTUAL", "", "2024-01-01T00:00:00Z"),
            "shop", kPayments, "billing", 443, "DestinationRule billing/exact",
            TlsMode::kIstioMutual},
        RuleCase{"LongerWildcardWins",
                 Dr("any", "billing", "*", "mode: DISABLE") +
                     Dr("svc", "billing", "*.svc.cluster.local", "mode: SIMPLE") +
                     Dr("ns", "billing", "*.billing.svc.cluster.local", "mode: ISTIO_MUTUAL"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/ns",
                 TlsMode::kIstioMutual},
        RuleCase{"CatchAllHost", Dr("any", "billing", "*", "mode: DISABLE"), "shop", kPayments,
                 "billing", 443, "DestinationRule billing/any", TlsMode::kDisable},
        RuleCase{"SameHostOldestWins",
                 Dr("b-new", "billing", "payments", "mode: DISABLE", "", "2024-01-01T00:00:00Z") +
                     Dr("a-old", "billing", "payments", "mode: SIMPLE", "", "2023-01-01T00:00:00Z"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/a-old",
                 TlsMode::kSimple},
        RuleCase{"PortLevelWinsForItsPort",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "", "",
                    "{port: {number: 443}, tls: {mode: SIMPLE, sni: pay.example}}"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/p", TlsMode::kSimple,
                 true},
        RuleCase{"PortLevelOnlyForItsPort",
                 Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "", "",
                    "{port: {number: 8443}, tls: {mode: SIMPLE}}"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/p",
                 TlsMode::kIstioMutual},
        RuleCase{
            "PortLevelWithoutTlsReplacesRuleTls",
            Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL", "", "", "{port: {number: 443}}"),
            "shop", kPayments, "billing", 443, "DestinationRule billing/p", std::nullopt, true},
        RuleCase{"RuleWithoutTls", Dr("p", "billing", "payments", ""), "shop", kPayments, "billing",
                 443, "DestinationRule billing/p", std::nullopt}),
    [](const ::testing::TestParamInfo<RuleCase>& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------
// Outbound decisions.

struct OutboundCase {
  std::string name;
  std::string config;
  std::string destination;
  uint32_t port;
  OutboundAction expected;
  std::string address;  // expected "ip:port" to connect to ("" to skip)
  std::string peer;     // expected SPIFFE ID for HBONE
  std::string reason;   // substring of the reason
  std::string warning;  // substring among the warnings ("" for none)
  uint64_t hint = 0;
};

class OutboundTest : public ::testing::TestWithParam<OutboundCase> {};

TEST_P(OutboundTest, Decides) {
  const OutboundCase& c = GetParam();
  std::shared_ptr<const Snapshot> snapshot = Load(c.config);
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision = DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"),
                                             c.destination, c.port, c.hint);
  SCOPED_TRACE(decision.trace.ToString());
  EXPECT_EQ(decision.action, c.expected) << OutboundActionName(decision.action);
  if (!c.address.empty()) {
    EXPECT_EQ(absl::StrCat(decision.address, ":", decision.port), c.address);
  }
  EXPECT_EQ(decision.expected_peer_identity, c.peer);
  EXPECT_THAT(decision.reason, HasSubstr(c.reason));
  if (c.warning.empty()) {
    EXPECT_THAT(decision.trace.warnings, IsEmpty());
  } else {
    EXPECT_THAT(AllWarnings(decision.trace), HasSubstr(c.warning));
  }
}

constexpr char kReviewsId[] = "spiffe://cluster.local/ns/shop/sa/reviews";
constexpr char kPaymentsId[] = "spiffe://cluster.local/ns/billing/sa/payments";

INSTANTIATE_TEST_SUITE_P(
    Decisions, OutboundTest,
    ::testing::Values(
        OutboundCase{"AutoMtlsToServiceNamedTargetPort", "", "10.96.1.1", 80,
                     OutboundAction::kHbone, "10.0.1.2:9080", kReviewsId, "auto mTLS"},
        OutboundCase{"AutoMtlsToPodIp", "", "10.0.1.2", 9080, OutboundAction::kHbone,
                     "10.0.1.2:9080", kReviewsId, "auto mTLS"},
        OutboundCase{"AutoMtlsAcrossNamespaces", "", "10.96.2.1", 443, OutboundAction::kHbone,
                     "10.0.2.1:8443", kPaymentsId, "auto mTLS"},
        OutboundCase{"EndpointHintBalances", "", "10.96.2.1", 443, OutboundAction::kHbone,
                     "10.0.2.2:8443", kPaymentsId, "auto mTLS", "", 1},
        OutboundCase{"EndpointSliceMapsThePort", "", "10.96.2.9", 80, OutboundAction::kHbone,
                     "10.0.2.2:8081", kPaymentsId, "auto mTLS", "", 1},
        OutboundCase{"AutoPlaintextToNonMeshNamespace", "", "10.96.3.1", 80,
                     OutboundAction::kPlaintext, "10.0.3.1:8080", "", "outside the mesh"},
        OutboundCase{"AutoPlaintextToOptedOutPod", "", "10.96.1.3", 80, OutboundAction::kPlaintext,
                     "10.0.1.3:80", "", "opts out"},
        OutboundCase{"AutoPlaintextToUnknownAddress", "", "203.0.113.5", 443,
                     OutboundAction::kPlaintext, "203.0.113.5:443", "", "not a known pod"},
        OutboundCase{"AutoPlaintextToDisabledWorkload", Pa("w", "shop", "DISABLE", "reviews"),
                     "10.96.1.1", 80, OutboundAction::kPlaintext, "10.0.1.2:9080", "",
                     "PeerAuthentication DISABLE on port 9080"},
        OutboundCase{"PortLevelDisableOnNamedTargetPort",
                     Pa("w", "shop", "STRICT", "reviews", "", "9080: {mode: DISABLE}"), "10.96.1.1",
                     80, OutboundAction::kPlaintext, "10.0.1.2:9080", "", "DISABLE on port 9080"},
        OutboundCase{"PortLevelDisableLeavesOtherPortsMeshed",
                     Pa("w", "shop", "STRICT", "reviews", "", "9080: {mode: DISABLE}"), "10.96.1.1",
                     15090, OutboundAction::kHbone, "10.0.1.2:15090", kReviewsId,
                     "STRICT on port 15090"},
        OutboundCase{"IstioMutualToNonMeshHostRefused",
                     Dr("old", "legacy", "old", "mode: ISTIO_MUTUAL"), "10.96.3.1", 80,
                     OutboundAction::kRefuse, "", "",
                     "DestinationRule legacy/old requires ISTIO_MUTUAL but "
                     "old.legacy.svc.cluster.local is not in the mesh"},
        OutboundCase{
            "DisableTowardStrictWarns",
            Pa("w", "shop", "STRICT", "reviews") + Dr("r", "shop", "reviews", "mode: DISABLE"),
            "10.96.1.1", 80, OutboundAction::kPlaintext, "10.0.1.2:9080", "",
            "TLS disabled by DestinationRule shop/r",
            "is STRICT on port 9080: the server will refuse this plaintext connection"},
        OutboundCase{"IstioMutualTowardDisableWarns",
                     Pa("w", "shop", "DISABLE", "reviews") +
                         Dr("r", "shop", "reviews", "mode: ISTIO_MUTUAL"),
                     "10.96.1.1", 80, OutboundAction::kHbone, "10.0.1.2:9080", kReviewsId,
                     "ISTIO_MUTUAL", "has PeerAuthentication DISABLE on port 9080"},
        OutboundCase{"ExplicitIstioMutualToMesh", Dr("r", "shop", "reviews", "mode: ISTIO_MUTUAL"),
                     "10.96.1.1", 80, OutboundAction::kHbone, "10.0.1.2:9080", kReviewsId,
                     "ISTIO_MUTUAL from DestinationRule shop/r"},
        OutboundCase{"SimpleOrigination",
                     Dr("old", "legacy", "old", "mode: SIMPLE, sni: old.example"), "10.96.3.1", 80,
                     OutboundAction::kTlsOrigination, "10.0.3.1:8080", "",
                     "SIMPLE TLS origination from DestinationRule legacy/old"},
        OutboundCase{"SimpleOriginationTowardStrictWarns",
                     Pa("ns", "shop", "STRICT") + Dr("r", "shop", "reviews", "mode: SIMPLE"),
                     "10.96.1.1", 80, OutboundAction::kTlsOrigination, "10.0.1.2:9080", "",
                     "SIMPLE", "accepts only mesh mTLS"},
        OutboundCase{"PortLevelDestinationRuleWins",
                     Dr("r", "shop", "reviews", "mode: ISTIO_MUTUAL", "", "",
                        "{port: {number: 80}, tls: {mode: DISABLE}}"),
                     "10.96.1.1", 80, OutboundAction::kPlaintext, "10.0.1.2:9080", "",
                     "TLS disabled"},
        OutboundCase{"NoSuchServicePort", "", "10.96.1.1", 81, OutboundAction::kRefuse, "", "",
                     "has no TCP port 81"},
        OutboundCase{"NoReadyEndpoint", "", "10.96.1.9", 80, OutboundAction::kRefuse, "", "",
                     "has no ready endpoint"},
        OutboundCase{"UnreadyPodNeverChosen", "", "10.96.1.1", 80, OutboundAction::kHbone,
                     "10.0.1.2:9080", kReviewsId, "auto mTLS", "", 1},
        OutboundCase{"InvalidAddress", "", "not-an-ip", 80, OutboundAction::kRefuse, "", "",
                     "is not an IP address"}),
    [](const ::testing::TestParamInfo<OutboundCase>& info) { return info.param.name; });

TEST(OutboundTest, OriginationCarriesTheRuleSettings) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("old", "legacy", "old",
              "mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: "
              "/ca.pem, subjectAltNames: [old.example], sni: old.example, insecureSkipVerify: "
              "true, caCrl: /crl.pem"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), "10.96.3.1", 80);
  ASSERT_EQ(decision.action, OutboundAction::kTlsOrigination);
  ASSERT_TRUE(decision.origination.has_value());
  EXPECT_EQ(decision.origination->mode, TlsMode::kMutual);
  EXPECT_EQ(decision.origination->client_certificate, "/c.pem");
  EXPECT_EQ(decision.origination->private_key, "/k.pem");
  EXPECT_EQ(decision.origination->ca_certificates, "/ca.pem");
  EXPECT_EQ(decision.origination->sni, "old.example");
  EXPECT_TRUE(decision.origination->insecure_skip_verify);
  EXPECT_EQ(decision.origination->ca_crl, "/crl.pem");
  EXPECT_THAT(decision.trace.deciding, Contains("DestinationRule legacy/old"));
}

TEST(OutboundTest, TraceNamesEveryLevel) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Pa("mesh", "istio-system", "PERMISSIVE") + Pa("ns", "shop", "STRICT"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), "10.96.1.1", 80);
  ASSERT_TRUE(decision.destination_mtls.has_value());
  EXPECT_EQ(decision.destination_mtls->levels.mesh, MtlsMode::kPermissive);
  EXPECT_EQ(decision.destination_mtls->levels.namespace_level, MtlsMode::kStrict);
  std::string text = decision.trace.ToString();
  EXPECT_THAT(text, HasSubstr("mesh-wide: PeerAuthentication istio-system/mesh sets PERMISSIVE"));
  EXPECT_THAT(text, HasSubstr("namespace: PeerAuthentication shop/ns sets STRICT"));
  EXPECT_THAT(text, HasSubstr("workload: no PeerAuthentication selects pod shop/reviews-1"));
  EXPECT_THAT(text, HasSubstr("decided by: PeerAuthentication shop/ns"));
  EXPECT_THAT(text, HasSubstr("decision: HBONE"));
}

// ---------------------------------------------------------------------------------------
// Inbound decisions.

struct InboundCase {
  std::string name;
  std::string config;
  std::string pod;  // in shop unless "ns/name"
  InboundTransport transport;
  bool allow;
  std::string reason;
};

class InboundTest : public ::testing::TestWithParam<InboundCase> {};

TEST_P(InboundTest, Decides) {
  const InboundCase& c = GetParam();
  std::shared_ptr<const Snapshot> snapshot = Load(c.config);
  ASSERT_NE(snapshot, nullptr);
  std::string ns = "shop", name = c.pod;
  if (size_t slash = c.pod.find('/'); slash != std::string::npos) {
    ns = c.pod.substr(0, slash);
    name = c.pod.substr(slash + 1);
  }
  InboundDecision decision = DecideInbound(*snapshot, PodNamed(*snapshot, ns, name), 9080,
                                           c.transport, "spiffe://cluster.local/ns/shop/sa/client");
  SCOPED_TRACE(decision.trace.ToString());
  EXPECT_EQ(decision.allow, c.allow);
  EXPECT_THAT(decision.reason, HasSubstr(c.reason));
}

constexpr InboundTransport kMtls = InboundTransport::kMtls;
constexpr InboundTransport kPlain = InboundTransport::kPlaintext;

INSTANTIATE_TEST_SUITE_P(
    Decisions, InboundTest,
    ::testing::Values(
        InboundCase{"StrictAcceptsMtls", Pa("ns", "shop", "STRICT"), "reviews-1", kMtls, true,
                    "STRICT accepts"},
        InboundCase{"StrictRefusesPlaintext", Pa("ns", "shop", "STRICT"), "reviews-1", kPlain,
                    false, "STRICT refuses plaintext"},
        InboundCase{"DefaultPermissiveAcceptsMtls", "", "reviews-1", kMtls, true, "PERMISSIVE"},
        InboundCase{"DefaultPermissiveAcceptsPlaintext", "", "reviews-1", kPlain, true,
                    "PERMISSIVE"},
        InboundCase{"DisableAcceptsPlaintext", Pa("ns", "shop", "DISABLE"), "reviews-1", kPlain,
                    true, "DISABLE accepts plaintext"},
        InboundCase{"DisableRefusesMtls", Pa("ns", "shop", "DISABLE"), "reviews-1", kMtls, false,
                    "not terminated"},
        InboundCase{"PortLevelStrictOverPermissive",
                    Pa("w", "shop", "PERMISSIVE", "reviews", "", "9080: {mode: STRICT}"),
                    "reviews-1", kPlain, false, "STRICT refuses plaintext"},
        InboundCase{"NotEnrolledRefused", "", "legacy/old-1", kPlain, false, "not in the mesh"}),
    [](const ::testing::TestParamInfo<InboundCase>& info) { return info.param.name; });

TEST(SnapshotTest, IndexesAndSkipsNonOwners) {
  std::shared_ptr<const Snapshot> snapshot = Load("");
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->FindPodByIp("192.168.0.10"), nullptr);  // host network
  ASSERT_NE(snapshot->FindPodByIp("10.0.1.2"), nullptr);
  EXPECT_EQ(snapshot->FindPodByIp("10.0.1.2")->meta.name, "reviews-1");
  ASSERT_NE(snapshot->FindServiceByClusterIp("10.96.1.1"), nullptr);
  EXPECT_EQ(snapshot->ServiceHost(*snapshot->FindServiceByClusterIp("10.96.1.1")),
            "reviews.shop.svc.cluster.local");
  const Service* reviews = snapshot->FindService("shop", "reviews");
  ASSERT_NE(reviews, nullptr);
  EXPECT_EQ(snapshot->ServiceEndpoints(*reviews, 80).size(), 1u);  // the unready pod is out
  EXPECT_TRUE(snapshot->ServiceEndpoints(*reviews, 81).empty());
}

TEST(SnapshotTest, TerminatedPodReleasesItsIp) {
  std::shared_ptr<const Snapshot> snapshot = Load(R"(---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: shop}
status: {phase: Succeeded, podIP: 10.0.1.2}
)");
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->FindPodByIp("10.0.1.2")->meta.name, "reviews-1");
}

}  // namespace
}  // namespace nodeward::policy
