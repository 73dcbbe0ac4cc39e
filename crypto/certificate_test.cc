#include "crypto/certificate.h"

#include <string>

#include "crypto/certificate_authority.h"
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

class CertificateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto ca = CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *std::move(ca);
    auto other = CertificateAuthority::LoadOrCreate(dir_.Sub("other"));
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = *std::move(other);
    auto bundle = TrustBundle::FromPem(ca_->RootsPem());
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    bundle_.emplace(*std::move(bundle));
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
  std::unique_ptr<CertificateAuthority> other_ca_;
  std::optional<TrustBundle> bundle_;
};

TEST_F(CertificateTest, SplitsAndInspects) {
  auto leaf = IssueWorkload(*ca_, Id("cluster.local", "a", "b"));
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  auto certs = SplitPemCertificates(leaf->cert.chain_pem + ca_->RootsPem());
  ASSERT_TRUE(certs.ok()) << certs.status();
  ASSERT_EQ(certs->size(), 2u);
  EXPECT_EQ((*certs)[1], ca_->RootsPem());
  auto info = InspectCertificate(leaf->cert.chain_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->serial_hex, leaf->cert.leaf.serial_hex);
  EXPECT_EQ(info->sha256_fingerprint_hex.size(), 64u);
  EXPECT_EQ(info->spiffe_id, Id("cluster.local", "a", "b"));
}

TEST_F(CertificateTest, RejectsMalformedPem) {
  auto empty = SplitPemCertificates("");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(Message(empty.status()), HasSubstr("no PEM certificate"));
  auto key = SplitPemCertificates(testing::kSec1P256Key);
  ASSERT_FALSE(key.ok());
  EXPECT_THAT(Message(key.status()), HasSubstr("not a CERTIFICATE"));
  auto broken =
      SplitPemCertificates("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(Message(broken.status()), HasSubstr("not valid X.509"));
  EXPECT_FALSE(InspectCertificate("junk").ok());
}

TEST_F(CertificateTest, BundleHoldsSeveralRoots) {
  auto bundle = TrustBundle::FromPem(ca_->RootsPem() + other_ca_->RootsPem());
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->size(), 2u);
  EXPECT_FALSE(bundle->Empty());
  EXPECT_EQ(bundle->ToPem(), ca_->RootsPem() + other_ca_->RootsPem());
  ASSERT_EQ(bundle->Roots().size(), 2u);
  EXPECT_TRUE(bundle->Roots()[0].is_ca);

  // Root rotation: leaves from either root verify during the overlap.
  for (const CertificateAuthority* ca : {ca_.get(), other_ca_.get()}) {
    auto leaf = IssueWorkload(*ca, Id("cluster.local", "a", "b"));
    ASSERT_TRUE(leaf.ok());
    auto id = VerifySpiffeChain(leaf->cert.chain_pem, *bundle);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(*id, Id("cluster.local", "a", "b"));
  }
}

TEST_F(CertificateTest, BundleRefusesLeafCertificates) {
  auto leaf = IssueWorkload(*ca_, Id("cluster.local", "a", "b"));
  ASSERT_TRUE(leaf.ok());
  auto bundle = TrustBundle::FromPem(leaf->cert.chain_pem);
  ASSERT_FALSE(bundle.ok());
  EXPECT_THAT(Message(bundle.status()), HasSubstr("not a CA certificate"));
  EXPECT_FALSE(TrustBundle::FromPem("").ok());
}

TEST_F(CertificateTest, VerifyNamesTheReason) {
  const SpiffeId id = Id("cluster.local", "a", "b");
  auto expired = IssueWorkload(*ca_, id, absl::Hours(1), absl::Now() - absl::Hours(3));
  ASSERT_TRUE(expired.ok()) << expired.status();
  auto result = VerifySpiffeChain(expired->cert.chain_pem, *bundle_);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(result.status()), HasSubstr("certificate expired"));

  auto future = IssueWorkload(*ca_, id, absl::Hours(1), absl::Now() + absl::Hours(1));
  ASSERT_TRUE(future.ok()) << future.status();
  result = VerifySpiffeChain(future->cert.chain_pem, *bundle_);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(Message(result.status()), HasSubstr("not yet valid"));
  // ... and it is fine at a time inside its validity.
  EXPECT_TRUE(
      VerifySpiffeChain(future->cert.chain_pem, *bundle_, absl::Now() + absl::Minutes(90)).ok());

  auto foreign = IssueWorkload(*other_ca_, id);
  ASSERT_TRUE(foreign.ok());
  result = VerifySpiffeChain(foreign->cert.chain_pem, *bundle_);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(Message(result.status()), HasSubstr("unknown CA"));

  auto good = IssueWorkload(*ca_, id);
  ASSERT_TRUE(good.ok());
  result = VerifySpiffeChain(good->cert.chain_pem, *bundle_, absl::Now() + absl::Hours(48));
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(Message(result.status()), HasSubstr("expired"));

  // A CA certificate is not a workload certificate.
  result = VerifySpiffeChain(ca_->RootsPem(), *bundle_);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(Message(result.status()), HasSubstr("is a CA"));
}

TEST_F(CertificateTest, ExpectedIdentity) {
  EXPECT_TRUE(CheckExpectedIdentity(Id("td", "a", "b"), Id("td", "a", "b")).ok());
  absl::Status mismatch = CheckExpectedIdentity(Id("td", "a", "b"), Id("td", "a", "c"));
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Message(mismatch),
            "peer identity spiffe://td/ns/a/sa/b does not match expected spiffe://td/ns/a/sa/c");
}

TEST_F(CertificateTest, ValidatesWorkloadCertificate) {
  const SpiffeId id = Id("cluster.local", "a", "b");
  auto leaf = IssueWorkload(*ca_, id);
  ASSERT_TRUE(leaf.ok());
  auto info = ValidateWorkloadCertificate(leaf->cert.chain_pem, leaf->key, *bundle_, id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->serial_hex, leaf->cert.leaf.serial_hex);

  auto wrong_key =
      ValidateWorkloadCertificate(leaf->cert.chain_pem, *PrivateKey::GenerateP256(), *bundle_, id);
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_THAT(Message(wrong_key.status()), HasSubstr("does not match the leaf"));

  auto wrong_id = ValidateWorkloadCertificate(leaf->cert.chain_pem, leaf->key, *bundle_,
                                              Id("cluster.local", "a", "c"));
  ASSERT_FALSE(wrong_id.ok());
  EXPECT_EQ(wrong_id.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace nodeward::crypto
