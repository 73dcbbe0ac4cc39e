#include "crypto/certificate_authority.h"

#include <sys/stat.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "crypto/certificate.h"
#include "crypto/keys.h"
#include "crypto/test_csrs.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::crypto {
namespace {

using ::nodeward::crypto::testing::Id;
using ::nodeward::crypto::testing::IssueWorkload;
using ::nodeward::crypto::testing::TempDir;
using ::testing::HasSubstr;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

SignRequest RequestFor(const std::string& csr, absl::Duration lifetime = absl::Hours(24)) {
  SignRequest request;
  request.csr_pem = csr;
  request.lifetime = lifetime;
  return request;
}

std::string CsrFor(const SpiffeId& id) { return *MakeCsr(*PrivateKey::GenerateP256(), id); }

TEST(CertificateAuthorityTest, CreatesRootAndReloadsIt) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string ca_dir = dir.Sub("ca");
  absl::StatusOr<std::unique_ptr<CertificateAuthority>> ca =
      CertificateAuthority::LoadOrCreate(ca_dir);
  ASSERT_TRUE(ca.ok()) << ca.status();
  const CertificateInfo root = (*ca)->SigningCertificate();
  EXPECT_TRUE(root.is_ca);
  EXPECT_EQ(root.subject, "O=cluster.local");
  EXPECT_EQ(root.subject, root.issuer);
  EXPECT_FALSE(root.spiffe_id.has_value());
  EXPECT_GT(root.not_after - absl::Now(), absl::Hours(24 * 365 * 9));
  EXPECT_EQ((*ca)->trust_domain(), "cluster.local");

  struct stat key_stat;
  ASSERT_EQ(::stat((ca_dir + "/ca-key.pem").c_str(), &key_stat), 0);
  EXPECT_EQ(key_stat.st_mode & 07777, 0600);
  struct stat dir_stat;
  ASSERT_EQ(::stat(ca_dir.c_str(), &dir_stat), 0);
  EXPECT_EQ(dir_stat.st_mode & 077, 0);

  absl::StatusOr<std::unique_ptr<CertificateAuthority>> again =
      CertificateAuthority::LoadOrCreate(ca_dir);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->RootsPem(), (*ca)->RootsPem());
  EXPECT_EQ((*again)->SigningCertificate().sha256_fingerprint_hex, root.sha256_fingerprint_hex);

  // A leaf from the reloaded CA verifies against the original root.
  absl::StatusOr<testing::Workload> leaf = IssueWorkload(**again, Id("cluster.local", "a", "b"));
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  absl::StatusOr<TrustBundle> bundle = TrustBundle::FromPem((*ca)->RootsPem());
  ASSERT_TRUE(bundle.ok());
  EXPECT_TRUE(VerifySpiffeChain(leaf->cert.chain_pem, *bundle).ok());
}

TEST(CertificateAuthorityTest, RootCarriesTheTrustDomain) {
  TempDir dir;
  CaOptions options;
  options.trust_domain = "prod.example";
  auto ca = CertificateAuthority::LoadOrCreate(dir.Sub("ca"), options);
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_EQ((*ca)->SigningCertificate().subject, "O=prod.example");
  options.trust_domain = "Bad Domain";
  EXPECT_FALSE(CertificateAuthority::LoadOrCreate(dir.Sub("ca2"), options).ok());
}

TEST(CertificateAuthorityTest, RefusesKeyReadableByOthers) {
  TempDir dir;
  const std::string ca_dir = dir.Sub("ca");
  ASSERT_TRUE(CertificateAuthority::LoadOrCreate(ca_dir).ok());
  ASSERT_EQ(::chmod((ca_dir + "/ca-key.pem").c_str(), 0644), 0);
  auto ca = CertificateAuthority::LoadOrCreate(ca_dir);
  ASSERT_FALSE(ca.ok());
  EXPECT_THAT(Message(ca.status()), HasSubstr("0600"));
}

TEST(CertificateAuthorityTest, RefusesCertificateWithoutKey) {
  TempDir dir;
  const std::string ca_dir = dir.Sub("ca");
  ASSERT_TRUE(CertificateAuthority::LoadOrCreate(ca_dir).ok());
  ASSERT_EQ(::unlink((ca_dir + "/ca-key.pem").c_str()), 0);
  auto ca = CertificateAuthority::LoadOrCreate(ca_dir);
  ASSERT_FALSE(ca.ok());
  EXPECT_THAT(Message(ca.status()), HasSubstr("refusing to replace the root"));
}

TEST(CertificateAuthorityTest, RefusesForeignKey) {
  TempDir dir;
  const std::string ca_dir = dir.Sub("ca");
  ASSERT_TRUE(CertificateAuthority::LoadOrCreate(ca_dir).ok());
  const std::string key_path = ca_dir + "/ca-key.pem";
  WriteFile(key_path, *PrivateKey::GenerateP256()->ToPem());
  ASSERT_EQ(::chmod(key_path.c_str(), 0600), 0);
  auto ca = CertificateAuthority::LoadOrCreate(ca_dir);
  ASSERT_FALSE(ca.ok());
  EXPECT_THAT(Message(ca.status()), HasSubstr("does not belong to"));
}

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto ca = CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *std::move(ca);
    auto bundle = TrustBundle::FromPem(ca_->RootsPem());
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    bundle_.emplace(*std::move(bundle));
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
  std::optional<TrustBundle> bundle_;
};

TEST_F(SigningTest, SignsLeafWithSpiffeIdentity) {
  const SpiffeId id = Id("cluster.local", "shop", "cart");
  auto key = PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok());
  SignRequest request = RequestFor(*MakeCsr(*key, id), absl::Hours(12));
  request.allowed_identity = id;
  absl::StatusOr<SignedCertificate> signed_cert = ca_->Sign(request);
  ASSERT_TRUE(signed_cert.ok()) << signed_cert.status();
  const CertificateInfo& leaf = signed_cert->leaf;
  ASSERT_TRUE(leaf.spiffe_id.has_value());
  EXPECT_EQ(*leaf.spiffe_id, id);
  EXPECT_FALSE(leaf.is_ca);
  EXPECT_EQ(leaf.issuer, "O=cluster.local");
  EXPECT_EQ(leaf.subject, "");
  EXPECT_EQ(leaf.not_after - leaf.not_before, absl::Hours(12));
  EXPECT_LE(leaf.not_before, absl::Now());
  EXPECT_LE(leaf.serial_hex.size(), 32u);
  EXPECT_GE(leaf.serial_hex.size(), 16u);
  EXPECT_EQ(signed_cert->roots_pem, ca_->RootsPem());
  auto chain = SplitPemCertificates(signed_cert->chain_pem);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(chain->size(), 1u) << "the root is never part of the chain";

  auto verified = ValidateWorkloadCertificate(signed_cert->chain_pem, *key, *bundle_, id);
  ASSERT_TRUE(verified.ok()) << verified.status();
}

TEST_F(SigningTest, SerialsAreRandomAndDistinct) {
  absl::flat_hash_set<std::string> serials;
  const SpiffeId id = Id("cluster.local", "a", "b");
  const std::string csr = CsrFor(id);
  for (int i = 0; i < 20; ++i) {
    auto cert = ca_->Sign(RequestFor(csr));
    ASSERT_TRUE(cert.ok()) << cert.status();
    serials.insert(cert->leaf.serial_hex);
  }
  EXPECT_EQ(serials.size(), 20u);
}

TEST_F(SigningTest, ClampsLifetimeToTheCaValidity) {
  CaOptions options;
  options.root_lifetime = absl::Hours(2);
  auto short_ca = CertificateAuthority::LoadOrCreate(dir_.Sub("short"), options);
  ASSERT_TRUE(short_ca.ok()) << short_ca.status();
  auto cert = (*short_ca)->Sign(RequestFor(CsrFor(Id("cluster.local", "a", "b")), absl::Hours(24)));
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ(cert->leaf.not_after, (*short_ca)->SigningCertificate().not_after);
  EXPECT_LT(cert->leaf.not_after - cert->leaf.not_before, absl::Hours(3));

  // Starting after the CA ends leaves nothing to sign.
  SignRequest late = RequestFor(CsrFor(Id("cluster.local", "a", "b")));
  late.not_before = absl::Now() + absl::Hours(5);
  auto refused = (*short_ca)->Sign(late);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(Message(refused.status()), HasSubstr("CA validity ends"));
}

TEST_F(SigningTest, RefusesCsrWithoutExactlyOneSpiffeSan) {
  for (const char* csr : {testing::kCsrNoSan, testing::kCsrTwoSans, testing::kCsrDnsSan}) {
    auto cert = ca_->Sign(RequestFor(csr));
    ASSERT_FALSE(cert.ok());
    EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(cert.status()), HasSubstr("CSR refused"));
  }
  auto none = ca_->Sign(RequestFor(testing::kCsrNoSan));
  EXPECT_THAT(Message(none.status()), HasSubstr("no subjectAltName"));
  auto two = ca_->Sign(RequestFor(testing::kCsrTwoSans));
  EXPECT_THAT(Message(two.status()), HasSubstr("2 SANs"));
  auto garbage = ca_->Sign(RequestFor("garbage"));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SigningTest, RefusesIdentityTheCallerMayNotRequest) {
  SignRequest request = RequestFor(CsrFor(Id("cluster.local", "prod", "admin")));
  request.allowed_identity = Id("cluster.local", "dev", "web");
  auto cert = ca_->Sign(request);
  ASSERT_FALSE(cert.ok());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(cert.status()),
              HasSubstr("spiffe://cluster.local/ns/prod/sa/admin is not the identity the caller "
                        "may request (spiffe://cluster.local/ns/dev/sa/web)"));
}

// istiod's way: the caller's authentication decides the identity; the CSR only brings the key.
TEST_F(SigningTest, SignsForTheCallersIdentityWithAnyAcceptedKey) {
  const SpiffeId cart = Id("cluster.local", "shop", "cart");
  for (const char* csr : {testing::kCsrRsa3072, testing::kCsrRsa4096, testing::kCsrP384,
                          testing::kCsrUriDnsIp, testing::kCsrNoSan}) {
    SignRequest request = RequestFor(csr);
    request.identity = cart;
    absl::StatusOr<SignedCertificate> cert = ca_->Sign(request);
    ASSERT_TRUE(cert.ok()) << cert.status();
    ASSERT_TRUE(cert->leaf.spiffe_id.has_value());
    EXPECT_EQ(*cert->leaf.spiffe_id, cart);
    EXPECT_EQ(cert->leaf.subject, "") << "the CSR's subject is not certified either";
    EXPECT_TRUE(VerifySpiffeChain(cert->chain_pem, *bundle_).ok());
  }
  // A CSR that names someone else is refused, whatever the caller may have.
  SignRequest other = RequestFor(testing::kCsrRsa4096);
  other.identity = Id("cluster.local", "shop", "web");
  auto refused = ca_->Sign(other);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(refused.status()),
              HasSubstr("asks for spiffe://cluster.local/ns/shop/sa/cart but the caller is "
                        "spiffe://cluster.local/ns/shop/sa/web"));
  // Keys outside the accepted types stay refused.
  SignRequest weak = RequestFor(testing::kCsrRsa1024);
  weak.identity = cart;
  EXPECT_EQ(ca_->Sign(weak).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SigningTest, RefusesOtherTrustDomain) {
  auto cert = ca_->Sign(RequestFor(CsrFor(Id("evil.example", "a", "b"))));
  ASSERT_FALSE(cert.ok());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(cert.status()), HasSubstr("outside trust domain cluster.local"));
}

TEST_F(SigningTest, RefusesNonPositiveLifetime) {
  auto cert = ca_->Sign(RequestFor(CsrFor(Id("cluster.local", "a", "b")), absl::ZeroDuration()));
  ASSERT_FALSE(cert.ok());
  EXPECT_THAT(Message(cert.status()), HasSubstr("lifetime"));
}

TEST_F(SigningTest, SignsConcurrently) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 8;
  absl::Mutex mu;
  absl::flat_hash_set<std::string> serials;
  int failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const SpiffeId id = Id("cluster.local", "ns" + std::to_string(t), "sa");
      const std::string csr = CsrFor(id);
      for (int i = 0; i < kPerThread; ++i) {
        auto cert = ca_->Sign(RequestFor(csr));
        absl::MutexLock lock(&mu);
        if (!cert.ok() || !VerifySpiffeChain(cert->chain_pem, *bundle_).ok()) {
          ++failures;
        } else {
          serials.insert(cert->leaf.serial_hex);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(serials.size(), static_cast<size_t>(kThreads * kPerThread));
}

class PluginCaTest : public SigningTest {
 protected:
  // Writes an Istio cacerts directory holding an intermediate signed by ca_.
  void WriteIntermediate(const std::string& path, bool with_chain_file) {
    ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
    auto key = PrivateKey::GenerateP256();
    ASSERT_TRUE(key.ok());
    auto intermediate = ca_->IssueIntermediate(*key, "cluster-1", absl::Hours(24 * 30));
    ASSERT_TRUE(intermediate.ok()) << intermediate.status();
    EXPECT_TRUE(intermediate->leaf.is_ca);
    EXPECT_EQ(intermediate->leaf.subject, "CN=cluster-1,O=cluster.local");
    intermediate_fingerprint_ = intermediate->leaf.sha256_fingerprint_hex;
    WriteFile(path + "/ca-cert.pem", intermediate->chain_pem);
    WriteFile(path + "/ca-key.pem", *key->ToPem());
    WriteFile(path + "/root-cert.pem", ca_->RootsPem());
    if (with_chain_file) {
      WriteFile(path + "/cert-chain.pem", intermediate->chain_pem + ca_->RootsPem());
    }
  }
  std::string intermediate_fingerprint_;
};

TEST_F(PluginCaTest, SignsThroughAnIntermediate) {
  for (bool with_chain_file : {true, false}) {
    SCOPED_TRACE(with_chain_file ? "with cert-chain.pem" : "without cert-chain.pem");
    const std::string path = dir_.Sub(with_chain_file ? "cacerts-chain" : "cacerts");
    WriteIntermediate(path, with_chain_file);
    auto plugin = CertificateAuthority::LoadPlugin(path);
    ASSERT_TRUE(plugin.ok()) << plugin.status();
    EXPECT_EQ((*plugin)->SigningCertificate().sha256_fingerprint_hex, intermediate_fingerprint_);
    EXPECT_EQ((*plugin)->RootsPem(), ca_->RootsPem());

    const SpiffeId id = Id("cluster.local", "a", "b");
    auto leaf = IssueWorkload(**plugin, id);
    ASSERT_TRUE(leaf.ok()) << leaf.status();
    auto chain = SplitPemCertificates(leaf->cert.chain_pem);
    ASSERT_TRUE(chain.ok());
    ASSERT_EQ(chain->size(), 2u);
    EXPECT_EQ(InspectCertificate((*chain)[1])->sha256_fingerprint_hex, intermediate_fingerprint_);
    auto verified = VerifySpiffeChain(leaf->cert.chain_pem, *bundle_);
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_EQ(*verified, id);

    // Without the intermediate the leaf does not reach the root.
    auto alone = VerifySpiffeChain((*chain)[0], *bundle_);
    ASSERT_FALSE(alone.ok());
    EXPECT_THAT(Message(alone.status()), HasSubstr("unknown CA"));
  }
}

TEST_F(PluginCaTest, RefusesMismatchedFiles) {
  const std::string path = dir_.Sub("cacerts");
  WriteIntermediate(path, true);
  // A root that did not sign the intermediate.
  auto other = CertificateAuthority::LoadOrCreate(dir_.Sub("other"));
  ASSERT_TRUE(other.ok());
  WriteFile(path + "/root-cert.pem", (*other)->RootsPem());
  auto plugin = CertificateAuthority::LoadPlugin(path);
  ASSERT_FALSE(plugin.ok());
  EXPECT_THAT(Message(plugin.status()), HasSubstr("does not verify to root-cert.pem"));

  WriteFile(path + "/root-cert.pem", ca_->RootsPem());
  WriteFile(path + "/ca-key.pem", *PrivateKey::GenerateP256()->ToPem());
  plugin = CertificateAuthority::LoadPlugin(path);
  ASSERT_FALSE(plugin.ok());
  EXPECT_THAT(Message(plugin.status()), HasSubstr("does not belong to"));

  ::unlink((path + "/root-cert.pem").c_str());
  plugin = CertificateAuthority::LoadPlugin(path);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PluginCaTest, AcceptsSelfSignedRootAsPlugin) {
  const std::string path = dir_.Sub("ca");  // the root's own directory: ca-cert is the root
  WriteFile(path + "/root-cert.pem", ca_->RootsPem());
  auto plugin = CertificateAuthority::LoadPlugin(path);
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  auto leaf = IssueWorkload(**plugin, Id("cluster.local", "a", "b"));
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  EXPECT_EQ(SplitPemCertificates(leaf->cert.chain_pem)->size(), 1u);
  EXPECT_TRUE(VerifySpiffeChain(leaf->cert.chain_pem, *bundle_).ok());
}

}  // namespace
}  // namespace nodeward::crypto
