// ECDSA P-256 keys (the only kind nodeward makes) and certificate signing requests. No
// BoringSSL type crosses this header: BoringSSL's symbols are private to crypto/ (see
// crypto/CMakeLists.txt).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/spiffe_id.h"

namespace nodeward::crypto {

class PrivateKey {
 public:
  static absl::StatusOr<PrivateKey> GenerateP256();
  // PEM: PKCS#8 or SEC1 "EC PRIVATE KEY". Only P-256 is accepted.
  static absl::StatusOr<PrivateKey> FromPem(std::string_view pem);
  // PKCS#8 PEM.
  absl::StatusOr<std::string> ToPem() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit PrivateKey(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// A PEM CSR signed by `key` whose only SAN is `identity` as a URI.
absl::StatusOr<std::string> MakeCsr(const PrivateKey& key, const SpiffeId& identity);

// Verifies the CSR's self-signature and key type (ECDSA P-256 or P-384, RSA 2048, 3072 or
// 4096 bits) and returns the identity in its single URI SAN. Errors: not PEM, bad signature,
// another key type, no SAN, more than one SAN, not a SPIFFE ID.
absl::StatusOr<SpiffeId> ParseCsrIdentity(std::string_view csr_pem);

// A CSR as a CA sees it before deciding what to certify: verified as ParseCsrIdentity does,
// with its SANs as they are (a CSR may carry names the CA does not certify).
struct CsrInfo {
  std::string key_type;  // "ECDSA P-256", "RSA 2048", ...
  std::vector<std::string> uri_sans;
  std::size_t other_sans = 0;  // DNS names, IP addresses, e-mail addresses, ...
};
absl::StatusOr<CsrInfo> InspectCsr(std::string_view csr_pem);

}  // namespace nodeward::crypto
