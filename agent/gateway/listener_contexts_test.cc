#include "agent/gateway/listener_contexts.h"

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"

namespace nodeward::gateway {
namespace {

using ::testing::HasSubstr;
using State = crypto::TlsEngine::State;

struct Issued {
  std::string chain_pem;
  std::string key_pem;
  std::string roots_pem;
};

constexpr char kCluster[] = R"yaml(
apiVersion: v1
kind: Pod
metadata: {name: gw-1, namespace: istio-ingress, labels: {istio: ingressgateway}}
spec: {serviceAccountName: gateway}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 443}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls-a, protocol: TLS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: "DIR/a.crt", privateKey: "DIR/a.key"}
  - port: {number: 443, name: tls-b, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-cert}
  - port: {number: 8443, name: pass, protocol: TLS}
    hosts: [c.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: mesh, protocol: TLS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [istio-ingress/public]
  tcp: [{route: [{destination: {host: web}}]}]
  tls: [{match: [{sniHosts: [c.example.com]}], route: [{destination: {host: web}}]}]
)yaml";

class ListenerContextsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    for (const char* name : {"first", "second"}) {
      auto ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub(name));
      ASSERT_TRUE(ca.ok()) << ca.status();
      cas_.push_back(*std::move(ca));
    }
    auto mesh = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("mesh"));
    ASSERT_TRUE(mesh.ok());
    mesh_ = *std::move(mesh);
    WriteFiles("a", Issue(*cas_[0], "a.example.com"));
  }

  Issued Issue(const crypto::CertificateAuthority& ca, const std::string& host) {
    auto key = crypto::PrivateKey::GenerateP256();
    EXPECT_TRUE(key.ok());
    auto cert = ca.IssueServerCertificate(*key, {host}, absl::Hours(1));
    EXPECT_TRUE(cert.ok()) << cert.status();
    return {cert->chain_pem, *key->ToPem(), cert->roots_pem};
  }

  void WriteFiles(const std::string& name, const Issued& issued) {
    // Replaced by rename, as a mounted Secret or cert-manager rotates.
    for (const auto& [suffix, text] : std::vector<std::pair<std::string, std::string>>{
             {".crt", issued.chain_pem}, {".key", issued.key_pem}}) {
      const std::string path = dir_.Sub(name + suffix);
      std::ofstream(path + ".tmp", std::ios::trunc) << text;
      ASSERT_EQ(std::rename((path + ".tmp").c_str(), path.c_str()), 0);
    }
  }

  std::shared_ptr<const GatewayConfig> Config(const std::string& secret_yaml) {
    policy::ResourceSet resources;
    const std::string yaml =
        absl::StrCat(absl::StrReplaceAll(kCluster, {{"DIR", dir_.path()}}), secret_yaml);
    absl::Status status = policy::AppendYamlResources(yaml, "gateway.yaml", resources);
    EXPECT_TRUE(status.ok()) << status;
    auto snapshot = policy::Snapshot::Build(std::move(resources), {});
    EXPECT_TRUE(snapshot.ok()) << snapshot.status();
    const policy::Pod* pod = (*snapshot)->FindPod("istio-ingress", "gw-1");
    return GatewayConfig::Resolve(*snapshot, *pod);
  }

  static std::string SecretYaml(const Issued& issued) {
    auto indent = [](const std::string& pem) {
      return absl::StrReplaceAll(pem, {{"\n", "\n    "}});
    };
    return absl::StrCat(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: b-cert, namespace: istio-ingress}\n"
        "type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    ",
        indent(issued.chain_pem), "\n  tls.key: |\n    ", indent(issued.key_pem), "\n");
  }

  // A handshake through the port's current context, by a client trusting only `roots`.
  State Connect(uint32_t port, const std::string& sni, const std::string& roots,
                absl::Time now = absl::Now()) {
    auto context = contexts_.ForPort(port, now);
    if (context == nullptr) return State::kFailed;
    crypto::OriginationSettings settings;
    settings.ca_certificates_pem = roots;
    auto client_context = crypto::TlsContext::OriginationClient(settings);
    EXPECT_TRUE(client_context.ok());
    auto client =
        crypto::TlsEngine::Client(*client_context, {.expected_peer = std::nullopt, .sni = sni});
    auto server = crypto::TlsEngine::Server(context);
    crypto::testing::Pump(*client, *server);
    last_failure_ = crypto::InspectGatewayHandshake(*server).failure;
    return client->state() == State::kEstablished && server->state() == State::kEstablished
               ? State::kEstablished
               : State::kFailed;
  }

  std::optional<ServerCredentialStatus> Find(const std::string& server) {
    for (ServerCredentialStatus& status : contexts_.Status()) {
      if (status.server == server) return std::move(status);
    }
    return std::nullopt;
  }

  crypto::testing::TempDir dir_;
  std::vector<std::unique_ptr<crypto::CertificateAuthority>> cas_;
  std::unique_ptr<crypto::CertificateAuthority> mesh_;
  ListenerContexts contexts_{{.recheck_interval = absl::Seconds(1)}};
  crypto::GatewayHandshakeFailure last_failure_ = crypto::GatewayHandshakeFailure::kNone;
};

constexpr char kServerA[] = "Gateway istio-ingress/public servers[0]";
constexpr char kServerB[] = "Gateway istio-ingress/public servers[1]";

TEST_F(ListenerContextsTest, ServesFileAndSecretCredentialsBySni) {
  const Issued b = Issue(*cas_[1], "b.example.com");
  contexts_.Update(Config(SecretYaml(b)));
  EXPECT_EQ(Connect(443, "a.example.com", cas_[0]->RootsPem()), State::kEstablished);
  EXPECT_EQ(Connect(443, "b.example.com", cas_[1]->RootsPem()), State::kEstablished);
  // The servers' own certificates: each client trusts only its own CA.
  EXPECT_EQ(Connect(443, "b.example.com", cas_[0]->RootsPem()), State::kFailed);

  std::optional<ServerCredentialStatus> a = Find(kServerA);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->state, CredentialState::kServing);
  EXPECT_EQ(a->mode, "SIMPLE");
  EXPECT_EQ(a->sources, (std::vector<std::string>{dir_.Sub("a.crt"), dir_.Sub("a.key")}));
  std::optional<ServerCredentialStatus> secret = Find(kServerB);
  ASSERT_TRUE(secret.has_value());
  EXPECT_EQ(secret->sources,
            std::vector<std::string>{"Secret istio-ingress/b-cert (tls.crt, tls.key)"});
  std::vector<SniCertificate> certificates = contexts_.Certificates();
  ASSERT_EQ(certificates.size(), 2u);
  EXPECT_EQ(certificates[0].sni, "a.example.com");
  EXPECT_THAT(certificates[0].certificate.info.subject, HasSubstr("a.example.com"));
  EXPECT_EQ(certificates[1].sni, "b.example.com");
  EXPECT_GT(certificates[1].certificate.info.not_after, absl::Now());
  // Passthrough ports terminate nothing.
  EXPECT_EQ(contexts_.ForPort(8443), nullptr);
}

TEST_F(ListenerContextsTest, AReplacedFileServesNewConnectionsAfterTheRecheck) {
  contexts_.Update(Config(SecretYaml(Issue(*cas_[1], "b.example.com"))));
  const absl::Time start = absl::Now();
  auto before = contexts_.ForPort(443, start);
  // Rotated to a certificate of another CA: only a client trusting that CA gets through.
  WriteFiles("a", Issue(*cas_[1], "a.example.com"));
  EXPECT_EQ(Connect(443, "a.example.com", cas_[1]->RootsPem(), start), State::kFailed)
      << "looked again before the recheck interval";
  EXPECT_EQ(Connect(443, "a.example.com", cas_[1]->RootsPem(), start + absl::Seconds(2)),
            State::kEstablished);
  EXPECT_NE(contexts_.ForPort(443, start + absl::Seconds(2)), before);
  // A live engine made from the old context keeps it.
  auto live = crypto::TlsEngine::Server(before);
  EXPECT_NE(live, nullptr);
}

TEST_F(ListenerContextsTest, ABrokenFileKeepsTheLastGoodCertificateAndSaysWhy) {
  contexts_.Update(Config(SecretYaml(Issue(*cas_[1], "b.example.com"))));
  const absl::Time start = absl::Now();
  std::ofstream(dir_.Sub("a.key"), std::ios::trunc) << "half-written";
  EXPECT_EQ(Connect(443, "a.example.com", cas_[0]->RootsPem(), start + absl::Seconds(2)),
            State::kEstablished);
  std::optional<ServerCredentialStatus> a = Find(kServerA);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->state, CredentialState::kStale);
  EXPECT_EQ(CredentialStateName(a->state), "stale");
  EXPECT_THAT(a->last_error.message(), HasSubstr(kServerA));
  EXPECT_THAT(a->last_error.message(), HasSubstr("key"));
  // Fixed: served again, from the new files.
  WriteFiles("a", Issue(*cas_[1], "a.example.com"));
  EXPECT_EQ(Connect(443, "a.example.com", cas_[1]->RootsPem(), start + absl::Seconds(4)),
            State::kEstablished);
  EXPECT_EQ(Find(kServerA)->state, CredentialState::kServing);
}

TEST_F(ListenerContextsTest, SecretsFollowTheSnapshotAndABrokenOneKeepsTheLastGood) {
  // Missing at first: that server refuses, the other serves.
  contexts_.Update(Config(""));
  EXPECT_EQ(Connect(443, "b.example.com", cas_[1]->RootsPem()), State::kFailed);
  EXPECT_EQ(last_failure_, crypto::GatewayHandshakeFailure::kNoServerForSni);
  std::optional<ServerCredentialStatus> missing = Find(kServerB);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->state, CredentialState::kUnavailable);
  EXPECT_THAT(missing->last_error.message(), HasSubstr("Secret istio-ingress/b-cert not found"));
  EXPECT_EQ(Connect(443, "a.example.com", cas_[0]->RootsPem()), State::kEstablished);

  const std::string first = SecretYaml(Issue(*cas_[0], "b.example.com"));
  contexts_.Update(Config(first));
  EXPECT_EQ(Connect(443, "b.example.com", cas_[0]->RootsPem()), State::kEstablished);
  const absl::Time built = Find(kServerB)->built;
  // An unchanged Secret in a new snapshot is not built again; a rotated one is.
  contexts_.Update(Config(first));
  EXPECT_EQ(Find(kServerB)->built, built);
  contexts_.Update(Config(SecretYaml(Issue(*cas_[1], "b.example.com"))));
  EXPECT_NE(Find(kServerB)->built, built);
  EXPECT_EQ(Connect(443, "b.example.com", cas_[1]->RootsPem()), State::kEstablished);

  // A key that is not the certificate's: the rotated certificate keeps serving.
  Issued broken = Issue(*cas_[0], "b.example.com");
  broken.key_pem = Issue(*cas_[0], "other.example.com").key_pem;
  contexts_.Update(Config(SecretYaml(broken)));
  EXPECT_EQ(Connect(443, "b.example.com", cas_[1]->RootsPem()), State::kEstablished);
  std::optional<ServerCredentialStatus> stale = Find(kServerB);
  EXPECT_EQ(stale->state, CredentialState::kStale);
  EXPECT_THAT(stale->last_error.message(), HasSubstr("private key does not match the certificate"));
}

TEST_F(ListenerContextsTest, MutualSecretsBringTheClientCaAndTheirCrl) {
  const Issued server = Issue(*cas_[0], "bank.example.com");
  const Issued client = Issue(*cas_[1], "client.example.com");
  absl::StatusOr<crypto::CertificateInfo> info = crypto::InspectCertificate(client.chain_pem);
  ASSERT_TRUE(info.ok());
  absl::StatusOr<std::string> crl =
      cas_[1]->IssueRevocationList({info->serial_hex}, absl::Hours(1));
  ASSERT_TRUE(crl.ok());
  auto indent = [](const std::string& pem) { return absl::StrReplaceAll(pem, {{"\n", "\n    "}}); };
  const std::string yaml =
      absl::StrCat(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bank, namespace: istio-ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [bank.example.com]
    tls: {mode: MUTUAL, credentialName: bank}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bank, namespace: istio-ingress}
spec:
  hosts: [bank.example.com]
  gateways: [bank]
  tcp: [{route: [{destination: {host: web.shop.svc.cluster.local}}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: bank, namespace: istio-ingress}
stringData:
  tls.crt: |
    )yaml",
                   indent(server.chain_pem), "\n  tls.key: |\n    ", indent(server.key_pem),
                   "\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: bank-cacert, namespace: "
                   "istio-ingress}\n"
                   "stringData:\n  cacert: |\n    ",
                   indent(client.roots_pem), "\n  ca.crl: |\n    ", indent(*crl), "\n");
  contexts_.Update(Config(yaml));
  std::optional<ServerCredentialStatus> bank = Find("Gateway istio-ingress/bank servers[0]");
  ASSERT_TRUE(bank.has_value());
  EXPECT_EQ(bank->state, CredentialState::kServing) << bank->last_error;
  EXPECT_EQ(bank->sources,
            (std::vector<std::string>{"Secret istio-ingress/bank (tls.crt, tls.key)",
                                      "Secret istio-ingress/bank-cacert (cacert, ca.crl)"}));

  crypto::OriginationSettings settings;
  settings.mode = crypto::OriginationSettings::Mode::kMutual;
  settings.ca_certificates_pem = cas_[0]->RootsPem();
  settings.client_credentials = crypto::TlsCredentials{client.chain_pem, client.key_pem};
  auto client_context = crypto::TlsContext::OriginationClient(settings);
  ASSERT_TRUE(client_context.ok());
  auto engine = crypto::TlsEngine::Client(
      *client_context, {.expected_peer = std::nullopt, .sni = "bank.example.com"});
  auto server_engine = crypto::TlsEngine::Server(contexts_.ForPort(9443));
  crypto::testing::Pump(*engine, *server_engine);
  EXPECT_EQ(server_engine->state(), State::kFailed);
  EXPECT_EQ(crypto::InspectGatewayHandshake(*server_engine).failure,
            crypto::GatewayHandshakeFailure::kClientCertificateUntrusted);
  EXPECT_THAT(server_engine->error().message(), HasSubstr("revoked"));
}

TEST_F(ListenerContextsTest, IstioMutualWaitsForTheMeshCertificate) {
  contexts_.Update(Config(""));
  EXPECT_EQ(contexts_.ForPort(15443), nullptr);
  std::optional<ServerCredentialStatus> mesh = Find("Gateway istio-ingress/public servers[3]");
  ASSERT_TRUE(mesh.has_value());
  EXPECT_EQ(mesh->state, CredentialState::kUnavailable);
  EXPECT_THAT(mesh->last_error.message(), HasSubstr("has not arrived from SDS yet"));
  EXPECT_THAT(mesh->sources[0], HasSubstr("spiffe://cluster.local/ns/istio-ingress/sa/gateway"));

  auto svid = crypto::testing::IssueWorkload(
      *mesh_, crypto::testing::Id("cluster.local", "istio-ingress", "gateway"));
  ASSERT_TRUE(svid.ok()) << svid.status();
  contexts_.SetMeshCredentials(svid->credentials(), svid->cert.roots_pem);
  EXPECT_NE(contexts_.ForPort(15443), nullptr);
  EXPECT_EQ(Find("Gateway istio-ingress/public servers[3]")->state, CredentialState::kServing);
}

}  // namespace
}  // namespace nodeward::gateway
