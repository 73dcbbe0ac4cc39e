// Where certificates come from: the built-in CA or an upstream IstioCertificateService.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate_authority.h"
#include "crypto/tls.h"

namespace nodeward::sds {

struct SignedChain {
  std::string chain_pem;  // leaf first, then intermediates, never the root
  std::string roots_pem;  // the roots the chain verifies to
};

class CertificateSigner {
 public:
  virtual ~CertificateSigner() = default;
  // Signs `csr_pem`, whose identity the caller has already authorised as `identity`.
  virtual absl::StatusOr<SignedChain> Sign(const std::string& csr_pem, const SpiffeId& identity,
                                           absl::Duration lifetime) = 0;
  // The roots when they are known without signing anything: a local CA's, or those an
  // upstream CA was configured with, which the roots of its signed chains then replace.
  // nullopt when they are only learnt from a signed chain.
  virtual std::optional<std::string> KnownRoots() = 0;
  // Picks up a changed CA (new key material on disk). Returns whether anything changed.
  virtual absl::StatusOr<bool> Reload() = 0;
};

// The built-in CA: a crypto::CertificateAuthority kept in a directory.
class LocalCaSigner : public CertificateSigner {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCaSigner>> Open(const std::string& dir,
                                                             const crypto::CaOptions& options);
  // Tests and root rotation: swap the CA in use.
  explicit LocalCaSigner(std::shared_ptr<const crypto::CertificateAuthority> authority,
                         std::string dir = {}, crypto::CaOptions options = {});
  void Replace(std::shared_ptr<const crypto::CertificateAuthority> authority);

  absl::StatusOr<SignedChain> Sign(const std::string& csr_pem, const SpiffeId& identity,
                                   absl::Duration lifetime) override;
  std::optional<std::string> KnownRoots() override;
  absl::StatusOr<bool> Reload() override;

  // A key and certificate for a TLS server of this CA's own (the CA service), carrying every
  // name it is reached by.
  absl::StatusOr<crypto::TlsCredentials> IssueServingCredentials(
      const crypto::CertificateAuthority::ServerNames& names, absl::Duration lifetime);

 private:
  std::shared_ptr<const crypto::CertificateAuthority> Current();

  const std::string dir_;
  const crypto::CaOptions options_;
  absl::Mutex mu_;
  std::shared_ptr<const crypto::CertificateAuthority> authority_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nodeward::sds
