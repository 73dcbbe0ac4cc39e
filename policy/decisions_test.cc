#include "policy/decisions.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/substitute.h"
#include "common/testing/literals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/decision_test_cluster.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using literals::IdOf;
using literals::IpOf;
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
                                             IpOf(c.destination), c.port, c.hint);
  SCOPED_TRACE(decision.trace.ToString());
  EXPECT_EQ(decision.action, c.expected) << OutboundActionName(decision.action);
  if (!c.address.empty()) {
    EXPECT_EQ(absl::StrCat(decision.address.ToString(), ":", decision.port), c.address);
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
                     "10.0.1.2:9080", kReviewsId, "auto mTLS", "", 1}),
    [](const ::testing::TestParamInfo<OutboundCase>& info) { return info.param.name; });

TEST(OutboundTest, OriginationCarriesTheRuleSettings) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("old", "legacy", "old",
              "mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: "
              "/ca.pem, subjectAltNames: [old.example], sni: old.example, insecureSkipVerify: "
              "true, caCrl: /crl.pem"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.3.1"), 80);
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

// pilot/pkg/networking/core/cluster_builder.go buildAutoMtlsSettings: an ISTIO_MUTUAL rule's
// subjectAltNames replace the service accounts as the names the server must present.
TEST(OutboundTest, IstioMutualSubjectAltNamesReplaceThePodIdentity) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("r", "shop", "reviews",
              "mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/reviews-v2, "
              "spiffe://cluster.local/ns/shop/sa/canary]"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.1.1"), 80);
  SCOPED_TRACE(decision.trace.ToString());
  ASSERT_EQ(decision.action, OutboundAction::kHbone);
  EXPECT_THAT(decision.expected_peer_identities,
              ::testing::ElementsAre("spiffe://cluster.local/ns/shop/sa/reviews-v2",
                                     "spiffe://cluster.local/ns/shop/sa/canary"));
  EXPECT_EQ(decision.expected_peer_identity, "spiffe://cluster.local/ns/shop/sa/reviews-v2");
  EXPECT_THAT(decision.reason, HasSubstr("reviews-v2 or spiffe://cluster.local/ns/shop/sa/canary"));
  EXPECT_EQ(decision.reason_code, DecisionReason::kDestinationRule);
}

TEST(OutboundTest, SubjectAltNameThatIsNoSpiffeIdWarns) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Dr("r", "shop", "reviews", "mode: ISTIO_MUTUAL, subjectAltNames: [reviews.example]"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.1.1"), 80);
  EXPECT_THAT(decision.expected_peer_identities, ::testing::ElementsAre("reviews.example"));
  EXPECT_THAT(AllWarnings(decision.trace), HasSubstr("is not a SPIFFE ID"));
}

TEST(OutboundTest, AutoMtlsExpectsTheDestinationIdentity) {
  std::shared_ptr<const Snapshot> snapshot = Load("");
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.1.1"), 80);
  EXPECT_THAT(decision.expected_peer_identities, ::testing::ElementsAre(kReviewsId));
}

// A destination pod the data plane serves itself is carried on the node, decided by its own
// inbound policy; any other stays HBONE.
TEST(OutboundTest, ADestinationServedOnTheNodeIsSameNodeUnderItsInboundPolicy) {
  auto served_here = [](const IpAddress& ip) { return ip == IpOf("10.0.1.2"); };
  auto nowhere = [](const IpAddress&) { return false; };
  std::shared_ptr<const Snapshot> open = Load("");
  ASSERT_NE(open, nullptr);
  const Pod client = PodNamed(*open, "shop", "client");
  OutboundDecision here =
      DecideOutboundOnNode(*open, client, IpOf("10.96.1.1"), 80, 0, served_here);
  EXPECT_EQ(here.action, OutboundAction::kSameNode) << here.trace.ToString();
  EXPECT_EQ(here.address, IpOf("10.0.1.2"));
  ASSERT_TRUE(here.same_node_inbound.has_value());
  EXPECT_TRUE(here.same_node_inbound->allow);
  ASSERT_TRUE(here.same_node_connection.has_value());
  EXPECT_EQ(here.same_node_connection->transport, InboundTransport::kMtls);
  EXPECT_EQ(here.same_node_connection->peer_identity, *WorkloadIdentity(*open, client));
  EXPECT_EQ(here.same_node_connection->source_ip, client.ips.front());
  EXPECT_EQ(OutboundActionName(here.action), "SAME_NODE");
  EXPECT_EQ(DecideOutboundOnNode(*open, client, IpOf("10.96.1.1"), 80, 0, nowhere).action,
            OutboundAction::kHbone);

  // The destination's AuthorizationPolicy denies the client: refused, by that policy.
  std::shared_ptr<const Snapshot> denied = Load(R"(apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
)");
  ASSERT_NE(denied, nullptr);
  ASSERT_EQ(denied->resources().authorization_policies.size(), 1u);
  OutboundDecision refused = DecideOutboundOnNode(*denied, PodNamed(*denied, "shop", "client"),
                                                  IpOf("10.96.1.1"), 80, 0, served_here);
  EXPECT_EQ(refused.action, OutboundAction::kRefuse) << refused.trace.ToString();
  EXPECT_EQ(refused.reason_code, DecisionReason::kAuthorization);
  EXPECT_THAT(refused.trace.deciding, ::testing::Contains("AuthorizationPolicy shop/no-client"));
  // Without the same node, the client's side sends HBONE and the server's agent decides.
  EXPECT_EQ(DecideOutboundOnNode(*denied, PodNamed(*denied, "shop", "client"), IpOf("10.96.1.1"),
                                 80, 0, nowhere)
                .action,
            OutboundAction::kHbone);
}

// The data plane cannot fetch Secrets: explain must say what the connection will meet.
TEST(OutboundTest, CredentialNameIsRefusedAsTheDataPlaneRefusesIt) {
  for (absl::string_view mode : {"SIMPLE", "MUTUAL"}) {
    std::shared_ptr<const Snapshot> snapshot =
        Load(Dr("old", "legacy", "old", absl::StrCat("mode: ", mode, ", credentialName: old-tls")));
    ASSERT_NE(snapshot, nullptr);
    OutboundDecision decision =
        DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.3.1"), 80);
    EXPECT_EQ(decision.action, OutboundAction::kRefuse) << mode;
    EXPECT_EQ(decision.reason_code, DecisionReason::kDestinationRule);
    EXPECT_THAT(decision.reason, HasSubstr("credentialName old-tls"));
    EXPECT_FALSE(decision.origination.has_value());
  }
}

TEST(OutboundTest, ReasonCodesNameWhatDecided) {
  struct Case {
    std::string config, destination;
    uint32_t port;
    DecisionReason code;
  };
  for (const Case& c : std::vector<Case>{{"", "10.96.1.1", 80, DecisionReason::kAutoMtls},
                                         {"", "10.96.3.1", 80, DecisionReason::kAutoMtls},
                                         {Dr("old", "legacy", "old", "mode: ISTIO_MUTUAL"),
                                          "10.96.3.1", 80, DecisionReason::kDestinationRule},
                                         {Dr("r", "shop", "reviews", "mode: DISABLE"), "10.96.1.1",
                                          80, DecisionReason::kDestinationRule},
                                         {"", "10.96.1.1", 81, DecisionReason::kNoServicePort},
                                         {"", "10.96.1.9", 80, DecisionReason::kNoReadyEndpoint}}) {
    std::shared_ptr<const Snapshot> snapshot = Load(c.config);
    ASSERT_NE(snapshot, nullptr);
    OutboundDecision decision = DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"),
                                               IpOf(c.destination), c.port);
    EXPECT_EQ(decision.reason_code, c.code)
        << c.destination << ":" << c.port << " got " << DecisionReasonName(decision.reason_code);
  }
  EXPECT_EQ(DecisionReasonName(DecisionReason::kAuthorization), "authorization");
  EXPECT_EQ(DecisionReasonName(DecisionReason::kPeerAuthentication), "peer_authentication");
}

TEST(OutboundTest, TraceNamesEveryLevel) {
  std::shared_ptr<const Snapshot> snapshot =
      Load(Pa("mesh", "istio-system", "PERMISSIVE") + Pa("ns", "shop", "STRICT"));
  ASSERT_NE(snapshot, nullptr);
  OutboundDecision decision =
      DecideOutbound(*snapshot, PodNamed(*snapshot, "shop", "client"), IpOf("10.96.1.1"), 80);
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
  InboundDecision decision = DecideInbound(*snapshot, PodRef(*snapshot, c.pod), 9080, c.transport,
                                           IdOf("spiffe://cluster.local/ns/shop/sa/client"));
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

TEST(InboundTest, ReasonCodesNameWhatDecided) {
  struct Case {
    std::string config, pod;
    InboundTransport transport;
    bool allow;
    DecisionReason code;
  };
  constexpr char kDenyAll[] = R"(---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {action: DENY, rules: [{}]}
)";
  for (const Case& c : std::vector<Case>{
           {"", "reviews-1", kMtls, true, DecisionReason::kPeerAuthentication},
           {Pa("ns", "shop", "STRICT"), "reviews-1", kPlain, false,
            DecisionReason::kPeerAuthentication},
           {kDenyAll, "reviews-1", kMtls, false, DecisionReason::kAuthorization},
           // STRICT decides first: the AuthorizationPolicy never sees the plaintext connection.
           {Pa("ns", "shop", "STRICT") + kDenyAll, "reviews-1", kPlain, false,
            DecisionReason::kPeerAuthentication},
           {"", "legacy/old-1", kPlain, false, DecisionReason::kNotInMesh}}) {
    std::shared_ptr<const Snapshot> snapshot = Load(c.config);
    ASSERT_NE(snapshot, nullptr);
    InboundConnection connection;
    connection.transport = c.transport;
    connection.peer_identity = IdOf("spiffe://cluster.local/ns/shop/sa/client");
    connection.source_ip = IpOf("10.0.1.1");
    connection.port = 9080;
    InboundDecision decision = DecideInbound(*snapshot, PodRef(*snapshot, c.pod), connection);
    SCOPED_TRACE(decision.trace.ToString());
    EXPECT_EQ(decision.allow, c.allow);
    EXPECT_EQ(decision.reason_code, c.code) << DecisionReasonName(decision.reason_code);
  }
}

TEST(SnapshotTest, IndexesAndSkipsNonOwners) {
  std::shared_ptr<const Snapshot> snapshot = Load("");
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->FindPodByIp(IpOf("192.168.0.10")), nullptr);  // host network
  ASSERT_NE(snapshot->FindPodByIp(IpOf("10.0.1.2")), nullptr);
  EXPECT_EQ(snapshot->FindPodByIp(IpOf("10.0.1.2"))->meta.name, "reviews-1");
  ASSERT_NE(snapshot->FindServiceByClusterIp(IpOf("10.96.1.1")), nullptr);
  EXPECT_EQ(snapshot->ServiceHost(*snapshot->FindServiceByClusterIp(IpOf("10.96.1.1"))),
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
  EXPECT_EQ(snapshot->FindPodByIp(IpOf("10.0.1.2"))->meta.name, "reviews-1");
}

}  // namespace
}  // namespace nodeward::policy
