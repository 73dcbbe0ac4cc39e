// The mesh server facing client certificates an attacker would craft, each made by the openssl
// command (as an attacker would) under a root the server trusts, or one that only looks like
// it: every one must be refused at the handshake, and a well-formed one accepted, so the
// crafting itself is checked. They are presented through an origination client, which sends
// any certificate it is given.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::crypto {
namespace {

using ::nodeward::crypto::testing::Pump;
using ::nodeward::crypto::testing::TempDir;
using ::testing::HasSubstr;

constexpr char kClientId[] = "spiffe://cluster.local/ns/shop/sa/frontend";
constexpr char kServerId[] = "spiffe://cluster.local/ns/shop/sa/backend";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Crafted {
  std::string name;  // files name.crt and name.key in the test's directory
  std::string cert_pem;
  std::string key_pem;
};

struct Shape {
  std::string name;
  std::string common_name;  // empty: `name`
  bool is_ca = false;
  std::vector<std::string> sans;                             // "URI:..." or "DNS:..."
  std::string extended_key_usage = "serverAuth,clientAuth";  // empty: none
};

// `shape` certified by `issuer` (null: self-signed), valid for a day.
std::optional<Crafted> Make(const TempDir& dir, const Shape& shape, const Crafted* issuer) {
  const std::string base = dir.Sub(shape.name);
  std::ofstream ext(base + ".ext");
  ext << "basicConstraints=critical," << (shape.is_ca ? "CA:TRUE" : "CA:FALSE") << "\n"
      << "keyUsage=critical," << (shape.is_ca ? "keyCertSign,cRLSign" : "digitalSignature")
      << "\nsubjectKeyIdentifier=hash\n";
  if (!shape.extended_key_usage.empty())
    ext << "extendedKeyUsage=" << shape.extended_key_usage << "\n";
  if (!shape.sans.empty()) ext << "subjectAltName=" << absl::StrJoin(shape.sans, ",") << "\n";
  ext.close();
  static int serial = 1000;
  const std::string quiet = " > /dev/null 2>&1";
  std::string command = absl::StrCat(
      "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '", base,
      ".key' -out '", base, ".csr' -subj '/O=cluster.local/CN=",
      shape.common_name.empty() ? shape.name : shape.common_name, "'", quiet,
      " && openssl x509 -req -in '", base, ".csr' -days 1 -set_serial ", ++serial, " -extfile '",
      base, ".ext' -out '", base, ".crt' ",
      issuer == nullptr ? absl::StrCat("-signkey '", base, ".key'")
                        : absl::StrCat("-CA '", dir.Sub(issuer->name), ".crt' -CAkey '",
                                       dir.Sub(issuer->name), ".key'"),
      quiet);
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << "openssl failed: " << command;
    return std::nullopt;
  }
  return Crafted{shape.name, ReadAll(base + ".crt"), ReadAll(base + ".key")};
}

class PeerCertificateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    std::optional<Crafted> root =
        Make(dir_, {.name = "root", .common_name = "mesh root", .is_ca = true}, nullptr);
    ASSERT_TRUE(root.has_value());
    root_ = *root;
    std::optional<Crafted> server =
        Make(dir_, {.name = "backend", .sans = {absl::StrCat("URI:", kServerId)}}, &root_);
    ASSERT_TRUE(server.has_value());
    auto bundle = TrustBundle::FromPem(root_.cert_pem);
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    auto context = TlsContext::MeshServer({server->cert_pem, server->key_pem}, *bundle);
    ASSERT_TRUE(context.ok()) << context.status();
    server_context_ = *context;
  }

  // The mesh server's verdict on a client presenting `chain` (leaf first) with `key_pem`.
  absl::Status Present(const std::string& chain, const std::string& key_pem) {
    OriginationSettings settings;
    settings.mode = OriginationSettings::Mode::kMutual;
    settings.insecure_skip_verify = true;  // the client side is not what is tested
    settings.client_credentials = TlsCredentials{chain, key_pem};
    settings.alpn = {"h2"};
    auto client_context = TlsContext::OriginationClient(settings);
    if (!client_context.ok()) return client_context.status();
    auto client = TlsEngine::Client(*client_context);
    auto server = TlsEngine::Server(server_context_);
    Pump(*client, *server);
    absl::Status verdict = server->Advance();
    if (verdict.ok() && server->state() != TlsEngine::State::kEstablished) {
      return absl::UnknownError("handshake did not finish");
    }
    return verdict;
  }
  absl::Status Present(const Crafted& client) { return Present(client.cert_pem, client.key_pem); }

  // A client certificate of `shape`'s kind issued by the trusted root.
  Crafted Client(Shape shape) {
    std::optional<Crafted> made = Make(dir_, shape, &root_);
    EXPECT_TRUE(made.has_value());
    return made.value_or(Crafted{});
  }

  TempDir dir_;
  Crafted root_;
  std::shared_ptr<const TlsContext> server_context_;
};

TEST_F(PeerCertificateTest, AWellFormedClientIsAccepted) {
  absl::Status verdict =
      Present(Client({.name = "frontend", .sans = {absl::StrCat("URI:", kClientId)}}));
  EXPECT_TRUE(verdict.ok()) << verdict;
}

TEST_F(PeerCertificateTest, AServerOnlyCertificateIsRefused) {
  absl::Status verdict = Present(Client({.name = "frontend",
                                         .sans = {absl::StrCat("URI:", kClientId)},
                                         .extended_key_usage = "serverAuth"}));
  EXPECT_EQ(verdict.code(), absl::StatusCode::kUnauthenticated) << verdict;
  EXPECT_THAT(std::string(verdict.message()), HasSubstr("unsupported certificate purpose"));
}

TEST_F(PeerCertificateTest, ACertificateSignedByALeafIsRefused) {
  Crafted leaf = Client({.name = "frontend", .sans = {absl::StrCat("URI:", kClientId)}});
  std::optional<Crafted> forged =
      Make(dir_, {.name = "admin", .sans = {"URI:spiffe://cluster.local/ns/shop/sa/admin"}}, &leaf);
  ASSERT_TRUE(forged.has_value());
  absl::Status verdict = Present(forged->cert_pem + leaf.cert_pem, forged->key_pem);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kUnauthenticated) << verdict;
  EXPECT_THAT(std::string(verdict.message()), HasSubstr("does not chain to a trusted root"));
}

TEST_F(PeerCertificateTest, ACertificateWithoutASpiffeIdIsRefused) {
  absl::Status dns_only = Present(Client({.name = "frontend", .sans = {"DNS:frontend.shop.svc"}}));
  EXPECT_THAT(std::string(dns_only.message()), HasSubstr("no URI SAN")) << dns_only;
  absl::Status bare = Present(Client({.name = "bare"}));
  EXPECT_THAT(std::string(bare.message()), HasSubstr("no URI SAN")) << bare;
}

TEST_F(PeerCertificateTest, ACertificateWithTwoSpiffeIdsIsRefused) {
  absl::Status verdict = Present(Client(
      {.name = "frontend",
       .sans = {absl::StrCat("URI:", kClientId), "URI:spiffe://cluster.local/ns/shop/sa/admin"}}));
  EXPECT_THAT(std::string(verdict.message()), HasSubstr("2 URI SANs")) << verdict;
}

TEST_F(PeerCertificateTest, ARootOnlyNamedLikeTheTrustedOneIsRefused) {
  std::optional<Crafted> impostor =
      Make(dir_, {.name = "impostor", .common_name = "mesh root", .is_ca = true}, nullptr);
  ASSERT_TRUE(impostor.has_value());
  std::optional<Crafted> client =
      Make(dir_, {.name = "frontend", .sans = {absl::StrCat("URI:", kClientId)}}, &*impostor);
  ASSERT_TRUE(client.has_value());
  absl::Status verdict = Present(client->cert_pem + impostor->cert_pem, client->key_pem);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kUnauthenticated) << verdict;
  EXPECT_THAT(std::string(verdict.message()), HasSubstr("does not chain to a trusted root"));
}

}  // namespace
}  // namespace nodeward::crypto
