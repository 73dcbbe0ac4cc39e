#include "crypto/certificate.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/internal.h"

namespace nodeward::crypto {
namespace internal {

std::string HexLower(const std::uint8_t* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0xf]);
  }
  return out;
}

std::string DrainErrors(std::string_view what) {
  std::vector<std::string> reasons;
  while (uint32_t packed = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(packed);
    const char* lib = ERR_lib_error_string(packed);
    reasons.push_back(
        absl::StrCat(lib != nullptr ? lib : "?", ":", reason != nullptr ? reason : "unknown"));
  }
  if (reasons.empty()) return std::string(what);
  return absl::StrCat(Sv(what), ": ", absl::StrJoin(reasons, "; "));
}

absl::Status ErrorFromQueue(absl::StatusCode code, std::string_view what) {
  return absl::Status(code, DrainErrors(what));
}

absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> ParsePemCertificates(std::string_view pem) {
  ERR_clear_error();
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), pem.size()));
  if (bio == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "allocating BIO");
  std::vector<bssl::UniquePtr<X509>> certs;
  for (;;) {
    char* name = nullptr;
    char* header = nullptr;
    uint8_t* data = nullptr;
    long length = 0;  // NOLINT(google-runtime-int): PEM_read_bio fixes the type
    if (!PEM_read_bio(bio.get(), &name, &header, &data, &length)) {
      uint32_t err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return ErrorFromQueue(absl::StatusCode::kInvalidArgument,
                            absl::StrCat("PEM block ", certs.size() + 1, " is malformed"));
    }
    bssl::UniquePtr<char> name_owner(name);
    bssl::UniquePtr<char> header_owner(header);
    bssl::UniquePtr<uint8_t> data_owner(data);
    if (std::string_view(name) != "CERTIFICATE") {
      return absl::InvalidArgumentError(
          absl::StrCat("PEM block ", certs.size() + 1, " is a ", name, ", not a CERTIFICATE"));
    }
    const uint8_t* cursor = data;
    bssl::UniquePtr<X509> cert(d2i_X509(nullptr, &cursor, length));
    if (cert == nullptr || cursor != data + length) {
      return ErrorFromQueue(absl::StatusCode::kInvalidArgument,
                            absl::StrCat("certificate ", certs.size() + 1, " is not valid X.509"));
    }
    certs.push_back(std::move(cert));
  }
  if (certs.empty()) return absl::InvalidArgumentError("no PEM certificate found");
  return certs;
}

absl::StatusOr<std::string> CertificateToPem(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  const uint8_t* contents = nullptr;
  size_t length = 0;
  if (bio == nullptr || !PEM_write_bio_X509(bio.get(), cert) ||
      !BIO_mem_contents(bio.get(), &contents, &length)) {
    return ErrorFromQueue(absl::StatusCode::kInternal, "encoding certificate");
  }
  return std::string(reinterpret_cast<const char*>(contents), length);
}

absl::StatusOr<bssl::UniquePtr<X509_STORE>> MakeStore(
    const std::vector<bssl::UniquePtr<X509>>& roots) {
  bssl::UniquePtr<X509_STORE> store(X509_STORE_new());
  if (store == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "allocating store");
  for (const auto& root : roots) {
    if (!X509_STORE_add_cert(store.get(), root.get())) {
      uint32_t err = ERR_peek_last_error();
      // The same root listed twice is harmless.
      if (ERR_GET_LIB(err) == ERR_LIB_X509 &&
          ERR_GET_REASON(err) == X509_R_CERT_ALREADY_IN_HASH_TABLE) {
        ERR_clear_error();
        continue;
      }
      return ErrorFromQueue(absl::StatusCode::kInternal, "adding root to store");
    }
  }
  return store;
}

absl::Time Asn1TimeToAbsl(const ASN1_TIME* time) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int seconds = 0;
  if (epoch == nullptr || !ASN1_TIME_diff(&days, &seconds, epoch.get(), time)) {
    ERR_clear_error();
    return absl::InfinitePast();
  }
  return absl::FromUnixSeconds(static_cast<int64_t>(days) * 86400 + seconds);
}

namespace {

std::string NameToString(const X509_NAME* name) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  const uint8_t* contents = nullptr;
  size_t length = 0;
  if (bio == nullptr || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0 ||
      !BIO_mem_contents(bio.get(), &contents, &length)) {
    ERR_clear_error();
    return "";
  }
  return std::string(reinterpret_cast<const char*>(contents), length);
}

// The URI SANs of `cert`, in order.
std::vector<std::string> UriSans(X509* cert) {
  std::vector<std::string> uris;
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (size_t i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                      ASN1_STRING_length(uri));
  }
  ERR_clear_error();
  return uris;
}

}  // namespace

CertificateInfo Describe(X509* cert) {
  CertificateInfo info;
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  info.serial_hex = HexLower(ASN1_STRING_get0_data(serial), ASN1_STRING_length(serial));
  info.subject = NameToString(X509_get_subject_name(cert));
  info.issuer = NameToString(X509_get_issuer_name(cert));
  info.not_before = Asn1TimeToAbsl(X509_get0_notBefore(cert));
  info.not_after = Asn1TimeToAbsl(X509_get0_notAfter(cert));
  if (absl::StatusOr<SpiffeId> id = CertificateSpiffeId(cert); id.ok()) {
    info.spiffe_id = *std::move(id);
  }
  info.is_ca = X509_check_ca(cert) != 0;
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned digest_length = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &digest_length)) {
    info.sha256_fingerprint_hex = HexLower(digest, digest_length);
  }
  ERR_clear_error();
  return info;
}

absl::StatusOr<SpiffeId> CertificateSpiffeId(X509* cert) {
  std::vector<std::string> uris = UriSans(cert);
  if (uris.empty()) return absl::InvalidArgumentError("certificate has no URI SAN");
  if (uris.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate has ", uris.size(), " URI SANs; a SPIFFE SVID has exactly one"));
  }
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(uris[0]);
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate URI SAN is not a SPIFFE ID: ", id.status().message()));
  }
  return id;
}

std::optional<ChainFailure> VerifyChain(X509* leaf, STACK_OF(X509) * untrusted, X509_STORE* store,
                                        int purpose, std::optional<absl::Time> now) {
  bssl::UniquePtr<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || !X509_STORE_CTX_init(ctx.get(), store, leaf, untrusted)) {
    return ChainFailure{ErrorFromQueue(absl::StatusCode::kInternal, "preparing verification"),
                        SSL_AD_INTERNAL_ERROR};
  }
  if (purpose != 0) X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  if (now.has_value()) X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(*now));
  if (X509_verify_cert(ctx.get()) == 1) return std::nullopt;
  ERR_clear_error();
  const int error = X509_STORE_CTX_get_error(ctx.get());
  const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
  const std::string where = depth == 0 ? "certificate" : absl::StrCat("chain certificate ", depth);
  switch (error) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return ChainFailure{absl::UnauthenticatedError(absl::StrCat(where, " expired")),
                          SSL_AD_CERTIFICATE_EXPIRED};
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return ChainFailure{absl::UnauthenticatedError(absl::StrCat(where, " not yet valid")),
                          SSL_AD_BAD_CERTIFICATE};
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return ChainFailure{absl::UnauthenticatedError(absl::StrCat(
                              "unknown CA: ", where, " does not chain to a trusted root (",
                              X509_verify_cert_error_string(error), ")")),
                          SSL_AD_UNKNOWN_CA};
    case X509_V_ERR_CERT_REVOKED:
      return ChainFailure{absl::UnauthenticatedError(absl::StrCat(where, " is revoked by a CRL")),
                          SSL_AD_CERTIFICATE_REVOKED};
    case X509_V_ERR_UNABLE_TO_GET_CRL:
      return ChainFailure{absl::UnauthenticatedError(
                              absl::StrCat("no CRL of its issuer covers ", where,
                                           " (with CRLs given, every CA of the chain needs one)")),
                          SSL_AD_BAD_CERTIFICATE};
    default:
      return ChainFailure{
          absl::UnauthenticatedError(
              absl::StrCat(where, " failed verification: ", X509_verify_cert_error_string(error))),
          SSL_AD_BAD_CERTIFICATE};
  }
}

}  // namespace internal

absl::StatusOr<std::vector<std::string>> SplitPemCertificates(std::string_view pem) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs = internal::ParsePemCertificates(pem);
  if (!certs.ok()) return certs.status();
  std::vector<std::string> out;
  out.reserve(certs->size());
  for (const auto& cert : *certs) {
    absl::StatusOr<std::string> one = internal::CertificateToPem(cert.get());
    if (!one.ok()) return one.status();
    out.push_back(*std::move(one));
  }
  return out;
}

absl::StatusOr<CertificateInfo> InspectCertificate(std::string_view pem) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs = internal::ParsePemCertificates(pem);
  if (!certs.ok()) return certs.status();
  return internal::Describe(certs->front().get());
}

absl::StatusOr<TrustBundle> TrustBundle::FromPem(std::string_view pem) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs = internal::ParsePemCertificates(pem);
  if (!certs.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("trust bundle: ", certs.status().message()));
  }
  for (size_t i = 0; i < certs->size(); ++i) {
    if (X509_check_ca((*certs)[i].get()) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("trust bundle certificate ", i + 1, " is not a CA certificate"));
    }
  }
  absl::StatusOr<bssl::UniquePtr<X509_STORE>> store = internal::MakeStore(*certs);
  if (!store.ok()) return store.status();
  auto impl = std::make_shared<Impl>();
  impl->roots = *std::move(certs);
  impl->store = *std::move(store);
  return TrustBundle(std::move(impl));
}

std::string TrustBundle::ToPem() const {
  std::string out;
  for (const auto& root : impl_->roots) {
    // Encoding a certificate that was parsed from DER cannot fail short of allocation failure.
    if (absl::StatusOr<std::string> pem = internal::CertificateToPem(root.get()); pem.ok()) {
      out += *pem;
    }
  }
  return out;
}

std::size_t TrustBundle::size() const { return impl_ == nullptr ? 0 : impl_->roots.size(); }

std::vector<CertificateInfo> TrustBundle::Roots() const {
  std::vector<CertificateInfo> out;
  for (const auto& root : impl_->roots) out.push_back(internal::Describe(root.get()));
  return out;
}

absl::StatusOr<SpiffeId> VerifySpiffeChain(std::string_view chain_pem, const TrustBundle& bundle,
                                           absl::Time now) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs =
      internal::ParsePemCertificates(chain_pem);
  if (!certs.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate chain: ", certs.status().message()));
  }
  X509* leaf = certs->front().get();
  if (X509_check_ca(leaf) != 0) {
    return absl::InvalidArgumentError("leaf certificate is a CA, not a workload certificate");
  }
  absl::StatusOr<SpiffeId> id = internal::CertificateSpiffeId(leaf);
  if (!id.ok()) return absl::UnauthenticatedError(id.status().message());
  bssl::UniquePtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  if (untrusted == nullptr) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "allocating stack");
  }
  for (size_t i = 1; i < certs->size(); ++i) {
    if (!sk_X509_push(untrusted.get(), (*certs)[i].get())) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "allocating stack");
    }
  }
  std::optional<internal::ChainFailure> failure =
      internal::VerifyChain(leaf, untrusted.get(), bundle.impl().store.get(), 0, now);
  // The stack borrowed the certificates; drop them without freeing.
  while (sk_X509_num(untrusted.get()) > 0) sk_X509_pop(untrusted.get());
  if (failure.has_value()) return failure->status;
  return id;
}

absl::Status CheckExpectedIdentity(const SpiffeId& presented, const SpiffeId& expected) {
  if (presented == expected) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "peer identity ", presented.ToString(), " does not match expected ", expected.ToString()));
}

absl::StatusOr<CertificateInfo> ValidateWorkloadCertificate(std::string_view chain_pem,
                                                            const PrivateKey& key,
                                                            const TrustBundle& bundle,
                                                            const SpiffeId& expected,
                                                            absl::Time now) {
  absl::StatusOr<SpiffeId> id = VerifySpiffeChain(chain_pem, bundle, now);
  if (!id.ok()) return id.status();
  if (absl::Status s = CheckExpectedIdentity(*id, expected); !s.ok()) return s;
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs =
      internal::ParsePemCertificates(chain_pem);
  if (!certs.ok()) return certs.status();
  X509* leaf = certs->front().get();
  if (!X509_check_private_key(leaf, key.impl().key.get())) {
    ERR_clear_error();
    return absl::InvalidArgumentError("private key does not match the leaf certificate");
  }
  return internal::Describe(leaf);
}

}  // namespace nodeward::crypto
