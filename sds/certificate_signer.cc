#include "sds/certificate_signer.h"

#include "absl/strings/str_cat.h"
#include "crypto/keys.h"

namespace nodeward::sds {
namespace {

constexpr absl::Duration kClockSkewAllowance = absl::Minutes(1);

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCaSigner>> LocalCaSigner::Open(
    const std::string& dir, const crypto::CaOptions& options) {
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> authority =
      crypto::CertificateAuthority::LoadOrCreate(dir, options);
  if (!authority.ok()) {
    return absl::Status(authority.status().code(),
                        absl::StrCat("CA in ", dir, ": ", authority.status().message()));
  }
  return std::make_unique<LocalCaSigner>(
      std::shared_ptr<const crypto::CertificateAuthority>(*std::move(authority)), dir, options);
}

LocalCaSigner::LocalCaSigner(std::shared_ptr<const crypto::CertificateAuthority> authority,
                             std::string dir, crypto::CaOptions options)
    : dir_(std::move(dir)), options_(std::move(options)), authority_(std::move(authority)) {}

void LocalCaSigner::Replace(std::shared_ptr<const crypto::CertificateAuthority> authority) {
  absl::MutexLock lock(&mu_);
  authority_ = std::move(authority);
}

std::shared_ptr<const crypto::CertificateAuthority> LocalCaSigner::Current() {
  absl::MutexLock lock(&mu_);
  return authority_;
}

absl::StatusOr<SignedChain> LocalCaSigner::Sign(const std::string& csr_pem,
                                                const SpiffeId& identity, absl::Duration lifetime) {
  std::shared_ptr<const crypto::CertificateAuthority> authority = Current();
  crypto::SignRequest request;
  request.csr_pem = csr_pem;
  // Backdated for peers whose clocks run behind, with the lifetime counted from now, so a
  // short-lived certificate is not born expired.
  const absl::Time now = absl::Now();
  request.not_before = now - kClockSkewAllowance;
  request.lifetime = lifetime + kClockSkewAllowance;
  // The identity is the caller's to decide (it authorised it); the CSR brings the key, and
  // a URI SAN of it naming someone else is refused.
  request.identity = identity;
  absl::StatusOr<crypto::SignedCertificate> signed_certificate = authority->Sign(request);
  if (!signed_certificate.ok()) return signed_certificate.status();
  return SignedChain{std::move(signed_certificate->chain_pem),
                     std::move(signed_certificate->roots_pem)};
}

std::optional<std::string> LocalCaSigner::KnownRoots() { return Current()->RootsPem(); }

absl::StatusOr<crypto::TlsCredentials> LocalCaSigner::IssueServingCredentials(
    const crypto::CertificateAuthority::ServerNames& names, absl::Duration lifetime) {
  absl::StatusOr<crypto::PrivateKey> key = crypto::PrivateKey::GenerateP256();
  if (!key.ok()) return key.status();
  absl::StatusOr<crypto::SignedCertificate> issued =
      Current()->IssueServingCertificate(*key, names, lifetime);
  if (!issued.ok()) return issued.status();
  absl::StatusOr<std::string> key_pem = key->ToPem();
  if (!key_pem.ok()) return key_pem.status();
  return crypto::TlsCredentials{std::move(issued->chain_pem), *std::move(key_pem)};
}

absl::StatusOr<bool> LocalCaSigner::Reload() {
  if (dir_.empty()) return false;
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> reloaded =
      crypto::CertificateAuthority::LoadOrCreate(dir_, options_);
  if (!reloaded.ok()) return reloaded.status();
  std::shared_ptr<const crypto::CertificateAuthority> fresh = *std::move(reloaded);
  absl::MutexLock lock(&mu_);
  bool changed = fresh->SigningCertificate().sha256_fingerprint_hex !=
                     authority_->SigningCertificate().sha256_fingerprint_hex ||
                 fresh->RootsPem() != authority_->RootsPem();
  if (changed) authority_ = std::move(fresh);
  return changed;
}

}  // namespace nodeward::sds
