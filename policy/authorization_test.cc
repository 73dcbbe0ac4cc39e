#include "policy/authorization.h"

#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/testing/literals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/decision_test_cluster.h"
#include "policy/decisions.h"

namespace nodeward::policy {
namespace {

using literals::IdOf;
using literals::IpOf;
using ::testing::HasSubstr;
using testing_cluster::AllWarnings;
using testing_cluster::Load;
using testing_cluster::Pa;
using testing_cluster::PodNamed;
using testing_cluster::PodRef;

// An AuthorizationPolicy; `spec` is the body of its spec, in YAML flow or block form indented
// by two spaces.
std::string Ap(absl::string_view name, absl::string_view ns, absl::string_view spec,
               absl::string_view annotations = "") {
  return absl::StrCat("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n",
                      "metadata: {name: ", name, ", namespace: ", ns,
                      annotations.empty() ? "" : absl::StrCat(", annotations: {", annotations, "}"),
                      "}\nspec:\n", spec, "\n");
}

constexpr char kSleep[] = "spiffe://cluster.local/ns/shop/sa/sleep";
constexpr char kBillingClient[] = "spiffe://cluster.local/ns/billing/sa/payments";

struct Peer {
  InboundTransport transport = InboundTransport::kMtls;
  std::string identity = kSleep;
  std::string source_ip = "10.0.1.1";
  uint32_t port = 9080;
  std::string destination_ip = "10.0.1.2";
  std::optional<std::string> sni;
};

Peer Plaintext(std::string source_ip = "10.0.1.1") {
  Peer peer;
  peer.transport = InboundTransport::kPlaintext;
  peer.identity.clear();
  peer.source_ip = std::move(source_ip);
  return peer;
}

Peer From(std::string identity, uint32_t port = 9080) {
  Peer peer;
  peer.identity = std::move(identity);
  peer.port = port;
  return peer;
}

struct AuthzCase {
  std::string name;
  std::string policies;
  Peer peer;
  AuthorizationOutcome outcome;
  std::string deciding = "";  // the policy named as deciding, when one is
  std::string pod = "shop/reviews-1";
  std::string warning = "";
};

class AuthorizationTest : public ::testing::TestWithParam<AuthzCase> {};

AuthorizationResult AuthorizeAs(const Snapshot& snapshot, const std::string& pod,
                                const Peer& peer) {
  InboundConnection connection;
  connection.transport = peer.transport;
  if (!peer.identity.empty()) connection.peer_identity = IdOf(peer.identity);
  if (!peer.source_ip.empty()) connection.source_ip = IpOf(peer.source_ip);
  if (!peer.destination_ip.empty()) connection.destination_ip = IpOf(peer.destination_ip);
  connection.port = peer.port;
  if (peer.sni.has_value()) connection.sni = *peer.sni;
  return Authorize(snapshot, PodRef(snapshot, pod), connection);
}

TEST_P(AuthorizationTest, Decides) {
  const AuthzCase& c = GetParam();
  std::shared_ptr<const Snapshot> snapshot = Load(c.policies);
  ASSERT_NE(snapshot, nullptr);
  AuthorizationResult result = AuthorizeAs(*snapshot, c.pod, c.peer);
  SCOPED_TRACE(result.trace.ToString());
  EXPECT_EQ(result.outcome, c.outcome) << AuthorizationOutcomeName(result.outcome);
  const bool allowed =
      c.outcome == AuthorizationOutcome::kNoPolicy || c.outcome == AuthorizationOutcome::kAllowed;
  EXPECT_EQ(result.allow, allowed);
  if (c.deciding.empty()) {
    EXPECT_EQ(result.policy, nullptr);
  } else {
    ASSERT_NE(result.policy, nullptr);
    EXPECT_EQ(Describe(*result.policy), c.deciding);
  }
  if (!c.warning.empty()) EXPECT_THAT(AllWarnings(result.trace), HasSubstr(c.warning));
}

using O = AuthorizationOutcome;

// The examples of Istio's AuthorizationPolicy reference and its ambient L4 policy guide
// (istio.io docs/reference/config/security/authorization-policy, docs/ambient/usage/l4-policy),
// on the small cluster: the destination is pod shop/reviews-1 (app: reviews) unless stated.
INSTANTIATE_TEST_SUITE_P(
    IstioExamples, AuthorizationTest,
    ::testing::Values(
        AuthzCase{"NoPolicyAllows", "", {}, O::kNoPolicy},
        // "allow-nothing": an ALLOW policy without rules matches nothing.
        AuthzCase{"AllowNothing", Ap("allow-nothing", "shop", "  {}"), {}, O::kNotAllowed},
        // "deny-all": the empty rule matches every connection.
        AuthzCase{"DenyAll",
                  Ap("deny-all", "shop", "  action: DENY\n  rules: [{}]"),
                  {},
                  O::kDenied,
                  "AuthorizationPolicy shop/deny-all"},
        AuthzCase{"AllowAll",
                  Ap("allow-all", "shop", "  action: ALLOW\n  rules: [{}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/allow-all"},
        // docs/ambient/usage/l4-policy: allow curl's service account only.
        AuthzCase{"AllowPrincipal",
                  Ap("allow-sleep", "shop",
                     "  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n"
                     "  - from: [{source: {principals: [cluster.local/ns/shop/sa/sleep]}}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/allow-sleep"},
        AuthzCase{"AllowPrincipalRefusesOthers",
                  Ap("allow-sleep", "shop",
                     "  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n"
                     "  - from: [{source: {principals: [cluster.local/ns/shop/sa/sleep]}}]"),
                  From(kBillingClient), O::kNotAllowed},
        // Principals exist only for mTLS: plaintext never matches one, not even "*".
        AuthzCase{
            "PlaintextMatchesNoPrincipal",
            Ap("any-principal", "shop", "  rules: [{from: [{source: {principals: [\"*\"]}}]}]"),
            Plaintext(), O::kNotAllowed},
        // The "require mTLS" DENY of the reference: notPrincipals ["*"] refuses plaintext.
        AuthzCase{"DenyNotPrincipalsRefusesPlaintext",
                  Ap("require-mtls", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {notPrincipals: [\"*\"]}}]}]"),
                  Plaintext(), O::kDenied, "AuthorizationPolicy shop/require-mtls"},
        AuthzCase{"DenyNotPrincipalsLetsMtlsThrough",
                  Ap("require-mtls", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {notPrincipals: [\"*\"]}}]}]"),
                  {},
                  O::kNoPolicy},
        AuthzCase{"PrincipalPrefixAndSuffix",
                  Ap("forms", "shop",
                     "  rules: [{from: [{source: {principals: [\"cluster.local/ns/billing/*\", "
                     "\"*/sa/nothing\"]}}]}]"),
                  From(kBillingClient), O::kAllowed, "AuthorizationPolicy shop/forms"},
        // Namespaces come from the peer's identity.
        AuthzCase{
            "AllowNamespace",
            Ap("from-billing", "shop", "  rules: [{from: [{source: {namespaces: [billing]}}]}]"),
            From(kBillingClient), O::kAllowed, "AuthorizationPolicy shop/from-billing"},
        AuthzCase{"DenyNotNamespaces",
                  Ap("only-shop", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {notNamespaces: [shop]}}]}]"),
                  From(kBillingClient), O::kDenied, "AuthorizationPolicy shop/only-shop"},
        AuthzCase{"PlaintextMatchesEveryNotNamespaces",
                  Ap("only-shop", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {notNamespaces: [shop]}}]}]"),
                  Plaintext(), O::kDenied, "AuthorizationPolicy shop/only-shop"},
        AuthzCase{"ServiceAccounts",
                  Ap("sa", "shop", "  rules: [{from: [{source: {serviceAccounts: [sleep]}}]}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/sa"},
        AuthzCase{"ServiceAccountsWithNamespace",
                  Ap("sa", "shop",
                     "  rules: [{from: [{source: {serviceAccounts: [billing/payments]}}]}]"),
                  {},
                  O::kNotAllowed},
        // ipBlocks match the client's address, for plaintext as for mTLS.
        AuthzCase{
            "IpBlocks",
            Ap("nets", "shop", "  rules: [{from: [{source: {ipBlocks: [1.2.3.4, 10.0.1.0/24]}}]}]"),
            Plaintext("10.0.1.77"), O::kAllowed, "AuthorizationPolicy shop/nets"},
        AuthzCase{"IpBlocksOutside",
                  Ap("nets", "shop", "  rules: [{from: [{source: {ipBlocks: [10.0.2.0/24]}}]}]"),
                  Plaintext("10.0.1.77"), O::kNotAllowed},
        AuthzCase{"NotIpBlocksDeny",
                  Ap("deny-outside", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {notIpBlocks: [10.0.0.0/16]}}]}]"),
                  Plaintext("192.168.1.1"), O::kDenied, "AuthorizationPolicy shop/deny-outside"},
        AuthzCase{"MappedIpv4MatchesIpv4Block",
                  Ap("nets", "shop", "  rules: [{from: [{source: {ipBlocks: [10.0.1.0/24]}}]}]"),
                  Plaintext("::ffff:10.0.1.9"), O::kAllowed, "AuthorizationPolicy shop/nets"},
        AuthzCase{"Ipv6Block",
                  Ap("nets", "shop", "  rules: [{from: [{source: {ipBlocks: [\"fd00::/64\"]}}]}]"),
                  Plaintext("fd00::17"), O::kAllowed, "AuthorizationPolicy shop/nets"},
        // Port-scoped rules: the destination (target) port.
        AuthzCase{"Ports",
                  Ap("port", "shop", "  rules: [{to: [{operation: {ports: [\"9080\"]}}]}]"),
                  From(kSleep, 9080), O::kAllowed, "AuthorizationPolicy shop/port"},
        AuthzCase{"PortsOther",
                  Ap("port", "shop", "  rules: [{to: [{operation: {ports: [\"9080\"]}}]}]"),
                  From(kSleep, 15090), O::kNotAllowed},
        AuthzCase{"NotPortsDeny",
                  Ap("metrics-only", "shop",
                     "  action: DENY\n  rules: [{to: [{operation: {notPorts: [\"15090\"]}}]}]"),
                  From(kSleep, 9080), O::kDenied, "AuthorizationPolicy shop/metrics-only"},
        // from, to and when must all match; entries of one list are alternatives.
        AuthzCase{"FromAndToBothMatch",
                  Ap("both", "shop",
                     "  rules:\n  - from: [{source: {namespaces: [billing]}}, {source: "
                     "{namespaces: [shop]}}]\n    to: [{operation: {ports: [\"9080\"]}}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/both"},
        AuthzCase{"FromMatchesToDoesNot",
                  Ap("both", "shop",
                     "  rules:\n  - from: [{source: {namespaces: [shop]}}]\n    to: "
                     "[{operation: {ports: [\"8080\"]}}]"),
                  {},
                  O::kNotAllowed},
        AuthzCase{"WhenL4Keys",
                  Ap("when", "shop",
                     "  rules:\n  - when:\n    - {key: source.namespace, values: [shop]}\n"
                     "    - {key: source.ip, notValues: [10.9.0.0/16]}\n"
                     "    - {key: destination.port, values: [\"9080\"]}\n"
                     "    - {key: destination.ip, values: [10.0.1.2]}\n"
                     "    - {key: source.principal, values: [\"*/sa/sleep\"]}"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/when"},
        AuthzCase{
            "WhenFails",
            Ap("when", "shop", "  rules: [{when: [{key: source.namespace, notValues: [shop]}]}]"),
            {},
            O::kNotAllowed},
        AuthzCase{"ConnectionSni",
                  Ap("sni", "shop",
                     "  rules: [{when: [{key: connection.sni, values: [\"*.example.com\"]}]}]"),
                  Peer{.sni = "api.example.com"}, O::kAllowed, "AuthorizationPolicy shop/sni"},
        AuthzCase{"ConnectionSniUnseenAllowsNothing",
                  Ap("sni", "shop",
                     "  rules: [{when: [{key: connection.sni, values: [\"*.example.com\"]}]}]"),
                  {},
                  O::kNotAllowed},
        // DENY before ALLOW, whichever is older.
        AuthzCase{"DenyBeatsAllow",
                  Ap("allow-all", "shop", "  rules: [{}]") +
                      Ap("deny-billing", "shop",
                         "  action: DENY\n  rules: [{from: [{source: {namespaces: [billing]}}]}]"),
                  From(kBillingClient), O::kDenied, "AuthorizationPolicy shop/deny-billing"},
        AuthzCase{"DenyNotMatchingThenAllow",
                  Ap("allow-all", "shop", "  rules: [{}]") +
                      Ap("deny-billing", "shop",
                         "  action: DENY\n  rules: [{from: [{source: {namespaces: [billing]}}]}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/allow-all"},
        AuthzCase{"AnyAllowSuffices",
                  Ap("a", "shop", "  rules: [{from: [{source: {namespaces: [billing]}}]}]") +
                      Ap("b", "shop", "  rules: [{from: [{source: {namespaces: [shop]}}]}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/b"},
        // Scope: a selector narrows to its workloads; the root namespace is mesh-wide, and its
        // selector policies select in every namespace (ambient's buildWorkloadPolicies).
        AuthzCase{"SelectorForOtherWorkload",
                  Ap("deny", "shop",
                     "  selector: {matchLabels: {app: ratings}}\n  action: DENY\n  rules: [{}]"),
                  {},
                  O::kNoPolicy},
        AuthzCase{"OtherNamespacePolicy",
                  Ap("deny", "billing", "  action: DENY\n  rules: [{}]"),
                  {},
                  O::kNoPolicy},
        AuthzCase{"RootNamespaceIsMeshWide",
                  Ap("deny", "istio-system", "  action: DENY\n  rules: [{}]"),
                  {},
                  O::kDenied,
                  "AuthorizationPolicy istio-system/deny"},
        AuthzCase{"RootNamespaceSelectorSelectsEverywhere",
                  Ap("deny-reviews", "istio-system",
                     "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules: [{}]"),
                  {},
                  O::kDenied,
                  "AuthorizationPolicy istio-system/deny-reviews"},
        // HTTP attributes: an ALLOW rule with any never matches at L4 ...
        AuthzCase{
            "AllowWithMethodsMatchesNothing",
            Ap("allow-get", "shop",
               "  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/sleep]}}]"
               "\n    to: [{operation: {methods: [GET], paths: [\"/info*\"]}}]"),
            {},
            O::kNotAllowed,
            "",
            "shop/reviews-1",
            "the rule never matches, as in ztunnel"},
        AuthzCase{"AllowRuleWithoutHttpStillMatches",
                  Ap("mixed", "shop",
                     "  rules:\n  - to: [{operation: {methods: [GET]}}]\n"
                     "  - from: [{source: {namespaces: [shop]}}]"),
                  {},
                  O::kAllowed,
                  "AuthorizationPolicy shop/mixed"},
        AuthzCase{"AllowWithRequestPrincipalsMatchesNothing",
                  Ap("jwt", "shop", "  rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]"),
                  {},
                  O::kNotAllowed},
        AuthzCase{
            "AllowWithRemoteIpBlocksMatchesNothing",
            Ap("remote", "shop", "  rules: [{from: [{source: {remoteIpBlocks: [10.0.1.0/24]}}]}]"),
            Plaintext("10.0.1.1"), O::kNotAllowed},
        AuthzCase{"AllowWithHeaderConditionMatchesNothing",
                  Ap("hdr", "shop",
                     "  rules: [{when: [{key: \"request.headers[x-token]\", values: [a]}]}]"),
                  {},
                  O::kNotAllowed},
        // ... and a DENY rule applies without them, which is more restrictive.
        AuthzCase{"DenyWithMethodsAppliesWithoutThem",
                  Ap("deny-post", "shop",
                     "  action: DENY\n  rules:\n  - from: [{source: {namespaces: [billing]}}]\n"
                     "    to: [{operation: {methods: [POST]}}]"),
                  From(kBillingClient), O::kDenied, "AuthorizationPolicy shop/deny-post",
                  "shop/reviews-1", "the rule is applied without them"},
        AuthzCase{"DenyWithMethodsStillScopedByItsL4Part",
                  Ap("deny-post", "shop",
                     "  action: DENY\n  rules:\n  - from: [{source: {namespaces: [billing]}}]\n"
                     "    to: [{operation: {methods: [POST]}}]"),
                  {},
                  O::kNoPolicy},
        // CUSTOM has no authorizer to ask: what it matches is refused.
        AuthzCase{"CustomRefused",
                  Ap("ext", "shop",
                     "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: "
                     "{ports: [\"9080\"]}}]}]"),
                  {},
                  O::kUnsupported,
                  "AuthorizationPolicy shop/ext",
                  "shop/reviews-1",
                  "nodeward has none"},
        AuthzCase{"CustomNotMatchingLeavesTheRest",
                  Ap("ext", "shop",
                     "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: "
                     "{ports: [\"8080\"]}}]}]"),
                  {},
                  O::kNoPolicy},
        AuthzCase{"CustomBeforeAllow",
                  Ap("allow-all", "shop", "  rules: [{}]") +
                      Ap("ext", "shop", "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]"),
                  {},
                  O::kUnsupported,
                  "AuthorizationPolicy shop/ext"},
        // AUDIT decides nothing.
        AuthzCase{"AuditDecidesNothing",
                  Ap("audit", "shop", "  action: AUDIT\n  rules: [{}]"),
                  {},
                  O::kNoPolicy},
        // Dry-run policies are reported, not enforced.
        AuthzCase{
            "DryRunDenyNotEnforced",
            Ap("deny-all", "shop", "  action: DENY\n  rules: [{}]", "istio.io/dry-run: \"true\""),
            {},
            O::kNoPolicy},
        AuthzCase{"DryRunAllowNotEnforced",
                  Ap("allow-nothing", "shop", "  {}", "istio.io/dry-run: \"true\""),
                  {},
                  O::kNoPolicy},
        // A waypoint enforces targetRef policies; ztunnel does not, nor does nodeward.
        AuthzCase{"TargetRefNotEnforcedHere",
                  Ap("waypoint", "shop",
                     "  targetRefs: [{kind: Service, group: \"\", name: reviews}]\n  action: DENY"
                     "\n  rules: [{}]"),
                  {},
                  O::kNoPolicy,
                  "",
                  "shop/reviews-1",
                  "binds to a waypoint"},
        // What the data plane does not know fails closed, both ways.
        AuthzCase{"UnknownSourceAllowsNothing",
                  Ap("nets", "shop", "  rules: [{from: [{source: {ipBlocks: [10.0.1.0/24]}}]}]"),
                  Peer{.source_ip = ""}, O::kNotAllowed},
        AuthzCase{"UnknownSourceMatchesEveryDeny",
                  Ap("deny-net", "shop",
                     "  action: DENY\n  rules: [{from: [{source: {ipBlocks: [192.168.0.0/16]}}]}]"),
                  Peer{.source_ip = ""}, O::kDenied, "AuthorizationPolicy shop/deny-net"},
        AuthzCase{"MtlsWithoutIdentityAllowsNoPrincipal",
                  Ap("p", "shop", "  rules: [{from: [{source: {notPrincipals: [x/ns/y/sa/z]}}]}]"),
                  Peer{.identity = ""}, O::kNotAllowed}),
    [](const ::testing::TestParamInfo<AuthzCase>& info) { return info.param.name; });

TEST(AuthorizationTest, AuditAndDryRunMatchesAreReported) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Ap("audit", "shop", "  action: AUDIT\n  rules: [{}]") +
           Ap("trial", "shop", "  action: DENY\n  rules: [{}]", "istio.io/dry-run: \"true\""));
  ASSERT_NE(snapshot, nullptr);
  AuthorizationResult result = AuthorizeAs(*snapshot, "shop/reviews-1", Peer{});
  EXPECT_TRUE(result.allow);
  ASSERT_EQ(result.audit.size(), 2u);
  EXPECT_EQ(Describe(*result.audit[0]), "AuthorizationPolicy shop/audit");
  EXPECT_EQ(Describe(*result.audit[1]), "AuthorizationPolicy shop/trial");
}

TEST(AuthorizationTest, NotAllowedNamesTheAllowPolicies) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Ap("a", "shop", "  rules: [{from: [{source: {namespaces: [x]}}]}]"));
  ASSERT_NE(snapshot, nullptr);
  AuthorizationResult result = AuthorizeAs(*snapshot, "shop/reviews-1", Peer{});
  EXPECT_THAT(result.reason,
              HasSubstr("no ALLOW AuthorizationPolicy matches (AuthorizationPolicy shop/a)"));
  EXPECT_THAT(result.trace.deciding, ::testing::ElementsAre("AuthorizationPolicy shop/a"));
}

// The inbound decision: PeerAuthentication first, then the AuthorizationPolicies.
TEST(AuthorizationTest, InboundDecisionCarriesTheAuthorization) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Pa("ns", "shop", "PERMISSIVE") +
           Ap("deny-billing", "shop",
              "  action: DENY\n  rules: [{from: [{source: {namespaces: [billing]}}]}]") +
           Ap("audit", "shop", "  action: AUDIT\n  rules: [{}]"));
  ASSERT_NE(snapshot, nullptr);
  InboundConnection connection;
  connection.transport = InboundTransport::kMtls;
  connection.peer_identity = IdOf(kBillingClient);
  connection.source_ip = IpOf("10.0.2.1");
  connection.port = 9080;
  InboundDecision decision =
      DecideInbound(*snapshot, PodNamed(*snapshot, "shop", "reviews-1"), connection);
  EXPECT_FALSE(decision.allow);
  EXPECT_EQ(decision.reason_code, DecisionReason::kAuthorization);
  EXPECT_THAT(decision.reason, HasSubstr("denied by AuthorizationPolicy shop/deny-billing rule 0"));
  ASSERT_TRUE(decision.authorization.has_value());
  EXPECT_EQ(decision.authorization->outcome, AuthorizationOutcome::kDenied);
  EXPECT_TRUE(decision.audit);
  EXPECT_THAT(decision.trace.deciding,
              ::testing::Contains("AuthorizationPolicy shop/deny-billing"));
  EXPECT_THAT(
      decision.trace.ToString(),
      HasSubstr("authorization: AuthorizationPolicy shop/deny-billing (DENY): rule 0 matches"));

  connection.peer_identity = IdOf(kSleep);
  decision = DecideInbound(*snapshot, PodNamed(*snapshot, "shop", "reviews-1"), connection);
  EXPECT_TRUE(decision.allow);
  EXPECT_EQ(decision.reason_code, DecisionReason::kPeerAuthentication);
}

}  // namespace
}  // namespace nodeward::policy
