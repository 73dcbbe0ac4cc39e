// The CA service over real gRPC and TLS on loopback: static node tokens, service-account
// tokens reviewed by the fake Kubernetes API server, and a node's SDS server using the CA.
#include "sds/ca_service.h"

#include <atomic>
#include <fstream>

#include "gtest/gtest.h"
#include "policy/testing/fake_api_server.h"
#include "sds/ca_client.h"
#include "sds/certificate_cache.h"
#include "sds/sds_test_util.h"
#include "sds/token_review.h"

namespace nodeward::sds {
namespace {

using testing::CacheOptions;
using testing::Id;
using testing::IssueDirectly;
using testing::MakeCa;
using testing::SdsServerFixture;
using testing::ShortLived;
using testing::TempDir;

TEST(CaServiceTest, ValidTokenIsServedAndInvalidTokenRefused) {
  TempDir dir;
  const auto erin = Id("shop", "erin");
  const auto ca_identity = Id("nodeward-system", "nodeward-ca");
  auto ca = MakeCa(dir.Sub("ca"));
  LocalCaSigner ca_signer(ca);
  std::ofstream(dir.Sub("tokens")) << "good-token node-1\n"
                                   << "narrow-token node-2 " << erin.ToString() << "\n";
  CaTokenStore tokens(dir.Sub("tokens"));
  ASSERT_TRUE(tokens.Reload().ok());
  crypto::TlsCredentials serving = IssueDirectly(*ca, ca_identity);
  CaServiceOptions options{.listen_address = "127.0.0.1:0",
                           .trust_domain = "cluster.local",
                           .server_cert_chain_pem = serving.cert_chain_pem,
                           .server_key_pem = serving.private_key_pem};
  CaServer ca_server(&ca_signer, {&tokens}, options);
  ASSERT_TRUE(ca_server.Start().ok());
  const std::string address = "127.0.0.1:" + std::to_string(ca_server.port());

  auto client_for = [&](const std::string& token) {
    const std::string token_file = dir.Sub("token-" + token);
    std::ofstream(token_file) << token << "\n";
    IstioCaClientOptions client;
    client.address = address;
    client.root_cert_pem = ca->RootsPem();
    client.token_file = token_file;
    client.server_identity = ca_identity;
    auto signer = IstioCaSigner::Create(client);
    if (!signer.ok()) throw std::runtime_error(std::string(signer.status().message()));
    return std::shared_ptr<IstioCaSigner>(*std::move(signer));
  };
  auto sign = [&](CertificateSigner& signer, const SpiffeId& identity) {
    auto key = crypto::PrivateKey::GenerateP256();
    auto csr = crypto::MakeCsr(*key, identity);
    return signer.Sign(*csr, identity, absl::Minutes(5));
  };

  auto good = client_for("good-token");
  auto issued = sign(*good, erin);
  ASSERT_TRUE(issued.ok()) << issued.status();
  auto roots = crypto::TrustBundle::FromPem(issued->roots_pem);
  ASSERT_TRUE(roots.ok());
  auto verified = crypto::VerifySpiffeChain(issued->chain_pem, *roots);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(*verified, erin);

  auto bad = client_for("wrong-token");
  auto refused = sign(*bad, erin);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);

  auto narrow = client_for("narrow-token");
  EXPECT_TRUE(sign(*narrow, erin).ok());
  auto outside = sign(*narrow, Id("shop", "frank"));
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kPermissionDenied);

  // A CA presenting another identity is not trusted.
  IstioCaClientOptions impostor_check;
  impostor_check.address = address;
  impostor_check.root_cert_pem = ca->RootsPem();
  impostor_check.token_file = dir.Sub("token-good-token");
  impostor_check.server_identity = Id("nodeward-system", "someone-else");
  impostor_check.timeout = absl::Seconds(2);
  auto impostor = IstioCaSigner::Create(impostor_check);
  ASSERT_TRUE(impostor.ok());
  EXPECT_FALSE(sign(**impostor, erin).ok());

  // A node whose SDS server gets its certificates from this CA, over its Unix socket.
  SdsServerFixture node(good, dir.Sub("sds.sock"), {erin}, ShortLived(absl::Minutes(10)));
  ASSERT_TRUE(node.server->Start().ok());
  CertificateCache cache(CacheOptions(dir.Sub("sds.sock")));
  cache.Start();
  cache.Acquire(erin);
  auto credentials = cache.WaitForCredentials(erin, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  EXPECT_EQ(*credentials->leaf.spiffe_id, erin);
  EXPECT_EQ(credentials->bundle.size(), 1u);
  cache.Stop();
}

// Workloads calling the CA with their service-account token, checked with TokenReview (the
// fake API server): the certificate is for the token's service account, never for what the
// CSR asks otherwise; a bad token is UNAUTHENTICATED, an API server that cannot be asked
// UNAVAILABLE. Static node tokens keep working next to it.
TEST(CaServiceTest, ServiceAccountTokensAreCheckedWithTokenReview) {
  TempDir dir;
  auto ca = MakeCa(dir.Sub("ca"));
  LocalCaSigner ca_signer(ca);

  auto api_key = crypto::PrivateKey::GenerateP256();
  auto api_cert = ca->IssueServerCertificate(*api_key, {"kubernetes.default.svc"}, absl::Hours(1));
  ASSERT_TRUE(api_cert.ok()) << api_cert.status();
  auto api_context = crypto::TlsContext::PlainServer({api_cert->chain_pem, *api_key->ToPem()});
  ASSERT_TRUE(api_context.ok()) << api_context.status();
  auto api = std::make_unique<policy::testing::FakeApiServer>(*api_context, "ca-own-token");
  std::atomic<int> reviews{0};
  api->SetHandler(
      "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
      [&](const policy::testing::FakeApiServer::Request& request) {
        ++reviews;
        if (request.authorization != "Bearer ca-own-token") {
          return policy::testing::FakeApiServer::Response{403, "{}"};
        }
        const bool web = request.body.find(R"("token":"jwt-of-web")") != std::string::npos;
        const bool audience = request.body.find(R"("audiences":["istio-ca"])") != std::string::npos;
        return policy::testing::FakeApiServer::Response{
            201, web && audience
                     ? R"({"status":{"authenticated":true,"user":{"username":)"
                       R"("system:serviceaccount:shop:web"},"audiences":["istio-ca"]}})"
                     : R"({"status":{"authenticated":false,"error":"invalid bearer token"}})"};
      });
  std::ofstream(dir.Sub("api-token")) << "ca-own-token\n";
  std::ofstream(dir.Sub("api-ca.crt")) << ca->RootsPem();
  TokenReviewOptions review;
  review.api.host = "127.0.0.1";
  review.api.port = api->port();
  review.api.token_path = dir.Sub("api-token");
  review.api.ca_path = dir.Sub("api-ca.crt");
  review.api.server_names = {"kubernetes.default.svc"};
  review.api.io_timeout = absl::Seconds(5);
  TokenReviewAuthenticator token_review(review);

  std::ofstream(dir.Sub("tokens")) << "node-token node-1\n";
  CaTokenStore tokens(dir.Sub("tokens"));
  ASSERT_TRUE(tokens.Reload().ok());
  const auto ca_identity = Id("nodeward-system", "nodeward-ca");
  crypto::TlsCredentials serving = IssueDirectly(*ca, ca_identity);
  CaServiceOptions options{.listen_address = "127.0.0.1:0",
                           .trust_domain = "cluster.local",
                           .server_cert_chain_pem = serving.cert_chain_pem,
                           .server_key_pem = serving.private_key_pem};
  CaServer ca_server(&ca_signer, {&tokens, &token_review}, options);
  ASSERT_TRUE(ca_server.Start().ok());

  auto sign_with = [&](const std::string& token, const SpiffeId& identity) {
    const std::string token_file = dir.Sub("token-" + token);
    std::ofstream(token_file) << token << "\n";
    IstioCaClientOptions client;
    client.address = "127.0.0.1:" + std::to_string(ca_server.port());
    client.root_cert_pem = ca->RootsPem();
    client.token_file = token_file;
    client.server_identity = ca_identity;
    auto signer = IstioCaSigner::Create(client);
    EXPECT_TRUE(signer.ok()) << signer.status();
    auto key = crypto::PrivateKey::GenerateP256();
    return (*signer)->Sign(*crypto::MakeCsr(*key, identity), identity, absl::Minutes(5));
  };

  const auto web = Id("shop", "web");
  auto issued = sign_with("jwt-of-web", web);
  ASSERT_TRUE(issued.ok()) << issued.status();
  auto roots = crypto::TrustBundle::FromPem(issued->roots_pem);
  ASSERT_TRUE(roots.ok());
  EXPECT_EQ(*crypto::VerifySpiffeChain(issued->chain_pem, *roots), web);

  auto other = sign_with("jwt-of-web", Id("bank", "vault"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied) << other.status();
  // Refused twice over: the request names another identity than the token's, and so does its
  // CSR (the CSR alone is refused too: see the upstream interop test).
  EXPECT_NE(other.status().message().find("may not impersonate"), absl::string_view::npos)
      << other.status();

  auto forged = sign_with("jwt-of-nobody", web);
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kUnauthenticated) << forged.status();

  // The node token never reaches the API server.
  const int before = reviews.load();
  EXPECT_TRUE(sign_with("node-token", Id("bank", "vault")).ok());
  EXPECT_EQ(reviews.load(), before);

  api.reset();  // the API server goes away
  auto unreachable = sign_with("jwt-of-web", web);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_EQ(unreachable.status().code(), absl::StatusCode::kUnavailable) << unreachable.status();
}

}  // namespace
}  // namespace nodeward::sds
