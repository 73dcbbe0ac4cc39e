#include "policy/destination_rules.h"

#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/decision_test_cluster.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing_cluster::AllWarnings;
using testing_cluster::Dr;
using testing_cluster::Load;
using testing_cluster::Pa;
using testing_cluster::PodNamed;
using testing_cluster::PodRef;

// ---------------------------------------------------------------------------------------
// Which DestinationRule applies.

struct RuleCase {
  std::string name;
  std::string config;
  std::string client;  // "ns/pod", or a namespace for its usual client (see ClientIn)
  std::string host;
  std::string service_ns;
  uint32_t port;
  std::string expected_rule;  // "" for none
  std::optional<TlsMode> expected_tls;
  bool port_level = false;
  // The rule whose trafficPolicy is in force, when it is not `expected_rule` (merged rules).
  std::string tls_from = "";
};

class DestinationRuleTest : public ::testing::TestWithParam<RuleCase> {};

// The pod a namespace's clients are played by in the lookup tables.
const Pod& ClientIn(const Snapshot& snapshot, const std::string& client) {
  if (client.find('/') != std::string::npos) return PodRef(snapshot, client);
  if (client == "billing") return PodNamed(snapshot, "billing", "payments-1");
  if (client == "istio-system") return PodNamed(snapshot, "istio-system", "gateway");
  return PodNamed(snapshot, client, "client");
}

TEST_P(DestinationRuleTest, Selects) {
  const RuleCase& c = GetParam();
  std::shared_ptr<const Snapshot> snapshot = Load(c.config);
  ASSERT_NE(snapshot, nullptr);
  AppliedDestinationRule applied = ResolveDestinationRule(*snapshot, ClientIn(*snapshot, c.client),
                                                          c.host, c.service_ns, c.port);
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
  if (!c.tls_from.empty()) {
    ASSERT_NE(applied.traffic_policy, nullptr);
    EXPECT_EQ(DescribeObject("DestinationRule", applied.traffic_policy->meta), c.tls_from);
    EXPECT_THAT(applied.trace.deciding, Contains(c.tls_from));
  }
}

// A DestinationRule for payments with a workloadSelector on `app`.
std::string SelectingDr(absl::string_view name, absl::string_view ns, absl::string_view app,
                        absl::string_view tls,
                        absl::string_view host = "payments.billing.svc.cluster.local") {
  return absl::StrCat("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n",
                      "metadata: {name: ", name, ", namespace: ", ns, "}\n",
                      "spec:\n  host: ", host, "\n  workloadSelector: {matchLabels: ", app,
                      "}\n  trafficPolicy: {tls: {", tls, "}}\n");
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

// Istio's own lookup, merge and selection (pilot/pkg/model/push_context.go destinationRule and
// setDestinationRules, pilot/pkg/model/destination_rule.go mergeDestinationRule,
// pilot/pkg/model/sidecar.go SidecarScope.DestinationRule).
INSTANTIATE_TEST_SUITE_P(
    IstioPushContext, DestinationRuleTest,
    ::testing::Values(
        // push_context.go destinationRule: a client in the root namespace looks at the root
        // namespace's private rules, then the service's namespace, then the root's exported
        // rules; a broad exported wildcard in the root cannot shadow the service owner's rule.
        RuleCase{"RootClientPrefersServiceNamespaceOverRootWildcard",
                 Dr("wild", "istio-system", "*.billing.svc.cluster.local", "mode: SIMPLE") +
                     Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL"),
                 "istio-system", kPayments, "billing", 443, "DestinationRule billing/p",
                 TlsMode::kIstioMutual},
        RuleCase{"RootClientSeesRootPrivateRuleFirst",
                 Dr("mine", "istio-system", kPayments, "mode: DISABLE", "\".\"") +
                     Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL"),
                 "istio-system", kPayments, "billing", 443, "DestinationRule istio-system/mine",
                 TlsMode::kDisable},
        RuleCase{"RootClientFallsBackToRootExportedRule",
                 Dr("wild", "istio-system", "*.billing.svc.cluster.local", "mode: SIMPLE"),
                 "istio-system", kPayments, "billing", 443, "DestinationRule istio-system/wild",
                 TlsMode::kSimple},
        RuleCase{"RootPrivateRuleInvisibleToOtherNamespaces",
                 Dr("mine", "istio-system", kPayments, "mode: DISABLE", "\".\""), "shop", kPayments,
                 "billing", 443, "", std::nullopt},
        // push_context.go getExportedDestinationRuleFromNamespace: the most specific host of a
        // namespace decides; when its rule is not exported to the client the lookup moves to
        // the next namespace and a less specific rule of the same namespace never stands in.
        RuleCase{"MostSpecificNotExportedSkipsTheNamespace",
                 Dr("exact", "billing", "payments", "mode: ISTIO_MUTUAL", "\"legacy\"") +
                     Dr("wild", "billing", "*.billing.svc.cluster.local", "mode: SIMPLE") +
                     Dr("any", "istio-system", "*", "mode: DISABLE"),
                 "shop", kPayments, "billing", 443, "DestinationRule istio-system/any",
                 TlsMode::kDisable},
        RuleCase{"MostSpecificNotExportedAndNothingElse",
                 Dr("exact", "billing", "payments", "mode: ISTIO_MUTUAL", "\"legacy\"") +
                     Dr("wild", "billing", "*.billing.svc.cluster.local", "mode: SIMPLE"),
                 "shop", kPayments, "billing", 443, "", std::nullopt},
        // destination_rule.go mergeDestinationRule: rules for one host in one namespace merge;
        // the oldest names the result and the first present trafficPolicy is kept whole.
        RuleCase{"MergedOlderRuleWithoutTrafficPolicyTakesTheNewer",
                 Dr("a-old", "billing", "payments", "", "", "2023-01-01T00:00:00Z") +
                     Dr("b-new", "billing", "payments", "mode: SIMPLE", "", "2024-01-01T00:00:00Z"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/a-old",
                 TlsMode::kSimple, false, "DestinationRule billing/b-new"},
        RuleCase{"MergedFirstTrafficPolicyIsKeptWhole",
                 Dr("a-old", "billing", "payments", "", "", "2023-01-01T00:00:00Z",
                    "{port: {number: 8443}, tls: {mode: DISABLE}}") +
                     Dr("b-new", "billing", "payments", "mode: SIMPLE", "", "2024-01-01T00:00:00Z"),
                 "shop", kPayments, "billing", 443, "DestinationRule billing/a-old", std::nullopt,
                 false, "DestinationRule billing/a-old"},
        RuleCase{
            "RulesWithDifferentExportToStaySeparate",
            Dr("a-old", "billing", "payments", "mode: DISABLE", "\".\"", "2023-01-01T00:00:00Z") +
                Dr("b-new", "billing", "payments", "mode: SIMPLE", "", "2024-01-01T00:00:00Z"),
            "shop", kPayments, "billing", 443, "DestinationRule billing/b-new", TlsMode::kSimple},
        // sidecar.go SidecarScope.DestinationRule: a rule whose workloadSelector selects the
        // client wins over the one without; a selector never reaches beyond its namespace.
        RuleCase{"WorkloadSelectorSelectsItsClient",
                 SelectingDr("for-client", "shop", "{app: client}", "mode: SIMPLE") +
                     Dr("all", "shop", kPayments, "mode: DISABLE"),
                 "shop/client", kPayments, "billing", 443, "DestinationRule shop/for-client",
                 TlsMode::kSimple},
        RuleCase{"WorkloadSelectorLeavesOthersTheCatchAll",
                 SelectingDr("for-client", "shop", "{app: client}", "mode: SIMPLE") +
                     Dr("all", "shop", kPayments, "mode: DISABLE"),
                 "shop/reviews-1", kPayments, "billing", 443, "DestinationRule shop/all",
                 TlsMode::kDisable},
        RuleCase{"WorkloadSelectorNotMatchingLeavesNoRule",
                 SelectingDr("for-client", "shop", "{app: client}", "mode: SIMPLE") +
                     Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL"),
                 "shop/reviews-1", kPayments, "billing", 443, "", std::nullopt},
        RuleCase{"WorkloadSelectorRuleIsNeverExported",
                 SelectingDr("for-client", "billing", "{app: client}", "mode: SIMPLE") +
                     Dr("p", "billing", "payments", "mode: ISTIO_MUTUAL"),
                 "shop/client", kPayments, "billing", 443, "DestinationRule billing/p",
                 TlsMode::kIstioMutual},
        RuleCase{"RootNamespaceSelectorOnlyForRootWorkloads",
                 SelectingDr("gw", "istio-system", "{istio: ingressgateway}", "mode: SIMPLE"),
                 "istio-system/gateway", kPayments, "billing", 443,
                 "DestinationRule istio-system/gw", TlsMode::kSimple},
        RuleCase{"RootNamespaceSelectorNotForOtherNamespaces",
                 SelectingDr("gw", "istio-system", "{app: client}", "mode: SIMPLE"), "shop/client",
                 kPayments, "billing", 443, "", std::nullopt}),
    [](const ::testing::TestParamInfo<RuleCase>& info) { return info.param.name; });

TEST(DestinationRuleTest, TraceNamesTheMergedRules) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("a-old", "billing", "payments", "", "", "2023-01-01T00:00:00Z") +
           Dr("b-new", "billing", "payments", "mode: SIMPLE", "", "2024-01-01T00:00:00Z"));
  ASSERT_NE(snapshot, nullptr);
  AppliedDestinationRule applied = ResolveDestinationRule(
      *snapshot, PodNamed(*snapshot, "shop", "client"), kPayments, "billing", 443);
  ASSERT_EQ(applied.merged.size(), 2u);
  EXPECT_THAT(applied.trace.ToString(),
              HasSubstr("merged, as Istio merges rules for one host: DestinationRule "
                        "billing/a-old, DestinationRule billing/b-new"));
}

TEST(DestinationRuleTest, TraceSaysWhyTheNextNamespaceWasTried) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("exact", "billing", "payments", "mode: ISTIO_MUTUAL", "\"legacy\"") +
           Dr("wild", "billing", "*.billing.svc.cluster.local", "mode: SIMPLE"));
  ASSERT_NE(snapshot, nullptr);
  AppliedDestinationRule applied = ResolveDestinationRule(
      *snapshot, PodNamed(*snapshot, "shop", "client"), kPayments, "billing", 443);
  EXPECT_THAT(applied.trace.ToString(), HasSubstr("less specific hosts there are not considered"));
  EXPECT_THAT(applied.trace.ToString(), HasSubstr("is exported only to legacy, not to shop"));
}

// Rules built in code rather than parsed carry their TLS without has_traffic_policy set.
TEST(DestinationRuleTest, RuleBuiltInCodeKeepsItsTls) {
  std::shared_ptr<const Snapshot> parsed = Load("");
  ASSERT_NE(parsed, nullptr);
  ResourceSet set = parsed->resources();
  DestinationRule rule;
  rule.meta.name = "p";
  rule.meta.ns = "billing";
  rule.host = "payments";
  rule.tls = ClientTlsSettings{.mode = TlsMode::kSimple};
  set.destination_rules.push_back(rule);
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(set, {});
  ASSERT_TRUE(snapshot.ok());
  AppliedDestinationRule applied = ResolveDestinationRule(
      **snapshot, PodNamed(**snapshot, "shop", "client"), kPayments, "billing", 443);
  ASSERT_TRUE(applied.tls.has_value());
  EXPECT_EQ(applied.tls->mode, TlsMode::kSimple);
}

}  // namespace
}  // namespace nodeward::policy
