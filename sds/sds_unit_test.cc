// Pure pieces of the SDS layer: resource encoding, callers, allow-lists, CA tokens, backoff.
#include <fstream>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "sds/authorizer.h"
#include "sds/backoff.h"
#include "sds/ca_client.h"
#include "sds/ca_service.h"
#include "sds/caller.h"
#include "sds/sds_test_util.h"
#include "sds/secret_resources.h"
#include "sds/token_review.h"

namespace nodeward::sds {
namespace {

using testing::Id;
using testing::TempDir;

TEST(SecretResourcesTest, CertificateRoundTrips) {
  google::protobuf::Any any =
      PackSecret(MakeTlsCertificateSecret("spiffe://cluster.local/ns/a/sa/b", "CHAIN", "KEY"));
  EXPECT_EQ(any.type_url(), kSecretTypeUrl);
  absl::StatusOr<ReceivedSecret> secret = UnpackSecret(any);
  ASSERT_TRUE(secret.ok()) << secret.status();
  const auto& certificate = std::get<ReceivedCertificate>(*secret);
  EXPECT_EQ(certificate.name, "spiffe://cluster.local/ns/a/sa/b");
  EXPECT_EQ(certificate.cert_chain_pem, "CHAIN");
  EXPECT_EQ(certificate.private_key_pem, "KEY");
}

TEST(SecretResourcesTest, BundleRoundTripsAndAcceptsInlineString) {
  SecretProto secret = MakeValidationContextSecret("ROOTS");
  secret.mutable_validation_context()->mutable_trusted_ca()->set_inline_string("ROOTS2");
  absl::StatusOr<ReceivedSecret> unpacked = UnpackSecret(PackSecret(secret));
  ASSERT_TRUE(unpacked.ok()) << unpacked.status();
  EXPECT_EQ(std::get<ReceivedBundle>(*unpacked).trusted_ca_pem, "ROOTS2");
}

TEST(SecretResourcesTest, RejectsMalformedSecrets) {
  google::protobuf::Any wrong_type = PackSecret(MakeValidationContextSecret("R"));
  wrong_type.set_type_url("type.googleapis.com/envoy.config.cluster.v3.Cluster");
  EXPECT_FALSE(UnpackSecret(wrong_type).ok());

  SecretProto file_source = MakeTlsCertificateSecret("spiffe://cluster.local/ns/a/sa/b", "C", "K");
  file_source.mutable_tls_certificate()->mutable_private_key()->set_filename("/etc/shadow");
  absl::StatusOr<ReceivedSecret> from_file = UnpackSecret(PackSecret(file_source));
  ASSERT_FALSE(from_file.ok());
  EXPECT_NE(from_file.status().message().find("inline"), absl::string_view::npos);

  SecretProto root_as_certificate = MakeTlsCertificateSecret("ROOTCA", "C", "K");
  EXPECT_FALSE(UnpackSecret(PackSecret(root_as_certificate)).ok());

  SecretProto identity_as_bundle = MakeValidationContextSecret("R");
  identity_as_bundle.set_name("spiffe://cluster.local/ns/a/sa/b");
  EXPECT_FALSE(UnpackSecret(PackSecret(identity_as_bundle)).ok());

  SecretProto empty_key = MakeTlsCertificateSecret("spiffe://cluster.local/ns/a/sa/b", "C", "K");
  empty_key.mutable_tls_certificate()->clear_private_key();
  EXPECT_FALSE(UnpackSecret(PackSecret(empty_key)).ok());

  google::protobuf::Any garbage;
  garbage.set_type_url(std::string(kSecretTypeUrl));
  garbage.set_value("\xff\xff\xff");
  EXPECT_FALSE(UnpackSecret(garbage).ok());
}

TEST(SecretResourcesTest, ResourceNames) {
  EXPECT_TRUE(std::holds_alternative<RootCaResource>(*ParseResourceName("ROOTCA")));
  EXPECT_TRUE(std::holds_alternative<SpiffeId>(*ParseResourceName("spiffe://td/ns/a/sa/b")));
  EXPECT_TRUE(std::holds_alternative<DefaultResource>(*ParseResourceName("default")));
  EXPECT_FALSE(ParseResourceName("Default").ok());
  EXPECT_FALSE(ParseResourceName("spiffe://td/ns/a").ok());
  EXPECT_FALSE(ParseResourceName("").ok());
}

// A client-sent name goes into errors and logs escaped and cut: a 1 MiB name must not become
// a 1 MiB gRPC trailer, which clients refuse.
TEST(SecretResourcesTest, ErrorsEchoAtMostAShortEscapedPrefix) {
  const std::string huge(1 << 20, 'x');
  absl::StatusOr<ResourceName> parsed = ParseResourceName(huge);
  ASSERT_FALSE(parsed.ok());
  EXPECT_LT(parsed.status().message().size(), 300u);
  EXPECT_NE(parsed.status().message().find("(1048576 bytes)"), absl::string_view::npos);
  EXPECT_EQ(Echo("spiffe://td/ns/a/sa/b"), "spiffe://td/ns/a/sa/b");
  EXPECT_EQ(Echo(std::string("a\nb\0z", 5)), "a\\nb\\x00z");
  EXPECT_EQ(Echo(std::string(100, 'y')), std::string(96, 'y') + "... (100 bytes)");
}

TEST(CallerTest, PodUidFromTheCgroupsOfEveryKubeletLayout) {
  // cgroup v2, systemd driver (the common case).
  EXPECT_EQ(*PodUidFromCgroups("0::/kubepods.slice/kubepods-burstable.slice/"
                               "kubepods-burstable-pod1b2c3d4e_0000_4abc_8def_0123456789ab.slice/"
                               "cri-containerd-0123abcd.scope\n"),
            "1b2c3d4e-0000-4abc-8def-0123456789ab");
  // Guaranteed QoS has no QoS level in the name.
  EXPECT_EQ(*PodUidFromCgroups("0::/kubepods.slice/"
                               "kubepods-pod1B2C3D4E_0000_4ABC_8DEF_0123456789AB.slice/x.scope"),
            "1b2c3d4e-0000-4abc-8def-0123456789ab");
  // cgroup v1, cgroupfs driver, among other hierarchies.
  EXPECT_EQ(*PodUidFromCgroups("12:pids:/kubepods/besteffort/"
                               "pod9e8d7c6b-1111-2222-3333-444455556666/abcdef\n"
                               "11:memory:/kubepods/besteffort/"
                               "pod9e8d7c6b-1111-2222-3333-444455556666/abcdef\n"),
            "9e8d7c6b-1111-2222-3333-444455556666");
  // Seen from inside a cgroup namespace: relative, but the pod's component is there.
  EXPECT_EQ(*PodUidFromCgroups("0::/../../kubepods-besteffort-"
                               "pod9e8d7c6b_1111_2222_3333_444455556666.slice/c.scope\n"),
            "9e8d7c6b-1111-2222-3333-444455556666");
  // Not pods: the host, a systemd service, look-alikes.
  for (const char* other :
       {"0::/\n", "0::/system.slice/kubelet.service\n", "1:name=systemd:/user.slice\n",
        "0::/kubepods.slice/kubepods-burstable.slice\n",
        "0::/notapod12345678-1111-2222-3333-4444\n", "0::/pod9e8d7c6b-1111-2222-3333-44445555666\n",
        "garbage", ""}) {
    EXPECT_EQ(PodUidFromCgroups(other).status().code(), absl::StatusCode::kNotFound) << other;
  }
}

TEST(CallerTest, LimitKeyIsThePodWhenKnownElseTheUser) {
  SdsCaller caller;
  caller.peer = {42, 1337, 1337};
  EXPECT_EQ(caller.LimitKey(), "uid 1337");
  EXPECT_EQ(caller.Describe(), "pid 42 uid 1337");
  caller.pod = "shop/web-1";
  caller.workload = Id("shop", "web");
  EXPECT_EQ(caller.LimitKey(), "pod shop/web-1");
  EXPECT_EQ(caller.Describe(), "pid 42 uid 1337 pod shop/web-1");
}

TEST(TokenReviewTest, RequestCarriesTheTokenAndTheAudiences) {
  const std::string token = "a\"b\\c\n\x01";
  google::protobuf::Struct review;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  TokenReviewRequest(token, {"istio-ca", "x"}), &review)
                  .ok());
  const auto& fields = review.fields();
  EXPECT_EQ(fields.at("apiVersion").string_value(), "authentication.k8s.io/v1");
  EXPECT_EQ(fields.at("kind").string_value(), "TokenReview");
  const auto& spec = fields.at("spec").struct_value().fields();
  EXPECT_EQ(spec.at("token").string_value(), token);
  const auto& audiences = spec.at("audiences").list_value().values();
  ASSERT_EQ(audiences.size(), 2);
  EXPECT_EQ(audiences[0].string_value(), "istio-ca");
  EXPECT_EQ(audiences[1].string_value(), "x");
}

TEST(TokenReviewTest, AnswerNamesTheServiceAccountOrSaysWhyNot) {
  const std::vector<std::string> audiences = {"istio-ca"};
  absl::StatusOr<ServiceAccountRef> account =
      ParseTokenReview(R"({"kind":"TokenReview","status":{"authenticated":true,"user":{"username":)"
                       R"("system:serviceaccount:shop:web","groups":["system:serviceaccounts"]},)"
                       R"("audiences":["istio-ca"]}})",
                       audiences);
  ASSERT_TRUE(account.ok()) << account.status();
  EXPECT_EQ(account->ns, "shop");
  EXPECT_EQ(account->name, "web");

  struct Bad {
    const char* json;
    absl::StatusCode code;
    const char* reason;
  };
  for (const Bad& bad : std::vector<Bad>{
           {R"({"status":{"authenticated":false,"error":"token expired"}})",
            absl::StatusCode::kUnauthenticated, "token expired"},
           {R"({"status":{}})", absl::StatusCode::kUnauthenticated, "did not authenticate"},
           {R"({"status":{"authenticated":true,"user":{"username":"alice"},)"
            R"("audiences":["istio-ca"]}})",
            absl::StatusCode::kUnauthenticated, "not a service account's"},
           {R"({"status":{"authenticated":true,"user":{"username":"system:serviceaccount:x"},)"
            R"("audiences":["istio-ca"]}})",
            absl::StatusCode::kUnauthenticated, "names no service account"},
           // Valid, but for another audience, or from a server that ignores audiences.
           {R"({"status":{"authenticated":true,"user":{"username":)"
            R"("system:serviceaccount:shop:web"},"audiences":["vault"]}})",
            absl::StatusCode::kUnauthenticated, "audience"},
           {R"({"status":{"authenticated":true,"user":{"username":)"
            R"("system:serviceaccount:shop:web"}}})",
            absl::StatusCode::kUnauthenticated, "audience"},
           {R"({"status":{"authenticated":"maybe"}})", absl::StatusCode::kInvalidArgument,
            "malformed"},
           {"not json: [", absl::StatusCode::kInvalidArgument, "not JSON"},
           {"[]", absl::StatusCode::kInvalidArgument, "no status"}}) {
    absl::StatusOr<ServiceAccountRef> refused = ParseTokenReview(bad.json, audiences);
    ASSERT_FALSE(refused.ok()) << bad.json;
    EXPECT_EQ(refused.status().code(), bad.code) << bad.json << ": " << refused.status();
    EXPECT_NE(refused.status().message().find(bad.reason), absl::string_view::npos)
        << bad.json << ": " << refused.status();
  }
}

TEST(AuthorizerTest, ParsesListsAndNamesTheBadLine) {
  auto parsed = ParseIdentityList("# node-1\n\nspiffe://cluster.local/ns/a/sa/b\n  \n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->size(), 1u);
  auto bad = ParseIdentityList("spiffe://cluster.local/ns/a/sa/b\nnot-an-id\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), absl::string_view::npos);
}

TEST(AuthorizerTest, FixedAndFileIdentitiesWithReloadOnChange) {
  TempDir dir;
  const std::string file = dir.Sub("allowed");
  std::ofstream(file) << "spiffe://cluster.local/ns/a/sa/from-file\n";
  AllowListAuthorizer authorizer({Id("a", "fixed")}, file);
  ASSERT_TRUE(authorizer.Reload().ok());
  EXPECT_TRUE(authorizer.Authorize(Id("a", "fixed")).ok());
  EXPECT_TRUE(authorizer.Authorize(Id("a", "from-file")).ok());
  absl::Status refused = authorizer.Authorize(Id("a", "other"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(refused.message().find("spiffe://cluster.local/ns/a/sa/other"),
            absl::string_view::npos);

  // A changed file is picked up without a signal (its size differs).
  std::ofstream(file) << "spiffe://cluster.local/ns/a/sa/other\n";
  EXPECT_TRUE(authorizer.Authorize(Id("a", "other")).ok());
  EXPECT_FALSE(authorizer.Authorize(Id("a", "from-file")).ok());

  // A broken file keeps the previous list.
  std::ofstream(file) << "garbage that is long enough to change the size\n";
  EXPECT_FALSE(authorizer.Reload().ok());
  EXPECT_TRUE(authorizer.Authorize(Id("a", "other")).ok());
}

TEST(CaTokensTest, Parses) {
  auto tokens = ParseCaTokens(
      "# token node identities\n"
      "t1 node-1\n"
      "t2 node-2 spiffe://cluster.local/ns/a/sa/b spiffe://cluster.local/ns/a/sa/c\n");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->at("t1").node, "node-1");
  EXPECT_FALSE(tokens->at("t1").allowed_identities.has_value());
  EXPECT_EQ(tokens->at("t2").allowed_identities->size(), 2u);
  EXPECT_FALSE(ParseCaTokens("lonely\n").ok());
  EXPECT_FALSE(ParseCaTokens("t node spiffe://bad\n").ok());
  EXPECT_FALSE(ParseCaTokens("t a\nt b\n").ok());
}

TEST(BackoffTest, GrowsToTheCapWithJitterBelowTheBase) {
  Backoff backoff({absl::Milliseconds(100), absl::Seconds(1), 2.0, 0.5});
  absl::Duration previous_cap = absl::Milliseconds(100);
  for (int i = 0; i < 10; ++i) {
    absl::Duration delay = backoff.Next();
    EXPECT_LE(delay, previous_cap);
    EXPECT_GE(delay, previous_cap / 2);
    previous_cap = std::min(absl::Seconds(1), previous_cap * 2);
  }
  backoff.Reset();
  EXPECT_LE(backoff.Next(), absl::Milliseconds(100));
}

TEST(IstioChainTest, SplitsLeafFirstRootLast) {
  TempDir dir;
  auto ca = testing::MakeCa(dir.Sub("ca"));
  auto key = crypto::PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok());
  auto csr = crypto::MakeCsr(*key, Id("a", "b"));
  ASSERT_TRUE(csr.ok());
  crypto::SignRequest request;
  request.csr_pem = *csr;
  auto signed_certificate = ca->Sign(request);
  ASSERT_TRUE(signed_certificate.ok()) << signed_certificate.status();
  auto split = SplitIstioCertChain({signed_certificate->chain_pem, ca->RootsPem()});
  ASSERT_TRUE(split.ok()) << split.status();
  auto leaf = crypto::InspectCertificate(split->chain_pem);
  ASSERT_TRUE(leaf.ok());
  EXPECT_EQ(leaf->serial_hex, signed_certificate->leaf.serial_hex);
  EXPECT_EQ(*crypto::SplitPemCertificates(split->roots_pem),
            *crypto::SplitPemCertificates(ca->RootsPem()));
  EXPECT_FALSE(SplitIstioCertChain({signed_certificate->chain_pem}).ok());
  EXPECT_FALSE(SplitIstioCertChain({"junk", "junk"}).ok());
}

}  // namespace
}  // namespace nodeward::sds
