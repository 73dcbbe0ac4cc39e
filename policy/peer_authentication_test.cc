#include "policy/peer_authentication.h"

#include <memory>
#include <optional>
#include <string>

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
  EffectiveMtls result = ResolveMtlsMode(*snapshot, PodRef(*snapshot, c.pod), c.port);
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
                 "billing"},
        // pilot/pkg/security/authn ComposePeerAuthentication (and ambient's
        // convertedSelectorPeerAuthentications): a selector policy in the root namespace is
        // not a workload policy, not even for the root namespace's own workloads.
        ModeCase{
            "RootNamespaceSelectorIgnoredForRootWorkloads",
            Pa("mesh", "billing", "PERMISSIVE") + Pa("root-w", "billing", "STRICT", "payments"),
            "billing/payments-1",
            8443,
            P,
            {P, U, U, U},
            "PeerAuthentication billing/mesh",
            "PeerAuthentication billing/root-w is ignored: a PeerAuthentication with a "
            "selector in the root namespace billing applies to no workload",
            "billing"},
        ModeCase{"UndatedPoliciesTieBrokenByNameAndSaidSo",
                 Pa("permissive", "shop", "PERMISSIVE") + Pa("default", "shop", "STRICT"),
                 "reviews-1",
                 9080,
                 S,
                 {U, S, U, U},
                 "PeerAuthentication shop/default",
                 "PeerAuthentication shop/permissive is ignored: namespace shop already has "
                 "PeerAuthentication shop/default (neither has a creationTimestamp, so the name "
                 "decides)"},
        // A hand-written policy without creationTimestamp is dated as the API server would
        // date it on apply: after the ones that state their age. So the dated PERMISSIVE
        // policy is the oldest here, as it would be in a cluster where "default" was applied
        // later.
        ModeCase{"DatedPolicyIsOlderThanAnUndatedOne",
                 Pa("default", "shop", "STRICT") +
                     Pa("permissive", "shop", "PERMISSIVE", "", "2020-01-01T00:00:00Z"),
                 "reviews-1",
                 9080,
                 P,
                 {U, P, U, U},
                 "PeerAuthentication shop/permissive",
                 "PeerAuthentication shop/default is ignored: namespace shop already has the "
                 "older PeerAuthentication shop/permissive (PeerAuthentication shop/default has "
                 "no creationTimestamp"}),
    [](const ::testing::TestParamInfo<ModeCase>& info) { return info.param.name; });

}  // namespace
}  // namespace nodeward::policy
