#include "crypto/keys.h"

#include <string>
#include <vector>

#include "crypto/test_csrs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::crypto {
namespace {

using ::testing::HasSubstr;
using namespace ::nodeward::crypto::testing;  // NOLINT: test constants

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(KeysTest, GeneratedKeyRoundTripsThroughPem) {
  absl::StatusOr<PrivateKey> key = PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok()) << key.status();
  absl::StatusOr<std::string> pem = key->ToPem();
  ASSERT_TRUE(pem.ok()) << pem.status();
  EXPECT_THAT(*pem, HasSubstr("-----BEGIN PRIVATE KEY-----"));
  absl::StatusOr<PrivateKey> again = PrivateKey::FromPem(*pem);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again->ToPem(), *pem);
}

TEST(KeysTest, GeneratedKeysDiffer) {
  EXPECT_NE(*PrivateKey::GenerateP256()->ToPem(), *PrivateKey::GenerateP256()->ToPem());
}

TEST(KeysTest, AcceptsSec1P256Key) {
  absl::StatusOr<PrivateKey> key = PrivateKey::FromPem(kSec1P256Key);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_THAT(*key->ToPem(), HasSubstr("BEGIN PRIVATE KEY"));
}

TEST(KeysTest, RejectsOtherCurvesAndGarbage) {
  absl::StatusOr<PrivateKey> p384 = PrivateKey::FromPem(kP384Key);
  ASSERT_FALSE(p384.ok());
  EXPECT_THAT(Message(p384.status()), HasSubstr("P-256"));
  absl::StatusOr<PrivateKey> garbage = PrivateKey::FromPem("not a key");
  ASSERT_FALSE(garbage.ok());
  EXPECT_THAT(Message(garbage.status()), HasSubstr("not valid PEM"));
  EXPECT_FALSE(PrivateKey::FromPem("").ok());
}

TEST(KeysTest, CsrCarriesTheIdentity) {
  absl::StatusOr<PrivateKey> key = PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<SpiffeId> id = SpiffeId::Make("cluster.local", "default", "web");
  ASSERT_TRUE(id.ok());
  absl::StatusOr<std::string> csr = MakeCsr(*key, *id);
  ASSERT_TRUE(csr.ok()) << csr.status();
  EXPECT_THAT(*csr, HasSubstr("BEGIN CERTIFICATE REQUEST"));
  absl::StatusOr<SpiffeId> parsed = ParseCsrIdentity(*csr);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, *id);
}

// What istio-agent (RSA 2048 by default) and other clients send is verified and read as it is.
TEST(KeysTest, CsrsOfEveryKeyTypeACaSignsAreRead) {
  const SpiffeId cart = *SpiffeId::Make("cluster.local", "shop", "cart");
  struct Case {
    const char* pem;
    const char* key_type;
  };
  for (const Case& c : {Case{kCsrRsa, "RSA 2048"}, Case{kCsrRsa3072, "RSA 3072"},
                        Case{kCsrRsa4096, "RSA 4096"}, Case{kCsrP384, "ECDSA P-384"}}) {
    absl::StatusOr<CsrInfo> info = InspectCsr(c.pem);
    ASSERT_TRUE(info.ok()) << c.key_type << ": " << info.status();
    EXPECT_EQ(info->key_type, c.key_type);
    EXPECT_EQ(info->uri_sans.size(), 1u);
    EXPECT_EQ(info->other_sans, 0u);
    EXPECT_TRUE(ParseCsrIdentity(c.pem).ok()) << c.key_type;
  }
  EXPECT_EQ(*ParseCsrIdentity(kCsrRsa3072), cart);

  absl::StatusOr<CsrInfo> mixed = InspectCsr(kCsrUriDnsIp);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->key_type, "ECDSA P-256");
  EXPECT_EQ(mixed->uri_sans, std::vector<std::string>{cart.ToString()});
  EXPECT_EQ(mixed->other_sans, 2u);
  // As its own identity a CSR must name exactly one: this one names three things.
  EXPECT_THAT(Message(ParseCsrIdentity(kCsrUriDnsIp).status()), HasSubstr("3 SANs"));

  absl::StatusOr<CsrInfo> none = InspectCsr(kCsrNoSan);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->uri_sans.empty());
  EXPECT_FALSE(InspectCsr(kCsrTampered).ok());
  EXPECT_THAT(Message(InspectCsr(kCsrRsa1024).status()), HasSubstr("accepted: ECDSA P-256"));
}

struct BadCsr {
  const char* name;
  const char* pem;
  const char* reason;
};

class BadCsrTest : public ::testing::TestWithParam<BadCsr> {};

TEST_P(BadCsrTest, IsRefusedWithReason) {
  absl::StatusOr<SpiffeId> id = ParseCsrIdentity(GetParam().pem);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(id.status()), HasSubstr(GetParam().reason));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadCsrTest,
    ::testing::Values(BadCsr{"NoSan", kCsrNoSan, "no subjectAltName"},
                      BadCsr{"TwoSans", kCsrTwoSans, "2 SANs"},
                      BadCsr{"DnsSan", kCsrDnsSan, "not a URI"},
                      BadCsr{"WeakRsaKey", kCsrRsa1024, "RSA key of 1024 bits"},
                      BadCsr{"P521Key", kCsrP521, "curve secp521r1"},
                      BadCsr{"Tampered", kCsrTampered, "signature"},
                      BadCsr{"Garbage", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "PEM"},
                      BadCsr{"Empty", "", "PEM"}),
    [](const ::testing::TestParamInfo<BadCsr>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nodeward::crypto
