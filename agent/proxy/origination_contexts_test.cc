#include "agent/proxy/origination_contexts.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::proxy {
namespace {

using ::testing::HasSubstr;

class OriginationContextsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *std::move(ca);
    auto other = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("other"));
    ASSERT_TRUE(other.ok()) << other.status();
    other_roots_ = (*other)->RootsPem();
    Write("ca.pem", ca_->RootsPem());
    auto crl = ca_->IssueRevocationList({}, absl::Hours(1));
    ASSERT_TRUE(crl.ok()) << crl.status();
    Write("crl.pem", *crl);
    tls_.mode = policy::TlsMode::kSimple;
    tls_.ca_certificates = dir_.Sub("ca.pem");
    tls_.subject_alt_names = {"ext.example.com"};
  }

  void Write(const std::string& name, const std::string& contents) {
    // A new file renamed over the old one, as a rotation does.
    const std::string temporary = dir_.Sub(name + ".new");
    std::ofstream(temporary, std::ios::trunc) << contents;
    ASSERT_EQ(std::rename(temporary.c_str(), dir_.Sub(name).c_str()), 0);
  }

  crypto::testing::TempDir dir_;
  std::unique_ptr<crypto::CertificateAuthority> ca_;
  std::string other_roots_;
  policy::ClientTlsSettings tls_;
  const absl::Time t0_ = absl::FromUnixSeconds(1'000'000);
};

TEST_F(OriginationContextsTest, SameSettingsShareOneContext) {
  OriginationContexts contexts;
  auto first = contexts.Get(tls_, t0_);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = contexts.Get(tls_, t0_ + absl::Seconds(5));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(first->get(), again->get()) << "unchanged files: the same context, sessions resume";

  policy::ClientTlsSettings other_names = tls_;
  other_names.subject_alt_names = {"db.example.com"};
  auto different = contexts.Get(other_names, t0_);
  ASSERT_TRUE(different.ok()) << different.status();
  EXPECT_NE(first->get(), different->get());
  EXPECT_EQ(contexts.size(), 2u);
}

TEST_F(OriginationContextsTest, AChangedFileIsPickedUpAfterTheRecheckInterval) {
  OriginationContexts contexts({.recheck_interval = absl::Seconds(1)});
  auto first = contexts.Get(tls_, t0_);
  ASSERT_TRUE(first.ok()) << first.status();
  Write("ca.pem", absl::StrCat(ca_->RootsPem(), other_roots_));
  auto soon = contexts.Get(tls_, t0_ + absl::Milliseconds(500));
  ASSERT_TRUE(soon.ok());
  EXPECT_EQ(first->get(), soon->get()) << "not looked at again within the interval";
  auto later = contexts.Get(tls_, t0_ + absl::Seconds(2));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_NE(first->get(), later->get());
}

TEST_F(OriginationContextsTest, FilesThatDoNotBuildKeepTheLastGoodContext) {
  OriginationContexts contexts({.recheck_interval = absl::ZeroDuration()});
  tls_.ca_crl = dir_.Sub("crl.pem");
  auto good = contexts.Get(tls_, t0_);
  ASSERT_TRUE(good.ok()) << good.status();
  Write("crl.pem", "half a CRL");
  auto kept = contexts.Get(tls_, t0_ + absl::Seconds(1));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(good->get(), kept->get());
  auto mended = ca_->IssueRevocationList({"0badc0de"}, absl::Hours(1));
  ASSERT_TRUE(mended.ok());
  Write("crl.pem", *mended);
  auto rebuilt = contexts.Get(tls_, t0_ + absl::Seconds(2));
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_NE(good->get(), rebuilt->get());

  // Never good: the caller gets the reason, naming the field.
  policy::ClientTlsSettings missing = tls_;
  missing.ca_crl = dir_.Sub("absent.pem");
  auto failed = contexts.Get(missing, t0_);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("caCrl"));
  Write("bad-crl.pem", "not a CRL");
  missing.ca_crl = dir_.Sub("bad-crl.pem");
  failed = contexts.Get(missing, t0_);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("caCrl"));
}

TEST_F(OriginationContextsTest, WithoutCaCertificatesTheSystemRootsAreUsed) {
  Write("system.pem", ca_->RootsPem());
  OriginationContexts contexts(
      {.recheck_interval = absl::ZeroDuration(), .system_ca_bundle = dir_.Sub("system.pem")});
  for (const char* unset_or_system : {"", "system"}) {
    policy::ClientTlsSettings tls = tls_;
    tls.ca_certificates = unset_or_system;
    auto context = contexts.Get(tls, t0_);
    EXPECT_TRUE(context.ok()) << "caCertificates \"" << unset_or_system
                              << "\": " << context.status();
  }
  // A bundle updated by the system is picked up like any other file.
  policy::ClientTlsSettings tls = tls_;
  tls.ca_certificates = "";
  auto before = contexts.Get(tls, t0_);
  Write("system.pem", absl::StrCat(ca_->RootsPem(), other_roots_));
  auto after = contexts.Get(tls, t0_ + absl::Seconds(1));
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_NE(before->get(), after->get());

  OriginationContexts no_bundle({.system_ca_bundle = dir_.Sub("absent-bundle.pem")});
  auto failed = no_bundle.Get(tls, t0_);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("the system's roots"));
  // insecureSkipVerify needs no roots at all.
  tls.insecure_skip_verify = true;
  EXPECT_TRUE(no_bundle.Get(tls, t0_).ok());
}

TEST_F(OriginationContextsTest, MutualNeedsItsFilesAndSecretsAreRefused) {
  OriginationContexts contexts;
  policy::ClientTlsSettings mutual = tls_;
  mutual.mode = policy::TlsMode::kMutual;
  mutual.client_certificate = dir_.Sub("absent-cert.pem");
  mutual.private_key = dir_.Sub("absent-key.pem");
  auto failed = contexts.Get(mutual, t0_);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("clientCertificate"));

  policy::ClientTlsSettings secret = tls_;
  secret.credential_name = "ext-secret";
  failed = contexts.Get(secret, t0_);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(contexts.size(), 0u);
}

TEST_F(OriginationContextsTest, TheLeastRecentlyUsedSettingsGoFirst) {
  OriginationContexts contexts({.max_entries = 2});
  policy::ClientTlsSettings a = tls_, b = tls_, c = tls_;
  a.sni = "a.example.com";
  b.sni = "b.example.com";
  c.sni = "c.example.com";
  auto first_a = contexts.Get(a, t0_);
  ASSERT_TRUE(first_a.ok());
  ASSERT_TRUE(contexts.Get(b, t0_ + absl::Seconds(1)).ok());
  ASSERT_TRUE(contexts.Get(a, t0_ + absl::Seconds(2)).ok());
  ASSERT_TRUE(contexts.Get(c, t0_ + absl::Seconds(3)).ok());  // evicts b
  EXPECT_EQ(contexts.size(), 2u);
  auto still_a = contexts.Get(a, t0_ + absl::Seconds(3));
  ASSERT_TRUE(still_a.ok());
  EXPECT_EQ(first_a->get(), still_a->get());
}

}  // namespace
}  // namespace nodeward::proxy
