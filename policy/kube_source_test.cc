// KubeSource against the fake API server (policy/testing): HTTPS on 127.0.0.1 with the real
// list/watch wire format.
#include "policy/kube_source.h"

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/testing/literals.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/decisions.h"
#include "policy/testing/fake_api_server.h"
#include "policy/testing/test_api_server.h"

namespace nodeward::policy {
namespace {

using ::nodeward::literals::IdOf;
using ::nodeward::literals::IpOf;
using ::testing::HasSubstr;

constexpr char kToken[] = "test-token-1";

using ::nodeward::policy::testing::FakeApiServer;

constexpr char kNamespaces[] = "/api/v1/namespaces";
constexpr char kPods[] = "/api/v1/pods";
constexpr char kServices[] = "/api/v1/services";
constexpr char kSlices[] = "/apis/discovery.k8s.io/v1/endpointslices";
constexpr char kPeerAuthV1beta1[] = "/apis/security.istio.io/v1beta1/peerauthentications";
constexpr char kRules[] = "/apis/networking.istio.io/v1/destinationrules";
constexpr char kAuthz[] = "/apis/security.istio.io/v1/authorizationpolicies";

// An AuthorizationPolicy in shop; `spec` is its JSON spec.
std::string AuthzJson(const std::string& name, const std::string& spec, const std::string& rv) {
  return absl::StrCat(
      R"({"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":")",
      name, R"(","namespace":"shop","resourceVersion":")", rv,
      R"(","creationTimestamp":"2024-05-01T10:00:00Z"},"spec":)", spec, "}");
}

std::string PodJson(const std::string& name, const std::string& ip, const std::string& rv,
                    const std::string& app) {
  return absl::StrCat(
      R"({"metadata":{"name":")", name, R"(","namespace":"shop","uid":"u-)", name,
      R"(","resourceVersion":")", rv,
      R"(","creationTimestamp":"2024-05-01T10:00:00Z","labels":{"app":")", app,
      R"("}},"spec":{"serviceAccountName":")", app,
      R"(","nodeName":"node-a","containers":[{"name":"app","image":"x","ports":[{"name":"http","containerPort":9080,"protocol":"TCP"}]}]},"status":{"phase":"Running","podIP":")",
      ip, R"(","podIPs":[{"ip":")", ip,
      R"("}],"conditions":[{"type":"Ready","status":"True","lastTransitionTime":null}]}})");
}

std::string ServiceJson(const std::string& name, const std::string& ip, const std::string& rv) {
  return absl::StrCat(
      R"({"metadata":{"name":")", name, R"(","namespace":"shop","resourceVersion":")", rv,
      R"("},"spec":{"type":"ClusterIP","clusterIP":")", ip, R"(","clusterIPs":[")", ip,
      R"("],"selector":{"app":"reviews"},"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":"http"}]}})");
}

std::string PeerAuthJson(const std::string& mode, const std::string& rv) {
  return absl::StrCat(
      R"({"apiVersion":"security.istio.io/v1beta1","kind":"PeerAuthentication","metadata":{"name":"default","namespace":"shop","resourceVersion":")",
      rv, R"("},"spec":{"mtls":{"mode":")", mode, R"("}}})");
}

class KubeSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    absl::StatusOr<testing::TestApiServer> api = testing::StartTestApiServer(dir_.path(), kToken);
    ASSERT_TRUE(api.ok()) << api.status();
    server_ = std::move(api->server);
    options_ = api->options;

    server_->SetList(
        kNamespaces, "10",
        {R"({"metadata":{"name":"shop","resourceVersion":"3","labels":{"nodeward.io/dataplane-mode":"enabled"}}})"});
    server_->SetList(kPods, "10",
                     {PodJson("client", "10.0.1.1", "4", "client"),
                      PodJson("reviews-1", "10.0.1.2", "5", "reviews")});
    server_->SetList(kServices, "10", {ServiceJson("reviews", "10.96.1.1", "6")});
    server_->SetList(
        kSlices, "10",
        {R"({"metadata":{"name":"reviews-x","namespace":"shop","labels":{"kubernetes.io/service-name":"reviews"}},"addressType":"IPv4","ports":[{"name":"http","port":9080,"protocol":"TCP"}],"endpoints":[{"addresses":["10.0.1.2"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","name":"reviews-1","namespace":"shop"}}]})"});
    // Only the older PeerAuthentication version is served: v1 answers 404.
    server_->SetList(kPeerAuthV1beta1, "10", {});
    server_->SetList(kRules, "10", {});
  }

  // Runs on failure too: the source first (its threads), then the server, then the files.
  void TearDown() override {
    source_.reset();
    server_.reset();
  }

  KubeSourceOptions Options() { return options_; }

  bool WaitFor(const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return done();
  }

  crypto::testing::TempDir dir_;
  std::unique_ptr<FakeApiServer> server_;
  KubeSourceOptions options_;
  std::unique_ptr<KubeSource> source_;
};

TEST_F(KubeSourceTest, ListsWatchesAndFollowsChanges) {
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;

  // The initial lists make a working snapshot.
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  const Pod* client = snapshot->FindPod("shop", "client");
  ASSERT_NE(client, nullptr);
  OutboundDecision outbound = DecideOutbound(*snapshot, *client, IpOf("10.96.1.1"), 80);
  EXPECT_EQ(outbound.action, OutboundAction::kHbone) << outbound.trace.ToString();
  EXPECT_EQ(outbound.expected_peer_identity, "spiffe://cluster.local/ns/shop/sa/reviews");
  EXPECT_EQ(absl::StrCat(outbound.address.ToString(), ":", outbound.port), "10.0.1.2:9080");
  EXPECT_GE(server_->Count("/apis/security.istio.io/v1/peerauthentications?limit="), 1);

  // ADDED: a STRICT namespace policy arrives over the v1beta1 watch.
  ASSERT_TRUE(
      WaitFor([&] { return server_->Count(absl::StrCat(kPeerAuthV1beta1, "?watch=1")) > 0; }));
  server_->PushEvent(kPeerAuthV1beta1, "ADDED", PeerAuthJson("STRICT", "20"));
  ASSERT_TRUE(
      WaitFor([&] { return source_->Current()->resources().peer_authentications.size() == 1; }));
  snapshot = source_->Current();
  InboundDecision inbound = DecideInbound(*snapshot, *snapshot->FindPod("shop", "reviews-1"), 9080,
                                          InboundTransport::kPlaintext);
  EXPECT_FALSE(inbound.allow) << inbound.trace.ToString();

  // An invalid MODIFIED keeps the last good version and is reported.
  server_->PushEvent(kPeerAuthV1beta1, "MODIFIED", PeerAuthJson("BOGUS", "21"));
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(), "unknown mode \"BOGUS\"");
  }));
  EXPECT_EQ(source_->Current()->resources().peer_authentications.at(0).mode, MtlsMode::kStrict);
  server_->PushEvent(kPeerAuthV1beta1, "MODIFIED", PeerAuthJson("DISABLE", "22"));
  ASSERT_TRUE(WaitFor([&] {
    return source_->Current()->resources().peer_authentications.at(0).mode == MtlsMode::kDisable;
  }));

  // A bookmark moves the resourceVersion the next watch resumes from.
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kPods, "?watch=1")) > 0; }));
  server_->PushEvent(kPods, "BOOKMARK",
                     R"({"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"25"}})");
  absl::SleepFor(absl::Milliseconds(200));
  server_->EndWatches(kPods);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kPods, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=25")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_EQ(server_->Count(absl::StrCat(kPods, "?limit=")), 1);  // resumed, not relisted

  // DELETED removes the pod.
  server_->PushEvent(kPods, "DELETED", PodJson("client", "10.0.1.1", "26", "client"));
  ASSERT_TRUE(WaitFor([&] { return source_->Current()->FindPod("shop", "client") == nullptr; }));

  // A watch cut mid-stream is an error: reported, then resumed after a backoff from the last
  // resourceVersion seen (the DELETED event's), without relisting.
  server_->DropWatches(kPods);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kPods, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=26")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_THAT(std::string(source_->Status().last_error.message()),
              HasSubstr("pods: connection closed inside a chunked body"));
  EXPECT_EQ(server_->Count(absl::StrCat(kPods, "?limit=")), 1);

  // 410 Gone: the source relists and the new list replaces the old objects.
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kServices, "?watch=1")) > 0; }));
  server_->SetList(kServices, "40", {ServiceJson("reviews-v2", "10.96.1.2", "39")});
  server_->PushEvent(
      kServices, "ERROR",
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410})");
  ASSERT_TRUE(WaitFor([&] {
    std::shared_ptr<const Snapshot> now = source_->Current();
    return now->FindService("shop", "reviews-v2") != nullptr &&
           now->FindService("shop", "reviews") == nullptr;
  }));
  EXPECT_EQ(server_->Count(absl::StrCat(kServices, "?limit=")), 2);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kServices, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=40")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_GT(source_->Status().generation, 1u);
}

// A call that is not a list or a watch: the body goes out with the source's token, the answer
// comes back whatever its status.
TEST_F(KubeSourceTest, KubeRequestPostsWithTheTokenAndReturnsTheAnswer) {
  server_->SetHandler("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                      [](const FakeApiServer::Request& request) {
                        return FakeApiServer::Response{
                            request.authorization == absl::StrCat("Bearer ", kToken) ? 201 : 401,
                            absl::StrCat(R"({"echo":)", request.body, "}")};
                      });
  absl::StatusOr<KubeResponse> answer =
      KubeRequest(Options(), "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                  R"({"spec":{"token":"x"}})");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 201);
  EXPECT_EQ(answer->body, R"({"echo":{"spec":{"token":"x"}}})");

  KubeSourceOptions wrong_ca = Options();
  wrong_ca.ca_path = dir_.Sub("missing.crt");
  EXPECT_FALSE(KubeRequest(wrong_ca, "POST", "/x", "{}").ok());
  KubeSourceOptions small = Options();
  EXPECT_FALSE(KubeRequest(small, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                           R"({"spec":{"token":"x"}})", /*limit=*/8)
                   .ok());
}

// Connections to shop's pods, as the data plane would describe them.
InboundDecision Inbound(const Snapshot& snapshot, const std::string& pod,
                        absl::string_view peer = "spiffe://cluster.local/ns/shop/sa/client") {
  InboundConnection connection;
  connection.transport = InboundTransport::kMtls;
  connection.peer_identity = IdOf(peer);
  connection.source_ip = IpOf("10.0.1.1");
  connection.port = 9080;
  return DecideInbound(snapshot, *snapshot.FindPod("shop", pod), connection);
}

TEST_F(KubeSourceTest, AuthorizationPoliciesAreListedWatchedAndFailClosedWhenBroken) {
  // One valid ALLOW for reviews, and one ALLOW for client that no validation would accept.
  server_->SetList(
      kAuthz, "10",
      {AuthzJson(
           "allow-shop",
           R"({"selector":{"matchLabels":{"app":"reviews"}},"rules":[{"from":[{"source":{"namespaces":["shop"]}}]}]})",
           "7"),
       AuthzJson(
           "broken",
           R"({"selector":{"matchLabels":{"app":"client"}},"rules":[{"to":[{"operation":{"ports":["08080"]}}]}]})",
           "8")});
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  ASSERT_EQ(snapshot->resources().authorization_policies.size(), 2u);
  EXPECT_TRUE(Inbound(*snapshot, "reviews-1").allow);
  EXPECT_FALSE(Inbound(*snapshot, "reviews-1", "spiffe://cluster.local/ns/other/sa/x").allow);
  // The broken ALLOW stands in: it allows nothing, rather than vanishing and allowing all.
  InboundDecision refused = Inbound(*snapshot, "client");
  EXPECT_FALSE(refused.allow) << refused.trace.ToString();
  EXPECT_EQ(refused.reason_code, DecisionReason::kAuthorization);
  EXPECT_THAT(refused.trace.ToString(), HasSubstr("AuthorizationPolicy shop/broken was rejected"));
  EXPECT_THAT(std::string(source_->Status().last_error.message()), HasSubstr("\"08080\""));

  // A DENY whose action cannot be read denies everything in its namespace.
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kAuthz, "?watch=1")) > 0; }));
  server_->PushEvent(kAuthz, "ADDED",
                     AuthzJson("deny-typo", R"({"action":"DENNY","rules":[{}]})", "20"));
  ASSERT_TRUE(
      WaitFor([&] { return source_->Current()->resources().authorization_policies.size() == 3; }));
  InboundDecision denied = Inbound(*source_->Current(), "reviews-1");
  EXPECT_FALSE(denied.allow);
  ASSERT_TRUE(denied.authorization.has_value());
  EXPECT_EQ(denied.authorization->outcome, AuthorizationOutcome::kDenied);
  server_->PushEvent(kAuthz, "DELETED", AuthzJson("deny-typo", "{}", "21"));

  // Fixed: the stand-in goes.
  server_->PushEvent(
      kAuthz, "MODIFIED",
      AuthzJson(
          "broken",
          R"({"selector":{"matchLabels":{"app":"client"}},"rules":[{"to":[{"operation":{"ports":["9080"]}}]}]})",
          "22"));
  ASSERT_TRUE(WaitFor([&] { return Inbound(*source_->Current(), "client").allow; }));

  // Broken again after being valid: its last good version stays in force.
  server_->PushEvent(kAuthz, "MODIFIED",
                     AuthzJson("broken", R"({"rules":[{"from":[{"source":{}}]}]})", "23"));
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(), "must not be empty");
  }));
  EXPECT_TRUE(Inbound(*source_->Current(), "client").allow);
  for (const AuthorizationPolicy& policy : source_->Current()->resources().authorization_policies) {
    EXPECT_TRUE(policy.rejected.empty()) << policy.meta.name;
  }
}

TEST_F(KubeSourceTest, RelistKeepsTheLastGoodVersionOfAnObjectThatStoppedParsing) {
  server_->SetList(
      kAuthz, "10",
      {AuthzJson("allow-shop", R"({"rules":[{"from":[{"source":{"namespaces":["shop"]}}]}]})",
                 "7")});
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kAuthz, "?watch=1")) > 0; }));
  server_->SetList(kAuthz, "30", {AuthzJson("allow-shop", R"({"action":"NOPE"})", "29")});
  server_->PushEvent(kAuthz, "ERROR", R"({"kind":"Status","code":410})");
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kAuthz, "?limit=")) >= 2; }));
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(), "unknown action \"NOPE\"");
  }));
  const std::vector<AuthorizationPolicy>& policies =
      source_->Current()->resources().authorization_policies;
  ASSERT_EQ(policies.size(), 1u);
  EXPECT_EQ(policies[0].action, AuthorizationAction::kAllow);
  ASSERT_EQ(policies[0].rules.size(), 1u);
  EXPECT_TRUE(policies[0].rejected.empty());
}

TEST_F(KubeSourceTest, TooManyObjectsOfAKindAreRefused) {
  server_->SetList(
      kAuthz, "10",
      {AuthzJson("a", "{}", "1"), AuthzJson("b", "{}", "2"), AuthzJson("c", "{}", "3")});
  KubeSourceOptions options = Options();
  options.snapshot.limits.max_policies = 2;
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(options);
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(),
                             "authorizationpolicies: more than 2 objects");
  }));
  EXPECT_EQ(source_->Current(), nullptr);  // nothing partial is ever published
}

TEST_F(KubeSourceTest, UnknownKindsAreRefused) {
  KubeSourceOptions options = Options();
  options.kinds = {"Pod", "Frobnicator"};
  EXPECT_THAT(std::string(KubeSource::Start(options).status().message()),
              HasSubstr("unknown kind \"Frobnicator\""));
}

TEST_F(KubeSourceTest, MissingIstioResourcesMeanNone) {
  // Without Istio's CRDs every version answers 404: the source still syncs, with no policies.
  server_->RemoveList(kRules);
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  EXPECT_TRUE(source_->Current()->resources().destination_rules.empty());
  for (const char* version : {"v1", "v1beta1", "v1alpha3"}) {
    EXPECT_GE(server_->Count(
                  absl::StrCat("/apis/networking.istio.io/", version, "/destinationrules?limit=")),
              1)
        << version;
  }
  EXPECT_NE(source_->Current()->FindPod("shop", "reviews-1"), nullptr);
}

TEST_F(KubeSourceTest, UntrustedServerNeverSyncs) {
  crypto::testing::TempDir other;
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
      crypto::CertificateAuthority::LoadOrCreate(other.Sub("ca"));
  ASSERT_TRUE(ca.ok());
  std::ofstream(dir_.Sub("other-ca.crt")) << (*ca)->RootsPem();
  KubeSourceOptions options = Options();
  options.ca_path = dir_.Sub("other-ca.crt");
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(options);
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  EXPECT_FALSE(source_->WaitForSync(absl::Seconds(1)));
  ASSERT_TRUE(WaitFor([&] { return !source_->Status().last_error.ok(); }));
  EXPECT_THAT(std::string(source_->Status().last_error.message()), HasSubstr("TLS"));
  EXPECT_EQ(source_->Current(), nullptr);
}

TEST_F(KubeSourceTest, RejectedTokenIsReported) {
  std::ofstream(dir_.Sub("token"), std::ios::trunc) << "wrong";
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(source_->Status().last_error.message(), "HTTP 401"); }));
  EXPECT_EQ(source_->Current(), nullptr);
  // A rotated token is picked up on the next attempt.
  std::ofstream(dir_.Sub("token"), std::ios::trunc) << kToken;
  EXPECT_TRUE(source_->WaitForSync(absl::Seconds(15)));
}

TEST_F(KubeSourceTest, FollowsOneNodesPodsThroughRealWatchSemantics) {
  server_->ServeResource(kNamespaces, "Namespace", /*namespaced=*/false);
  server_->ServeResource(kPods, "Pod", /*namespaced=*/true);
  auto ns = [](const std::string& name, const std::string& labels) {
    return absl::StrCat(R"({"metadata":{"name":")", name, R"(","labels":{)", labels, "}}}");
  };
  auto pod = [](const std::string& name, const std::string& node) {
    return absl::StrCat(R"({"metadata":{"name":")", name,
                        R"("},"spec":{"serviceAccountName":"sa","nodeName":")", node,
                        R"("},"status":{"phase":"Running"}})");
  };
  ASSERT_EQ(
      server_->CreateObject(kNamespaces, ns("shop", R"("nodeward.io/dataplane-mode":"enabled")")),
      201);
  ASSERT_EQ(server_->CreateObject("/api/v1/namespaces/shop/pods", pod("web", "node-a")), 201);
  ASSERT_EQ(server_->CreateObject("/api/v1/namespaces/shop/pods", pod("db", "node-b")), 201);

  KubeSourceOptions options = Options();
  options.kinds = {"Namespace", "Pod"};
  options.pod_field_selector = "spec.nodeName=node-a";
  options.watch_timeout_seconds = 2;
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(options);
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  EXPECT_NE(source_->Current()->FindPod("shop", "web"), nullptr);
  EXPECT_EQ(source_->Current()->FindPod("shop", "db"), nullptr);  // another node's
  EXPECT_EQ(server_->Count(kServices), 0);                        // not a kind it follows
  EXPECT_GE(server_->Count(absl::StrCat(kPods, "?limit=500&fieldSelector=spec.nodeName%3Dnode-a")),
            1);

  // A label flip and pods coming and going arrive over the watch.
  ASSERT_EQ(server_->ReplaceObject("/api/v1/namespaces/shop", ns("shop", "")), 200);
  ASSERT_TRUE(
      WaitFor([&] { return source_->Current()->FindNamespace("shop")->meta.labels.empty(); }));
  ASSERT_EQ(server_->CreateObject("/api/v1/namespaces/shop/pods", pod("api", "node-a")), 201);
  ASSERT_TRUE(WaitFor([&] { return source_->Current()->FindPod("shop", "api") != nullptr; }));
  ASSERT_EQ(server_->DeleteObject("/api/v1/namespaces/shop/pods/api"), 200);
  ASSERT_TRUE(WaitFor([&] { return source_->Current()->FindPod("shop", "api") == nullptr; }));

  // Bookmarks carry the watch past changes of other resources: after the server ends the
  // watch (timeoutSeconds), it resumes from the newest version, not the last pod's.
  ASSERT_EQ(server_->ReplaceObject("/api/v1/namespaces/shop", ns("shop", R"("a":"b")")), 200);
  const std::string newest = absl::StrCat("resourceVersion=", server_->ResourceVersion());
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kPods, "?watch=1")) &&
          absl::StrContains(target, newest)) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_EQ(server_->Count(absl::StrCat(kPods, "?limit=")), 1);  // resumed, never relisted

  // History compacted and the connections dropped: the watch resumes, is told 410 Gone, and
  // the source relists, missing nothing that changed meanwhile.
  server_->Compact();
  server_->DropStoredWatches();
  ASSERT_EQ(server_->CreateObject("/api/v1/namespaces/shop/pods", pod("late", "node-a")), 201);
  ASSERT_TRUE(WaitFor([&] { return source_->Current()->FindPod("shop", "late") != nullptr; }));
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kPods, "?limit=")) >= 2; }));
}

TEST_F(KubeSourceTest, AGatewayAlsoFollowsGatewaysVirtualServicesAndItsOwnSecrets) {
  constexpr char kGateways[] = "/apis/networking.istio.io/v1/gateways";
  constexpr char kVirtualServices[] = "/apis/networking.istio.io/v1/virtualservices";
  constexpr char kIngressSecrets[] = "/api/v1/namespaces/istio-ingress/secrets";
  server_->SetList(
      kGateways, "10",
      {R"({"metadata":{"name":"public","namespace":"istio-ingress","resourceVersion":"7"},"spec":{"servers":[{"port":{"number":443,"name":"tls","protocol":"TLS"},"hosts":["shop.example.com"],"tls":{"mode":"SIMPLE","credentialName":"shop-cert"}}]}})"});
  server_->SetList(
      kVirtualServices, "10",
      {R"({"metadata":{"name":"shop","namespace":"shop","resourceVersion":"8"},"spec":{"hosts":["shop.example.com"],"gateways":["istio-ingress/public"],"tcp":[{"route":[{"destination":{"host":"reviews"}}]}]}})"});
  // "Q0VSVA==" and "S0VZ" are "CERT" and "KEY".
  server_->SetList(
      kIngressSecrets, "10",
      {R"({"metadata":{"name":"shop-cert","namespace":"istio-ingress","resourceVersion":"9"},"type":"kubernetes.io/tls","data":{"tls.crt":"Q0VSVA==","tls.key":"S0VZ"}})"});

  KubeSourceOptions options = Options();
  options.gateway_namespace = "istio-ingress";
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(options);
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  ASSERT_EQ(snapshot->resources().gateways.size(), 1u);
  EXPECT_EQ(snapshot->resources().gateways[0].meta.name, "public");
  ASSERT_EQ(snapshot->resources().virtual_services.size(), 1u);
  const Secret* secret = snapshot->FindSecret("istio-ingress", "shop-cert");
  ASSERT_NE(secret, nullptr);
  EXPECT_EQ(secret->data.at("tls.crt"), "CERT");
  // Its own namespace's Secrets only, without the kinds that are never a credential.
  EXPECT_GE(server_->Count(absl::StrCat(
                kIngressSecrets,
                "?limit=500&fieldSelector=type%21%3Dhelm.sh%2Frelease.v1%2Ctype%21%3Dkubernetes."
                "io%2Fservice-account-token")),
            1);
  EXPECT_EQ(server_->Count("/api/v1/secrets"), 0);
}

TEST_F(KubeSourceTest, TheNodeAgentReadsNoGatewayKindsAndNoSecrets) {
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  for (const std::string& target : server_->Requests()) {
    EXPECT_FALSE(absl::StrContains(target, "secrets")) << target;
    EXPECT_FALSE(absl::StrContains(target, "gateways")) << target;
    EXPECT_FALSE(absl::StrContains(target, "virtualservices")) << target;
  }
  EXPECT_TRUE(source_->Current()->resources().secrets.empty());
}

TEST_F(KubeSourceTest, TellsWhetherAnObjectIsThereOrGoing) {
  server_->ServeResource("/apis/apps/v1/daemonsets", "DaemonSet", /*namespaced=*/true);
  const std::string path = "/apis/apps/v1/namespaces/nodeward-system/daemonsets/nodeward";
  EXPECT_EQ(*GetObjectPresence(Options(), path), ObjectPresence::kAbsent);
  ASSERT_EQ(server_->CreateObject("/apis/apps/v1/namespaces/nodeward-system/daemonsets",
                                  R"({"metadata":{"name":"nodeward"}})"),
            201);
  EXPECT_EQ(*GetObjectPresence(Options(), path), ObjectPresence::kPresent);
  ASSERT_EQ(
      server_->ReplaceObject(
          path, R"({"metadata":{"name":"nodeward","deletionTimestamp":"2026-01-01T00:00:00Z"}})"),
      200);
  EXPECT_EQ(*GetObjectPresence(Options(), path), ObjectPresence::kBeingDeleted);
  std::ofstream(dir_.Sub("token"), std::ios::trunc) << "revoked";
  EXPECT_EQ(*GetObjectPresence(Options(), path), ObjectPresence::kForbidden);
  KubeSourceOptions unreachable = Options();
  unreachable.port = 1;
  EXPECT_FALSE(GetObjectPresence(unreachable, path).ok());
}

TEST(KubeSourceOptionsTest, InClusterReadsTheEnvironment) {
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_EQ(KubeSourceOptions::InCluster().status().code(), absl::StatusCode::kFailedPrecondition);
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
  absl::StatusOr<KubeSourceOptions> options = KubeSourceOptions::InCluster();
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->host, "10.96.0.1");
  EXPECT_EQ(options->port, 6443);
  for (const char* bad : {"http", "06443", "+6443"}) {
    setenv("KUBERNETES_SERVICE_PORT", bad, 1);
    EXPECT_FALSE(KubeSourceOptions::InCluster().ok()) << bad;
  }
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

}  // namespace
}  // namespace nodeward::policy
