// X.509 inspection and verification of SPIFFE certificate chains against a trust bundle.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/keys.h"

namespace nodeward::crypto {

struct CertificateInfo {
  std::string serial_hex;
  std::string subject;  // one-line RFC 2253 form
  std::string issuer;
  absl::Time not_before;
  absl::Time not_after;
  std::optional<SpiffeId> spiffe_id;  // the URI SAN when it is a valid SPIFFE ID
  bool is_ca = false;
  std::string sha256_fingerprint_hex;
};

// Splits a PEM bundle into its certificates (each re-encoded as PEM). Error when empty or
// when a block is not a parseable certificate.
absl::StatusOr<std::vector<std::string>> SplitPemCertificates(std::string_view pem);

// Describes the first certificate of a PEM bundle.
absl::StatusOr<CertificateInfo> InspectCertificate(std::string_view pem);

// One or more trusted roots. Several roots at once is how a root rotation overlaps.
class TrustBundle {
 public:
  static absl::StatusOr<TrustBundle> FromPem(std::string_view pem);
  std::string ToPem() const;
  std::size_t size() const;
  std::vector<CertificateInfo> Roots() const;
  bool Empty() const { return size() == 0; }

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit TrustBundle(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Verifies a leaf-first PEM chain (leaf plus intermediates; a trailing root is allowed) to
// one of the bundle's roots at `now`, and returns the leaf's SPIFFE ID. Errors name the
// reason: expired, not yet valid, untrusted issuer, no/invalid SPIFFE URI SAN.
absl::StatusOr<SpiffeId> VerifySpiffeChain(std::string_view chain_pem, const TrustBundle& bundle,
                                           absl::Time now = absl::Now());

// Secure naming: PermissionDenied naming both identities when they differ.
absl::Status CheckExpectedIdentity(const SpiffeId& presented, const SpiffeId& expected);

// Everything a workload certificate must satisfy before it is used: the chain verifies to the
// bundle now, its SPIFFE ID is `expected`, and `key` is the leaf's key.
absl::StatusOr<CertificateInfo> ValidateWorkloadCertificate(std::string_view chain_pem,
                                                            const PrivateKey& key,
                                                            const TrustBundle& bundle,
                                                            const SpiffeId& expected,
                                                            absl::Time now = absl::Now());

}  // namespace nodeward::crypto
