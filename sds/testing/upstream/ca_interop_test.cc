// nodeward-sds's CA side as istio-agent and istiod's clients meet it, from clients built from
// Istio's and Envoy's own protos: ROOTCA before any certificate with an upstream CA, the CA's
// certificate under host-name verification, istio-agent's RSA and ECDSA CSRs through
// TokenReview (the fake Kubernetes API server), CSRs made by the openssl command line.
#include "sds/testing/upstream/interop.h"

namespace nodeward::sds::interop {
namespace {

// Point 4: with an upstream CA, ROOTCA is served from --ca-root-file at once, before any
// certificate was issued and even while the CA is unreachable; the certificates issued once
// it is up verify against that bundle.
TEST_F(UpstreamInteropTest, UpstreamModeServesRootcaBeforeAnyCertificate) {
  auto ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string root_file = dir_.Sub("ca/ca-cert.pem");
  std::ofstream(dir_.Sub("token")) << "node-token\n";
  std::ofstream(dir_.Sub("tokens")) << "node-token node-1\n";
  const std::string port = std::to_string(FreeLoopbackPort());
  const std::string socket = dir_.Sub("node.sock");
  Process node({Bin(), "--sds-socket=" + socket, "--ca-address=127.0.0.1:" + port,
                "--ca-root-file=" + root_file, "--ca-token-file=" + dir_.Sub("token"),
                "--ca-tls-server-name=istiod.istio-system.svc",
                std::string("--allowed-identity=") + kWeb});
  ASSERT_TRUE(Ready(node, socket));

  auto stub = Sds(socket);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  std::unique_ptr<SotwStream> stream = stub->StreamSecrets(&context);
  DiscoveryRequest request = Request({"ROOTCA"});
  ASSERT_TRUE(stream->Write(request));
  const absl::Time asked = absl::Now();
  std::map<std::string, Secret> got = ReadUntil(*stream, request, {"ROOTCA"});
  ASSERT_TRUE(got.contains("ROOTCA"));
  EXPECT_LT(absl::Now() - asked, absl::Seconds(5));
  EXPECT_EQ(got["ROOTCA"].validation_context().trusted_ca().inline_bytes(), ReadAll(root_file));

  // The CA comes up (istiod's names on its certificate, checked by host name): a certificate
  // follows, under the root already served.
  Process ca_process({Bin(), "--serve-ca=127.0.0.1:" + port, "--ca-dir=" + dir_.Sub("ca"),
                      "--ca-tokens-file=" + dir_.Sub("tokens"), "--sds-socket="});
  request = Request({"ROOTCA", kWeb});
  ASSERT_TRUE(stream->Write(request));
  got = ReadUntil(*stream, request, {kWeb});
  ASSERT_TRUE(got.contains(kWeb)) << "no certificate through the upstream CA";
  ExpectCertificateFor(got[kWeb], ReadAll(root_file), kWeb);
  context.TryCancel();
  stream->Finish();
}

// Points 2, 3 and 7: the CA as istio-agent and a stock gRPC client meet istiod. Its
// certificate passes host-name verification for istiod's name and for its IP; it signs the
// RSA 2048/3072/4096 and ECDSA P-256/P-384 CSRs of a workload authenticated by its
// service-account token through TokenReview, for that service account only; static node
// tokens go on working.
TEST_F(UpstreamInteropTest, CaPassesHostNameChecksAndSignsIstioAgentCsrs) {
  // The fake Kubernetes API server, with its own CA, reviewing one workload's token.
  auto api_ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("api-ca"));
  ASSERT_TRUE(api_ca.ok()) << api_ca.status();
  auto api_key = crypto::PrivateKey::GenerateP256();
  auto api_cert =
      (*api_ca)->IssueServerCertificate(*api_key, {"kubernetes.default.svc"}, absl::Hours(1));
  ASSERT_TRUE(api_cert.ok()) << api_cert.status();
  auto api_context = crypto::TlsContext::PlainServer({api_cert->chain_pem, *api_key->ToPem()});
  ASSERT_TRUE(api_context.ok());
  policy::testing::FakeApiServer api(*api_context, "ca-service-account-token");
  api.SetHandler("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                 [](const policy::testing::FakeApiServer::Request& request) {
                   const bool ours = request.authorization == "Bearer ca-service-account-token";
                   const bool web = absl::StrContains(request.body, "\"jwt-of-web\"") &&
                                    absl::StrContains(request.body, "\"istio-ca\"");
                   return policy::testing::FakeApiServer::Response{
                       ours ? 201 : 403,
                       web ? R"({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview",)"
                             R"("status":{"authenticated":true,"user":{"username":)"
                             R"("system:serviceaccount:shop:web","groups":[)"
                             R"("system:serviceaccounts"]},"audiences":["istio-ca"]}})"
                           : R"({"status":{"authenticated":false,"error":"invalid token"}})"};
                 });
  std::ofstream(dir_.Sub("kube-token")) << "ca-service-account-token\n";
  std::ofstream(dir_.Sub("kube-ca.crt")) << (*api_ca)->RootsPem();
  std::ofstream(dir_.Sub("tokens")) << "node-token node-1 " << kApi << "\n";

  const std::string port = std::to_string(FreeLoopbackPort());
  Process ca(
      {Bin(), "--serve-ca=127.0.0.1:" + port, "--ca-dir=" + dir_.Sub("ca"),
       "--ca-tokens-file=" + dir_.Sub("tokens"), "--ca-token-review",
       "--kube-token-file=" + dir_.Sub("kube-token"), "--kube-ca-file=" + dir_.Sub("kube-ca.crt"),
       "--sds-socket="},
      {"KUBERNETES_SERVICE_HOST=127.0.0.1", absl::StrCat("KUBERNETES_SERVICE_PORT=", api.port())});
  ASSERT_TRUE(Ready(ca, dir_.Sub("ca/ca-cert.pem")));
  ASSERT_TRUE(Eventually([&] { return Listening(std::stoi(port)); }, absl::Seconds(10)));
  const std::string roots = ReadAll(dir_.Sub("ca/ca-cert.pem"));
  auto bundle = crypto::TrustBundle::FromPem(roots);
  ASSERT_TRUE(bundle.ok());

  // A stock gRPC TLS client: verifies the chain and the host name of its target.
  auto stub_for = [&](const std::string& target_name) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = roots;
    grpc::ChannelArguments arguments;
    if (!target_name.empty()) arguments.SetSslTargetNameOverride(target_name);
    return IstioCertificateService::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + port, grpc::SslCredentials(ssl), arguments));
  };
  auto create = [&](IstioCertificateService::Stub& stub, const std::string& token,
                    const std::string& csr, IstioCertificateResponse* response) {
    IstioCertificateRequest request;
    request.set_csr(csr);
    request.set_validity_duration(3600);
    (*request.mutable_metadata()->mutable_fields())["ClusterID"].set_string_value("Kubernetes");
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return stub.CreateCertificate(&context, request, response);
  };
  auto expect_issued_for = [&](const IstioCertificateResponse& response,
                               const std::string& identity) {
    ASSERT_GE(response.cert_chain_size(), 2);
    EXPECT_EQ(response.cert_chain(response.cert_chain_size() - 1), roots) << "root goes last";
    auto leaf = crypto::InspectCertificate(response.cert_chain(0));
    ASSERT_TRUE(leaf.ok()) << leaf.status();
    ASSERT_TRUE(leaf->spiffe_id.has_value());
    EXPECT_EQ(leaf->spiffe_id->ToString(), identity);
    EXPECT_TRUE(crypto::VerifySpiffeChain(response.cert_chain(0), *bundle).ok());
  };

  const std::string web_san = absl::StrCat("URI:", kWeb);
  for (const char* name : {"istiod.istio-system.svc", "istio-pilot.istio-system.svc", ""}) {
    SCOPED_TRACE(name);  // "": the IP 127.0.0.1 itself is checked
    auto stub = stub_for(name);
    IstioCertificateResponse response;
    grpc::Status status = create(*stub, "jwt-of-web", OpensslCsr("ec:P-256", web_san), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  {
    auto stub = stub_for("istiod.other.svc");
    IstioCertificateResponse response;
    EXPECT_EQ(create(*stub, "jwt-of-web", OpensslCsr("ec:P-256", web_san), &response).error_code(),
              grpc::StatusCode::UNAVAILABLE)
        << "a name the CA's certificate does not carry fails verification";
  }

  auto stub = stub_for("istiod.istio-system.svc");
  // istio-agent's default key is RSA 2048; the others are what operators set.
  for (const char* key : {"rsa:2048", "rsa:3072", "rsa:4096", "ec:P-384"}) {
    SCOPED_TRACE(key);
    IstioCertificateResponse response;
    grpc::Status status = create(*stub, "jwt-of-web", OpensslCsr(key, web_san), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  {
    // Names istiod would not certify are ignored; the identity is the token's.
    IstioCertificateResponse response;
    grpc::Status status =
        create(*stub, "jwt-of-web",
               OpensslCsr("rsa:2048", web_san + ",DNS:web.shop.svc,IP:10.1.2.3"), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  struct Refusal {
    const char* token;
    const char* key;
    std::string sans;
    grpc::StatusCode code;
  };
  for (const Refusal& refusal : std::vector<Refusal>{
           // A CSR asking for another identity than the token's.
           {"jwt-of-web", "ec:P-256", absl::StrCat("URI:", kVault),
            grpc::StatusCode::PERMISSION_DENIED},
           // A key too weak to sign.
           {"jwt-of-web", "rsa:1024", web_san, grpc::StatusCode::INVALID_ARGUMENT},
           // A token the API server does not authenticate.
           {"jwt-of-nobody", "ec:P-256", web_san, grpc::StatusCode::UNAUTHENTICATED},
           // A node token asking beyond what its line allows.
           {"node-token", "ec:P-256", web_san, grpc::StatusCode::PERMISSION_DENIED}}) {
    SCOPED_TRACE(absl::StrCat(refusal.token, " ", refusal.key, " ", refusal.sans));
    IstioCertificateResponse response;
    EXPECT_EQ(
        create(*stub, refusal.token, OpensslCsr(refusal.key, refusal.sans), &response).error_code(),
        refusal.code);
  }
  {
    // A node token for what it may ask, with an RSA key.
    IstioCertificateResponse response;
    grpc::Status status =
        create(*stub, "node-token", OpensslCsr("rsa:2048", absl::StrCat("URI:", kApi)), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kApi);
  }
}

}  // namespace
}  // namespace nodeward::sds::interop
