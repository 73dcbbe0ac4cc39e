// BoringSSL-facing pieces shared by the files of crypto/. Never included outside crypto/:
// BoringSSL's symbols are local to nodeward_crypto (see CMakeLists.txt).
#pragma once

#include <openssl/base.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"
#include "crypto/keys.h"

namespace nodeward::crypto {

struct PrivateKey::Impl {
  bssl::UniquePtr<EVP_PKEY> key;
};

struct TrustBundle::Impl {
  std::vector<bssl::UniquePtr<X509>> roots;
  // Built once from `roots`; X509_verify_cert only reads it, so engines on any thread share it.
  bssl::UniquePtr<X509_STORE> store;
};

namespace internal {

// This abseil build keeps its own string_view type.
inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Drains BoringSSL's error queue of this thread into "<what>: <reason>; <reason>".
std::string DrainErrors(std::string_view what);
absl::Status ErrorFromQueue(absl::StatusCode code, std::string_view what);

absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCertificates(std::string_view pem);
absl::StatusOr<std::string> CertificateToPem(X509* cert);
absl::StatusOr<bssl::UniquePtr<X509_STORE>> MakeStore(
    const std::vector<bssl::UniquePtr<X509>>& roots);

absl::Time Asn1TimeToAbsl(const ASN1_TIME* time);
CertificateInfo Describe(X509* cert);

// The single URI SAN of `cert` as a SPIFFE ID. Errors: no URI SAN, several, not SPIFFE.
absl::StatusOr<SpiffeId> CertificateSpiffeId(X509* cert);

// Why a chain failed X509 verification; also picks the TLS alert to send.
struct ChainFailure {
  absl::Status status;
  int tls_alert;
};

// Verifies `leaf` with `untrusted` as candidate intermediates (the leaf may be among them)
// against `store`. `purpose` is an X509_PURPOSE_* or 0; `now` nullopt means the clock.
std::optional<ChainFailure> VerifyChain(X509* leaf, STACK_OF(X509) * untrusted, X509_STORE* store,
                                        int purpose, std::optional<absl::Time> now);

absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParsePrivateKeyPem(std::string_view pem);
// Operator-supplied keys (plug-in CAs, origination client certificates) may also be RSA
// (2048 bits or more) or EC on another curve.
absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParseEcOrRsaPrivateKeyPem(std::string_view pem);

// A CSR whose self-signature verified and whose key is of a type a CA signs (ECDSA P-256 or
// P-384, RSA 2048, 3072 or 4096 bits), with its subjectAltNames as they are.
struct ParsedCsr {
  bssl::UniquePtr<EVP_PKEY> public_key;
  std::string key_type;  // "ECDSA P-256", "RSA 2048", ...
  bool has_san_extension = false;
  std::vector<std::string> uri_sans;
  std::size_t other_sans = 0;  // DNS names, IP addresses, e-mail addresses, ...
};
absl::StatusOr<ParsedCsr> ParseCsr(std::string_view csr_pem);
// The identity of a CSR that must name it itself: exactly one SAN, a SPIFFE URI.
absl::StatusOr<SpiffeId> SingleSpiffeSan(const ParsedCsr& csr);

// A positive random serial below 2^128 that is never zero.
absl::StatusOr<bssl::UniquePtr<ASN1_INTEGER>> RandomSerial();

std::string HexLower(const std::uint8_t* data, std::size_t size);

}  // namespace internal
}  // namespace nodeward::crypto
