#include "crypto/gateway_tls.h"

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::crypto {
namespace {

using ::nodeward::crypto::testing::Id;
using ::nodeward::crypto::testing::IssueWorkload;
using ::nodeward::crypto::testing::Pump;
using ::nodeward::crypto::testing::TempDir;
using ::nodeward::crypto::testing::Transfer;
using ::testing::Contains;
using ::testing::HasSubstr;
using ClientAuth = GatewayServerSettings::ClientAuth;
using Failure = GatewayHandshakeFailure;
using State = TlsEngine::State;

// ClientHellos of openssl s_client, captured once.
std::vector<std::uint8_t> ReadTestData(const std::string& name) {
  std::ifstream in(std::string(NODEWARD_CRYPTO_TESTDATA) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in),
                                   std::istreambuf_iterator<char>());
}

// Runs both ends until no more bytes move, then has each read once so that a verdict sent
// after a TLS 1.3 client finished reaches it.
void Handshake(TlsEngine& client, TlsEngine& server) {
  Pump(client, server);
  std::uint8_t scratch[16];
  (void)server.ReadPlaintext(scratch);
  (void)Transfer(server, client);
  (void)client.ReadPlaintext(scratch);
  (void)Transfer(client, server);
  (void)server.ReadPlaintext(scratch);
}

struct Issued {
  std::string chain_pem;
  std::string key_pem;
  std::string roots_pem;
  TlsCredentials credentials() const { return {chain_pem, key_pem}; }
};

class GatewayTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    for (const char* name : {"servers", "clients", "strangers"}) {
      auto ca = CertificateAuthority::LoadOrCreate(dir_.Sub(name));
      ASSERT_TRUE(ca.ok()) << ca.status();
      cas_.push_back(*std::move(ca));
    }
    a_ = Issue(*cas_[0], {"a.example.com"});
    b_ = Issue(*cas_[0], {"b.example.com"});
    client_ = Issue(*cas_[1], {"client.example.com"});
    stranger_ = Issue(*cas_[2], {"client.example.com"});
  }

  Issued Issue(const CertificateAuthority& ca, const std::vector<std::string>& names) {
    auto key = PrivateKey::GenerateP256();
    EXPECT_TRUE(key.ok());
    auto cert = ca.IssueServerCertificate(*key, names, absl::Hours(1));
    EXPECT_TRUE(cert.ok()) << cert.status();
    return {cert->chain_pem, *key->ToPem(), cert->roots_pem};
  }

  GatewayServerSettings Server(const Issued& issued, const std::string& name,
                               ClientAuth auth = ClientAuth::kNone) {
    GatewayServerSettings settings;
    settings.name = name;
    settings.credentials = issued.credentials();
    settings.client_auth = auth;
    if (auth == ClientAuth::kRequired || auth == ClientAuth::kOptional) {
      settings.client_ca_pem = client_.roots_pem;
    }
    return settings;
  }

  // A listener of these servers, serving server i for the i-th SNI of `snis` ("" for none).
  std::shared_ptr<const TlsContext> Listener(const std::vector<GatewayServerSettings>& settings,
                                             std::vector<std::string> snis) {
    std::vector<std::shared_ptr<const GatewayServerContext>> servers;
    for (const GatewayServerSettings& one : settings) {
      auto server = GatewayServerContext::Create(one);
      EXPECT_TRUE(server.ok()) << server.status();
      if (!server.ok()) return nullptr;
      servers.push_back(*server);
    }
    auto context = MakeGatewayListenerContext(
        std::move(servers),
        [snis =
             std::move(snis)](std::optional<absl::string_view> sni) -> std::optional<std::size_t> {
          for (std::size_t i = 0; i < snis.size(); ++i) {
            if (snis[i] == sni.value_or("")) return i;
          }
          return std::nullopt;
        });
    EXPECT_TRUE(context.ok()) << context.status();
    return context.ok() ? *context : nullptr;
  }

  std::unique_ptr<TlsEngine> Client(const std::string& sni,
                                    std::optional<TlsCredentials> credentials = std::nullopt,
                                    std::vector<std::string> subject_alt_names = {},
                                    const std::string& roots = "") {
    OriginationSettings settings;
    settings.ca_certificates_pem = roots.empty() ? a_.roots_pem : roots;
    settings.subject_alt_names = std::move(subject_alt_names);
    if (credentials.has_value()) {
      settings.mode = OriginationSettings::Mode::kMutual;
      settings.client_credentials = std::move(credentials);
    }
    auto context = TlsContext::OriginationClient(settings);
    EXPECT_TRUE(context.ok()) << context.status();
    return TlsEngine::Client(*context, {.expected_peer = std::nullopt, .sni = sni});
  }

  struct Result {
    State client;
    State server;
    absl::Status server_error;
    GatewayHandshake handshake;
  };
  Result Connect(const std::shared_ptr<const TlsContext>& listener, TlsEngine& client) {
    auto server = TlsEngine::Server(listener);
    Handshake(client, *server);
    return {client.state(), server->state(), server->error(), InspectGatewayHandshake(*server)};
  }

  TempDir dir_;
  std::vector<std::unique_ptr<CertificateAuthority>> cas_;
  Issued a_, b_, client_, stranger_;
};

TEST_F(GatewayTlsTest, TwoHostsOnOnePortAreServedBySniWithTheirOwnCertificates) {
  auto listener = Listener({Server(a_, "a"), Server(b_, "b")}, {"a.example.com", "b.example.com"});
  ASSERT_NE(listener, nullptr);
  for (std::size_t i : {0u, 1u}) {
    const std::string sni = i == 0 ? "a.example.com" : "b.example.com";
    // The client checks the certificate names its SNI, so only the right one passes.
    auto client = Client(sni);
    Result result = Connect(listener, *client);
    EXPECT_EQ(result.client, State::kEstablished) << client->error();
    EXPECT_EQ(result.server, State::kEstablished) << result.server_error;
    EXPECT_EQ(result.handshake.server, i);
    EXPECT_EQ(result.handshake.sni, sni);
    EXPECT_EQ(result.handshake.failure, Failure::kNone);
    EXPECT_EQ(result.handshake.version, "TLSv1.3");
  }
}

TEST_F(GatewayTlsTest, AnUnknownSniIsRefusedAtTheHandshake) {
  auto listener = Listener({Server(a_, "a")}, {"a.example.com"});
  auto client = Client("c.example.com");
  Result result = Connect(listener, *client);
  EXPECT_EQ(result.client, State::kFailed);
  EXPECT_EQ(result.server, State::kFailed);
  EXPECT_EQ(result.handshake.failure, Failure::kNoServerForSni);
  EXPECT_EQ(GatewayHandshakeFailureName(result.handshake.failure), "no_server_for_sni");
  EXPECT_EQ(result.server_error.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(result.server_error.message(), HasSubstr("SNI c.example.com"));
  EXPECT_FALSE(result.handshake.server.has_value());
}

TEST_F(GatewayTlsTest, ClientsWithoutSniGetTheCatchAllServerOrARefusal) {
  auto catch_all = Listener({Server(a_, "a")}, {""});
  auto client = Client("", std::nullopt, {"a.example.com"});
  EXPECT_EQ(Connect(catch_all, *client).server, State::kEstablished);
  auto named_only = Listener({Server(a_, "a")}, {"a.example.com"});
  auto refused = Client("", std::nullopt, {"a.example.com"});
  Result result = Connect(named_only, *refused);
  EXPECT_EQ(result.handshake.failure, Failure::kNoServerForSni);
  EXPECT_THAT(result.server_error.message(), HasSubstr("clients without SNI"));
}

TEST_F(GatewayTlsTest, MutualRefusesClientsWithoutACertificateOrWithAnotherCa) {
  auto listener = Listener({Server(a_, "bank", ClientAuth::kRequired)}, {"a.example.com"});
  auto anonymous = Client("a.example.com");
  Result none = Connect(listener, *anonymous);
  EXPECT_EQ(none.server, State::kFailed);
  EXPECT_EQ(none.handshake.failure, Failure::kClientCertificateRequired) << none.server_error;
  EXPECT_EQ(none.client, State::kFailed);

  auto foreign = Client("a.example.com", stranger_.credentials());
  Result untrusted = Connect(listener, *foreign);
  EXPECT_EQ(untrusted.server, State::kFailed);
  EXPECT_EQ(untrusted.handshake.failure, Failure::kClientCertificateUntrusted);
  EXPECT_THAT(untrusted.server_error.message(), HasSubstr("unknown CA"));
  EXPECT_EQ(untrusted.client, State::kFailed);

  auto good = Client("a.example.com", client_.credentials());
  Result served = Connect(listener, *good);
  EXPECT_EQ(served.server, State::kEstablished) << served.server_error;
  EXPECT_EQ(served.client, State::kEstablished) << good->error();
  ASSERT_TRUE(served.handshake.client_certificate.has_value());
  EXPECT_THAT(served.handshake.client_certificate->subject_alt_names,
              Contains("DNS:client.example.com"));
}

TEST_F(GatewayTlsTest, ARevokedClientCertificateIsRefused) {
  absl::StatusOr<CertificateInfo> info = InspectCertificate(client_.chain_pem);
  ASSERT_TRUE(info.ok());
  absl::StatusOr<std::string> revoking =
      cas_[1]->IssueRevocationList({info->serial_hex}, absl::Hours(1));
  absl::StatusOr<std::string> clean = cas_[1]->IssueRevocationList({}, absl::Hours(1));
  ASSERT_TRUE(revoking.ok() && clean.ok());
  GatewayServerSettings settings = Server(a_, "crl", ClientAuth::kRequired);
  settings.client_crl_pem = *revoking;
  auto revoked = Client("a.example.com", client_.credentials());
  Result refused = Connect(Listener({settings}, {"a.example.com"}), *revoked);
  EXPECT_EQ(refused.handshake.failure, Failure::kClientCertificateUntrusted);
  EXPECT_THAT(refused.server_error.message(), HasSubstr("revoked"));
  settings.client_crl_pem = *clean;
  auto accepted = Client("a.example.com", client_.credentials());
  EXPECT_EQ(Connect(Listener({settings}, {"a.example.com"}), *accepted).server,
            State::kEstablished);
  settings.client_crl_pem = "not a CRL";
  EXPECT_THAT(GatewayServerContext::Create(settings).status().message(), HasSubstr("crl: caCrl"));
}

TEST_F(GatewayTlsTest, OptionalMutualServesWithoutACertificateButVerifiesOneGiven) {
  auto listener = Listener({Server(a_, "opt", ClientAuth::kOptional)}, {"a.example.com"});
  auto anonymous = Client("a.example.com");
  Result none = Connect(listener, *anonymous);
  EXPECT_EQ(none.server, State::kEstablished) << none.server_error;
  EXPECT_FALSE(none.handshake.client_certificate.has_value());
  auto foreign = Client("a.example.com", stranger_.credentials());
  EXPECT_EQ(Connect(listener, *foreign).handshake.failure, Failure::kClientCertificateUntrusted);
}

TEST_F(GatewayTlsTest, SubjectAltNamesOfTheClientAreChecked) {
  GatewayServerSettings mismatch = Server(a_, "bank", ClientAuth::kRequired);
  mismatch.subject_alt_names = {"other.example.com", "spiffe://x/ns/y/sa/z"};
  auto refused = Client("a.example.com", client_.credentials());
  Result result = Connect(Listener({mismatch}, {"a.example.com"}), *refused);
  EXPECT_EQ(result.handshake.failure, Failure::kSubjectAltNameMismatch);
  EXPECT_THAT(result.server_error.message(),
              HasSubstr("SANs [DNS:client.example.com] match none of subjectAltNames"));

  GatewayServerSettings match = Server(a_, "bank", ClientAuth::kRequired);
  match.subject_alt_names = {"nope.example.com", "client.example.com"};
  auto accepted = Client("a.example.com", client_.credentials());
  EXPECT_EQ(Connect(Listener({match}, {"a.example.com"}), *accepted).server, State::kEstablished);
}

TEST_F(GatewayTlsTest, CertificatePinsAcceptAMatchInEitherList) {
  absl::StatusOr<CertificatePins> pins = ComputeCertificatePins(client_.chain_pem);
  ASSERT_TRUE(pins.ok()) << pins.status();
  absl::StatusOr<CertificateInfo> info = InspectCertificate(client_.chain_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(pins->sha256_hex, info->sha256_fingerprint_hex);
  EXPECT_EQ(pins->spki_sha256_base64.size(), 44u);

  // Envoy's colon-separated, upper-case form of the hash.
  std::string colons;
  for (std::size_t i = 0; i < pins->sha256_hex.size(); i += 2) {
    absl::StrAppend(&colons, i == 0 ? "" : ":",
                    absl::AsciiStrToUpper(pins->sha256_hex.substr(i, 2)));
  }
  const std::string other_hash(64, 'a');
  const std::string other_spki = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  struct Case {
    std::vector<std::string> spki;
    std::vector<std::string> hash;
    bool accepted;
  };
  for (const Case& c : std::vector<Case>{
           {{}, {colons}, true},
           {{pins->spki_sha256_base64}, {}, true},
           {{other_spki}, {colons}, true},
           {{pins->spki_sha256_base64}, {other_hash}, true},
           {{other_spki}, {other_hash}, false},
           {{}, {other_hash}, false},
       }) {
    GatewayServerSettings settings = Server(a_, "pinned", ClientAuth::kRequired);
    settings.verify_certificate_spki = c.spki;
    settings.verify_certificate_hash = c.hash;
    auto client = Client("a.example.com", client_.credentials());
    Result result = Connect(Listener({settings}, {"a.example.com"}), *client);
    EXPECT_EQ(result.server == State::kEstablished, c.accepted)
        << absl::StrJoin(c.spki, ",") << " / " << absl::StrJoin(c.hash, ",") << ": "
        << result.server_error;
    if (!c.accepted) {
      EXPECT_EQ(result.handshake.failure, Failure::kCertificatePinMismatch);
    }
  }
}

TEST_F(GatewayTlsTest, ProtocolVersionLimitsAreHonoured) {
  GatewayServerSettings tls12 = Server(a_, "old");
  tls12.max_version = TlsVersion::kTls1_2;
  auto client = Client("a.example.com");
  Result result = Connect(Listener({tls12}, {"a.example.com"}), *client);
  EXPECT_EQ(result.server, State::kEstablished) << result.server_error;
  EXPECT_EQ(result.handshake.version, "TLSv1.2");

  // A client that speaks at most TLS 1.2 (openssl s_client -tls1_2) against a TLS 1.3 floor.
  GatewayServerSettings tls13 = Server(a_, "new");
  tls13.min_version = TlsVersion::kTls1_3;
  auto server = TlsEngine::Server(Listener({tls13}, {"legacy.example.com"}));
  const std::vector<std::uint8_t> hello = ReadTestData("openssl_tls12_only.bin");
  ASSERT_EQ(server->FeedWire(hello), hello.size());
  EXPECT_FALSE(server->Advance().ok());
  GatewayHandshake handshake = InspectGatewayHandshake(*server);
  EXPECT_EQ(handshake.server, 0u);
  EXPECT_EQ(handshake.failure, Failure::kProtocolVersion);

  GatewayServerSettings backwards = Server(a_, "backwards");
  backwards.min_version = TlsVersion::kTls1_3;
  backwards.max_version = TlsVersion::kTls1_2;
  EXPECT_THAT(GatewayServerContext::Create(backwards).status().message(),
              HasSubstr("backwards: minProtocolVersion is above maxProtocolVersion"));
}

TEST_F(GatewayTlsTest, CipherSuitesRestrictTls12AndUnknownNamesFailTheServer) {
  GatewayServerSettings settings = Server(a_, "ciphers");
  settings.max_version = TlsVersion::kTls1_2;
  settings.cipher_suites = {"TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"};
  auto client = Client("a.example.com");
  Result result = Connect(Listener({settings}, {"a.example.com"}), *client);
  ASSERT_EQ(result.server, State::kEstablished) << result.server_error;
  EXPECT_EQ(result.handshake.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384");

  // openssl s_client -tls1_2 -cipher AES128-SHA offers nothing Istio's defaults allow.
  auto server = TlsEngine::Server(Listener({Server(a_, "defaults")}, {"legacy.example.com"}));
  const std::vector<std::uint8_t> hello = ReadTestData("openssl_tls12_aes128_sha.bin");
  server->FeedWire(hello);
  EXPECT_FALSE(server->Advance().ok());
  EXPECT_EQ(InspectGatewayHandshake(*server).failure, Failure::kNoSharedCipher);

  settings.cipher_suites = {"ECDHE-ECDSA-AES256-GCM-SHA384", "NOT-A-CIPHER", "RC4-MD5-ISH"};
  EXPECT_THAT(GatewayServerContext::Create(settings).status().message(),
              HasSubstr("ciphers: cipherSuites: NOT-A-CIPHER, RC4-MD5-ISH are not a cipher suite "
                        "BoringSSL knows"));
}

TEST_F(GatewayTlsTest, IstioMutualAcceptsOnlyMeshIdentities) {
  auto mesh = CertificateAuthority::LoadOrCreate(dir_.Sub("mesh"));
  ASSERT_TRUE(mesh.ok());
  auto gateway = IssueWorkload(**mesh, Id("cluster.local", "istio-ingress", "gateway"));
  auto workload = IssueWorkload(**mesh, Id("cluster.local", "shop", "web"));
  ASSERT_TRUE(gateway.ok() && workload.ok());
  GatewayServerSettings settings;
  settings.name = "mesh";
  settings.client_auth = ClientAuth::kMesh;
  settings.credentials = gateway->credentials();
  settings.client_ca_pem = gateway->cert.roots_pem;
  auto listener = Listener({settings}, {"gw.example.com"});
  const std::vector<std::string> gateway_id = {
      "spiffe://cluster.local/ns/istio-ingress/sa/gateway"};

  auto member =
      Client("gw.example.com", workload->credentials(), gateway_id, gateway->cert.roots_pem);
  Result accepted = Connect(listener, *member);
  EXPECT_EQ(accepted.server, State::kEstablished) << accepted.server_error;
  ASSERT_TRUE(accepted.handshake.client_identity.has_value());
  EXPECT_EQ(accepted.handshake.client_identity->ToString(),
            "spiffe://cluster.local/ns/shop/sa/web");

  // Signed by the mesh's CA but without a SPIFFE ID: not a workload.
  Issued plain = Issue(**mesh, {"someone.example.com"});
  auto impostor =
      Client("gw.example.com", plain.credentials(), gateway_id, gateway->cert.roots_pem);
  EXPECT_EQ(Connect(listener, *impostor).handshake.failure, Failure::kNotMeshIdentity);
  auto outsider =
      Client("gw.example.com", client_.credentials(), gateway_id, gateway->cert.roots_pem);
  EXPECT_EQ(Connect(listener, *outsider).handshake.failure, Failure::kClientCertificateUntrusted);

  settings.credentials = a_.credentials();
  EXPECT_THAT(GatewayServerContext::Create(settings).status().message(),
              HasSubstr("ISTIO_MUTUAL needs the gateway's mesh certificate"));
}

TEST_F(GatewayTlsTest, BrokenServerSettingsNameTheServerAndTheSetting) {
  GatewayServerSettings mismatched = Server(a_, "Gateway gw/x servers[0]");
  mismatched.credentials.private_key_pem = b_.key_pem;
  EXPECT_THAT(GatewayServerContext::Create(mismatched).status().message(),
              HasSubstr("Gateway gw/x servers[0]: private key does not match the certificate"));
  GatewayServerSettings garbage = Server(a_, "g");
  garbage.credentials.cert_chain_pem = "not a certificate";
  EXPECT_THAT(GatewayServerContext::Create(garbage).status().message(),
              HasSubstr("g: certificate chain"));
  GatewayServerSettings no_ca = Server(a_, "m", ClientAuth::kRequired);
  no_ca.client_ca_pem.clear();
  EXPECT_THAT(GatewayServerContext::Create(no_ca).status().message(),
              HasSubstr("m: verifying client certificates needs caCertificates"));
  GatewayServerSettings bad_pin = Server(a_, "p", ClientAuth::kRequired);
  bad_pin.verify_certificate_hash = {"zz"};
  EXPECT_THAT(GatewayServerContext::Create(bad_pin).status().message(),
              HasSubstr("p: verifyCertificateHash: \"zz\" is not a hex SHA-256 digest"));
  EXPECT_FALSE(MakeGatewayListenerContext({}, [](auto) { return std::nullopt; }).ok());
}

TEST_F(GatewayTlsTest, TheServedCertificateIsDescribed) {
  auto server = GatewayServerContext::Create(Server(a_, "a"));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->name(), "a");
  EXPECT_THAT((*server)->certificate().info.subject, HasSubstr("a.example.com"));
  EXPECT_THAT((*server)->certificate().subject_alt_names, Contains("DNS:a.example.com"));
  EXPECT_GT((*server)->certificate().info.not_after, absl::Now());
}

}  // namespace
}  // namespace nodeward::crypto
