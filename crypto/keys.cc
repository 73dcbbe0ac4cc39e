#include "crypto/keys.h"

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "crypto/internal.h"

namespace nodeward::crypto {
namespace {

absl::Status CheckP256(EVP_PKEY* key) {
  if (EVP_PKEY_id(key) != EVP_PKEY_EC) {
    return absl::InvalidArgumentError("key is not an EC key (only ECDSA P-256 is accepted)");
  }
  const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key);
  if (ec == nullptr || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1) {
    return absl::InvalidArgumentError("EC key is not on curve P-256");
  }
  return absl::OkStatus();
}

// What a CA signs: the key types istio-agent, ztunnel and Envoy-based clients generate. Other
// sizes are refused, small ones because they are weak, large ones because verifying them is a
// cost any caller could impose.
absl::StatusOr<std::string> CsrKeyType(EVP_PKEY* key) {
  if (EVP_PKEY_id(key) == EVP_PKEY_EC) {
    const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key);
    const int curve = ec == nullptr ? NID_undef : EC_GROUP_get_curve_name(EC_KEY_get0_group(ec));
    if (curve == NID_X9_62_prime256v1) return std::string("ECDSA P-256");
    if (curve == NID_secp384r1) return std::string("ECDSA P-384");
    return absl::InvalidArgumentError(
        absl::StrCat("EC key on curve ", curve == NID_undef ? "unknown" : OBJ_nid2sn(curve),
                     "; accepted: ECDSA P-256 or P-384, RSA 2048, 3072 or 4096 bits"));
  }
  if (EVP_PKEY_id(key) == EVP_PKEY_RSA) {
    const unsigned bits = EVP_PKEY_bits(key);
    if (bits == 2048 || bits == 3072 || bits == 4096) return absl::StrCat("RSA ", bits);
    return absl::InvalidArgumentError(absl::StrCat(
        "RSA key of ", bits, " bits; accepted: ECDSA P-256 or P-384, RSA 2048, 3072 or 4096 bits"));
  }
  return absl::InvalidArgumentError(
      "key is neither EC nor RSA; accepted: ECDSA P-256 or P-384, RSA 2048, 3072 or 4096 bits");
}

absl::StatusOr<std::string> BioContents(BIO* bio) {
  const uint8_t* contents = nullptr;
  size_t length = 0;
  if (!BIO_mem_contents(bio, &contents, &length)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "reading memory BIO");
  }
  return std::string(reinterpret_cast<const char*>(contents), length);
}

}  // namespace

namespace internal {

absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParsePrivateKeyPem(std::string_view pem) {
  ERR_clear_error();
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), pem.size()));
  if (bio == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "allocating BIO");
  // Handles both "PRIVATE KEY" (PKCS#8) and "EC PRIVATE KEY" (SEC1) blocks.
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return ErrorFromQueue(absl::StatusCode::kInvalidArgument, "private key is not valid PEM");
  }
  if (absl::Status s = CheckP256(key.get()); !s.ok()) return s;
  return key;
}

absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParseEcOrRsaPrivateKeyPem(std::string_view pem) {
  ERR_clear_error();
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), pem.size()));
  bssl::UniquePtr<EVP_PKEY> key(
      bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return ErrorFromQueue(absl::StatusCode::kInvalidArgument, "private key is not valid PEM");
  }
  const int type = EVP_PKEY_id(key.get());
  if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA) {
    return absl::InvalidArgumentError("private key must be EC or RSA");
  }
  if (type == EVP_PKEY_RSA && EVP_PKEY_bits(key.get()) < 2048) {
    return absl::InvalidArgumentError("RSA private key is shorter than 2048 bits");
  }
  return key;
}

absl::StatusOr<ParsedCsr> ParseCsr(std::string_view csr_pem) {
  ERR_clear_error();
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(csr_pem.data(), csr_pem.size()));
  if (bio == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "allocating BIO");
  bssl::UniquePtr<X509_REQ> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (req == nullptr) {
    return ErrorFromQueue(absl::StatusCode::kInvalidArgument, "CSR is not a valid PEM request");
  }
  ParsedCsr parsed;
  parsed.public_key.reset(X509_REQ_get_pubkey(req.get()));
  if (parsed.public_key == nullptr) {
    return ErrorFromQueue(absl::StatusCode::kInvalidArgument, "CSR public key is unreadable");
  }
  absl::StatusOr<std::string> key_type = CsrKeyType(parsed.public_key.get());
  if (!key_type.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("CSR key: ", key_type.status().message()));
  }
  parsed.key_type = *std::move(key_type);
  if (X509_REQ_verify(req.get(), parsed.public_key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("CSR signature does not verify with its own key");
  }
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> extensions(X509_REQ_get_extensions(req.get()));
  ERR_clear_error();  // a CSR without an extension request leaves an error behind
  X509_EXTENSION* san_extension = nullptr;
  for (size_t i = 0; extensions != nullptr && i < sk_X509_EXTENSION_num(extensions.get()); ++i) {
    X509_EXTENSION* ext = sk_X509_EXTENSION_value(extensions.get(), i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == NID_subject_alt_name) {
      if (san_extension != nullptr) {
        return absl::InvalidArgumentError("CSR has more than one subjectAltName extension");
      }
      san_extension = ext;
    }
  }
  if (san_extension == nullptr) return parsed;
  parsed.has_san_extension = true;
  bssl::UniquePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(san_extension)));
  if (names == nullptr) {
    return ErrorFromQueue(absl::StatusCode::kInvalidArgument, "CSR subjectAltName is malformed");
  }
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) {
      ++parsed.other_sans;
      continue;
    }
    const ASN1_STRING* uri = name->d.uniformResourceIdentifier;
    parsed.uri_sans.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                                 ASN1_STRING_length(uri));
  }
  return parsed;
}

absl::StatusOr<SpiffeId> SingleSpiffeSan(const ParsedCsr& csr) {
  if (!csr.has_san_extension) {
    return absl::InvalidArgumentError("CSR has no subjectAltName (want one SPIFFE URI SAN)");
  }
  const size_t count = csr.uri_sans.size() + csr.other_sans;
  if (count == 0) return absl::InvalidArgumentError("CSR subjectAltName is empty");
  if (count > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CSR has ", count, " SANs; exactly one SPIFFE URI SAN is accepted"));
  }
  if (csr.uri_sans.empty()) {
    return absl::InvalidArgumentError("CSR SAN is not a URI (want one SPIFFE URI SAN)");
  }
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(csr.uri_sans.front());
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CSR URI SAN is not a valid SPIFFE ID: ", id.status().message()));
  }
  return id;
}

}  // namespace internal

absl::StatusOr<PrivateKey> PrivateKey::GenerateP256() {
  ERR_clear_error();
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (ec == nullptr || !EC_KEY_generate_key(ec.get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "generating P-256 key");
  }
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  if (key == nullptr || !EVP_PKEY_assign_EC_KEY(key.get(), ec.release())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "wrapping P-256 key");
  }
  auto impl = std::make_shared<Impl>();
  impl->key = std::move(key);
  return PrivateKey(std::move(impl));
}

absl::StatusOr<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = internal::ParsePrivateKeyPem(pem);
  if (!key.ok()) return key.status();
  auto impl = std::make_shared<Impl>();
  impl->key = *std::move(key);
  return PrivateKey(std::move(impl));
}

absl::StatusOr<std::string> PrivateKey::ToPem() const {
  ERR_clear_error();
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || !PEM_write_bio_PKCS8PrivateKey(bio.get(), impl_->key.get(), nullptr,
                                                       nullptr, 0, nullptr, nullptr)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "encoding private key");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> MakeCsr(const PrivateKey& key, const SpiffeId& identity) {
  ERR_clear_error();
  bssl::UniquePtr<X509_REQ> req(X509_REQ_new());
  if (req == nullptr || !X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) ||
      !X509_REQ_set_pubkey(req.get(), key.impl().key.get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building CSR");
  }
  const std::string uri = identity.ToString();
  bssl::UniquePtr<GENERAL_NAMES> names(GENERAL_NAMES_new());
  bssl::UniquePtr<GENERAL_NAME> name(GENERAL_NAME_new());
  bssl::UniquePtr<ASN1_IA5STRING> value(ASN1_IA5STRING_new());
  if (names == nullptr || name == nullptr || value == nullptr ||
      !ASN1_STRING_set(value.get(), uri.data(), static_cast<int>(uri.size()))) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building CSR SAN");
  }
  GENERAL_NAME_set0_value(name.get(), GEN_URI, value.release());
  if (!bssl::PushToStack(names.get(), std::move(name))) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building CSR SAN");
  }
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> extensions(sk_X509_EXTENSION_new_null());
  // Critical because the subject is empty (RFC 5280 4.2.1.6).
  bssl::UniquePtr<X509_EXTENSION> san(X509V3_EXT_i2d(NID_subject_alt_name, 1, names.get()));
  if (extensions == nullptr || san == nullptr ||
      !bssl::PushToStack(extensions.get(), std::move(san)) ||
      !X509_REQ_add_extensions(req.get(), extensions.get()) ||
      !X509_REQ_sign(req.get(), key.impl().key.get(), EVP_sha256())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "signing CSR");
  }
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || !PEM_write_bio_X509_REQ(bio.get(), req.get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "encoding CSR");
  }
  return BioContents(bio.get());
}

absl::StatusOr<SpiffeId> ParseCsrIdentity(std::string_view csr_pem) {
  absl::StatusOr<internal::ParsedCsr> parsed = internal::ParseCsr(csr_pem);
  if (!parsed.ok()) return parsed.status();
  return internal::SingleSpiffeSan(*parsed);
}

absl::StatusOr<CsrInfo> InspectCsr(std::string_view csr_pem) {
  absl::StatusOr<internal::ParsedCsr> parsed = internal::ParseCsr(csr_pem);
  if (!parsed.ok()) return parsed.status();
  return CsrInfo{std::move(parsed->key_type), std::move(parsed->uri_sans), parsed->other_sans};
}

}  // namespace nodeward::crypto
