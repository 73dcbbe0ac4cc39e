#include "crypto/keys.h"

#include <string>

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
                      BadCsr{"RsaKey", kCsrRsa, "not an EC key"},
                      BadCsr{"Tampered", kCsrTampered, "signature"},
                      BadCsr{"Garbage", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "PEM"},
                      BadCsr{"Empty", "", "PEM"}),
    [](const ::testing::TestParamInfo<BadCsr>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace nodeward::crypto
