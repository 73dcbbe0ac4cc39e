// Over 600 lines on purpose: loading a CA, signing leaves, servers and intermediates, and
// revoking all build on the CA's private state and one certificate builder, kept in one file.
#include "crypto/certificate_authority.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "crypto/internal.h"

namespace nodeward::crypto {
namespace {

constexpr char kCaCertFile[] = "ca-cert.pem";
constexpr char kCaKeyFile[] = "ca-key.pem";
constexpr char kCertChainFile[] = "cert-chain.pem";
constexpr char kRootCertFile[] = "root-cert.pem";
// Leaves start this far in the past so that peers whose clocks lag still accept them.
constexpr absl::Duration kClockSkewBackdate = absl::Minutes(5);
// A new root starts this far in the past for the same reason.
constexpr absl::Duration kRootBackdate = absl::Hours(1);

std::string PathJoin(const std::string& dir, const char* file) {
  return absl::StrCat(dir, "/", file);
}

absl::Status ErrnoStatus(std::string_view what, const std::string& path) {
  const int error = errno;
  return absl::Status(
      error == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
      absl::StrCat(internal::Sv(what), " ", path, ": ", std::strerror(error)));
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus("cannot read", path);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return ErrnoStatus("cannot read", path);
  return contents.str();
}

// Writes through a temporary file and a rename so a crash never leaves a torn file behind.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  // open() honours the umask; the mode of a key file must not depend on it.
  if (::fchmod(fd, mode) != 0) {
    absl::Status status = ErrnoStatus("cannot chmod", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return status;
  }
  std::size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = ErrnoStatus("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return status;
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    absl::Status status = ErrnoStatus("cannot flush", tmp);
    ::unlink(tmp.c_str());
    return status;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status status = ErrnoStatus("cannot rename to", path);
    ::unlink(tmp.c_str());
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> ParseCaKey(std::string_view pem) {
  return internal::ParseEcOrRsaPrivateKeyPem(pem);
}

absl::Status SetValidity(X509* cert, absl::Time not_before, absl::Time not_after) {
  if (!ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after))) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "setting validity");
  }
  return absl::OkStatus();
}

absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  bssl::UniquePtr<X509_EXTENSION> ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str()));
  if (ext == nullptr || !X509_add_ext(cert, ext.get(), -1)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal,
                                    absl::StrCat("adding extension ", OBJ_nid2sn(nid)));
  }
  return absl::OkStatus();
}

struct CertificateSpec {
  X509* issuer = nullptr;  // nullptr: self-signed
  EVP_PKEY* subject_key = nullptr;
  EVP_PKEY* signing_key = nullptr;
  std::vector<std::pair<int, std::string>> subject;  // (NID, value)
  absl::Time not_before;
  absl::Time not_after;
  bool is_ca = false;
  // Leaf only.
  std::optional<SpiffeId> uri_san;
  std::vector<std::string> dns_sans;
  std::vector<std::string> ip_sans;
};

absl::StatusOr<bssl::UniquePtr<X509>> BuildCertificate(const CertificateSpec& spec) {
  ERR_clear_error();
  bssl::UniquePtr<X509> cert(X509_new());
  absl::StatusOr<bssl::UniquePtr<ASN1_INTEGER>> serial = internal::RandomSerial();
  if (!serial.ok()) return serial.status();
  if (cert == nullptr || !X509_set_version(cert.get(), X509_VERSION_3) ||
      !X509_set_serialNumber(cert.get(), serial->get()) ||
      !X509_set_pubkey(cert.get(), spec.subject_key)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building certificate");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  for (const auto& [nid, value] : spec.subject) {
    if (!X509_NAME_add_entry_by_NID(subject, nid, MBSTRING_UTF8,
                                    reinterpret_cast<const uint8_t*>(value.data()),
                                    static_cast<int>(value.size()), -1, 0)) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building subject");
    }
  }
  X509* issuer = spec.issuer != nullptr ? spec.issuer : cert.get();
  if (!X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer))) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "setting issuer");
  }
  if (absl::Status s = SetValidity(cert.get(), spec.not_before, spec.not_after); !s.ok()) return s;

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert.get(), nullptr, nullptr, 0);
  std::vector<std::pair<int, std::string>> extensions;
  if (spec.is_ca) {
    extensions.emplace_back(NID_basic_constraints, spec.issuer == nullptr
                                                       ? "critical,CA:TRUE"
                                                       : "critical,CA:TRUE,pathlen:0");
    extensions.emplace_back(NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    extensions.emplace_back(NID_basic_constraints, "critical,CA:FALSE");
    extensions.emplace_back(NID_key_usage, EVP_PKEY_id(spec.subject_key) == EVP_PKEY_RSA
                                               ? "critical,digitalSignature,keyEncipherment"
                                               : "critical,digitalSignature");
    extensions.emplace_back(NID_ext_key_usage, "serverAuth,clientAuth");
  }
  extensions.emplace_back(NID_subject_key_identifier, "hash");
  if (spec.issuer != nullptr) extensions.emplace_back(NID_authority_key_identifier, "keyid:always");
  std::vector<std::string> names;
  for (const std::string& name : spec.dns_sans) names.push_back(absl::StrCat("DNS:", name));
  for (const std::string& ip : spec.ip_sans) names.push_back(absl::StrCat("IP:", ip));
  if (spec.uri_san.has_value()) names.push_back(absl::StrCat("URI:", spec.uri_san->ToString()));
  if (!names.empty()) {
    // Critical when the subject is empty, as a workload certificate's is (RFC 5280 4.2.1.6).
    extensions.emplace_back(
        NID_subject_alt_name,
        absl::StrCat(spec.subject.empty() ? "critical," : "", absl::StrJoin(names, ",")));
  }
  for (const auto& [nid, value] : extensions) {
    if (absl::Status s = AddExtension(cert.get(), &ctx, nid, value); !s.ok()) return s;
  }
  if (!X509_sign(cert.get(), spec.signing_key, EVP_sha256())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "signing certificate");
  }
  return cert;
}

bool IsSelfSigned(X509* cert) { return X509_check_issued(cert, cert) == X509_V_OK; }

// `ip` in the form the SAN extension writer takes, or why it is not an address.
absl::StatusOr<std::string> CanonicalIp(const std::string& ip) {
  unsigned char bytes[sizeof(in6_addr)];
  char text[INET6_ADDRSTRLEN];
  for (int family : {AF_INET, AF_INET6}) {
    if (inet_pton(family, ip.c_str(), bytes) == 1 &&
        inet_ntop(family, bytes, text, sizeof(text)) != nullptr) {
      return std::string(text);
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("not an IP address: \"", ip, "\""));
}

}  // namespace

namespace internal {

absl::StatusOr<bssl::UniquePtr<ASN1_INTEGER>> RandomSerial() {
  uint8_t bytes[16];
  bssl::UniquePtr<BIGNUM> value;
  do {
    RAND_bytes(bytes, sizeof(bytes));
    value.reset(BN_bin2bn(bytes, sizeof(bytes), nullptr));
    if (value == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "serial");
  } while (BN_is_zero(value.get()));
  bssl::UniquePtr<ASN1_INTEGER> serial(BN_to_ASN1_INTEGER(value.get(), nullptr));
  if (serial == nullptr) return ErrorFromQueue(absl::StatusCode::kInternal, "serial");
  return serial;
}

}  // namespace internal

struct CertificateAuthority::Impl {
  std::string trust_domain;
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> signing_cert;
  // PEM of the CAs between a leaf and the root: the signing CA when it is an intermediate and
  // the ones above it. Appended to every leaf.
  std::string intermediates_pem;
  std::string roots_pem;
  // The earliest notAfter along the chain: no certificate may outlive its issuers.
  absl::Time chain_not_after;
};

namespace {

// The signed certificate, PEM-encoded, followed by the CA's chain up to (not including) a root.
absl::StatusOr<SignedCertificate> SignWithChain(const CertificateSpec& spec,
                                                const CertificateAuthority::Impl& ca) {
  absl::StatusOr<bssl::UniquePtr<X509>> cert = BuildCertificate(spec);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> pem = internal::CertificateToPem(cert->get());
  if (!pem.ok()) return pem.status();
  SignedCertificate out;
  out.chain_pem = absl::StrCat(*pem, ca.intermediates_pem);
  out.roots_pem = ca.roots_pem;
  out.leaf = internal::Describe(cert->get());
  return out;
}

// A certificate this CA signs for `subject_key`, valid from now (backdated for clock skew) for
// `lifetime`, never beyond the CA's own chain.
CertificateSpec IssuedFromNow(const CertificateAuthority::Impl& ca, EVP_PKEY* subject_key,
                              absl::Duration lifetime) {
  CertificateSpec spec;
  spec.issuer = ca.signing_cert.get();
  spec.subject_key = subject_key;
  spec.signing_key = ca.key.get();
  spec.not_before = absl::Now() - kClockSkewBackdate;
  spec.not_after = std::min(spec.not_before + lifetime, ca.chain_not_after);
  return spec;
}

// The identity a leaf certifies: the caller's when its authentication decided it, else the one
// the CSR names.
absl::StatusOr<SpiffeId> CertifiedIdentity(const internal::ParsedCsr& csr,
                                           const std::optional<SpiffeId>& caller_identity) {
  if (!caller_identity.has_value()) {
    absl::StatusOr<SpiffeId> named = internal::SingleSpiffeSan(csr);
    if (!named.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("CSR refused: ", named.status().message()));
    }
    return named;
  }
  const std::string expected = caller_identity->ToString();
  for (const std::string& uri : csr.uri_sans) {
    if (uri != expected) {
      return absl::PermissionDeniedError(
          absl::StrCat("CSR refused: it asks for ",
                       uri.size() > 256 ? absl::StrCat(uri.substr(0, 256), "...") : uri,
                       " but the caller is ", expected));
    }
  }
  return *caller_identity;
}

}  // namespace

CertificateAuthority::CertificateAuthority(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertificateAuthority::~CertificateAuthority() = default;

const std::string& CertificateAuthority::trust_domain() const { return impl_->trust_domain; }
std::string CertificateAuthority::RootsPem() const { return impl_->roots_pem; }
CertificateInfo CertificateAuthority::SigningCertificate() const {
  return internal::Describe(impl_->signing_cert.get());
}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::LoadOrCreate(
    const std::string& dir, const CaOptions& options) {
  if (!SpiffeId::Make(options.trust_domain, "ns", "sa").ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid trust domain '", options.trust_domain, "'"));
  }
  const std::string cert_path = PathJoin(dir, kCaCertFile);
  const std::string key_path = PathJoin(dir, kCaKeyFile);
  auto impl = std::make_unique<Impl>();
  impl->trust_domain = options.trust_domain;

  if (FileExists(cert_path)) {
    struct stat st;
    if (::stat(key_path.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(cert_path, " exists but its key ", key_path,
                                                        " does not; refusing to replace the root"));
    }
    if ((st.st_mode & 077) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(key_path, " is accessible by group or others (mode ",
                       absl::StrFormat("%04o", st.st_mode & 07777), "); it must be 0600"));
    }
    absl::StatusOr<std::string> cert_pem = ReadFile(cert_path);
    if (!cert_pem.ok()) return cert_pem.status();
    absl::StatusOr<std::string> key_pem = ReadFile(key_path);
    if (!key_pem.ok()) return key_pem.status();
    absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs =
        internal::ParsePemCertificates(*cert_pem);
    if (!certs.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(cert_path, ": ", certs.status().message()));
    }
    absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = ParseCaKey(*key_pem);
    if (!key.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(key_path, ": ", key.status().message()));
    }
    X509* root = certs->front().get();
    if (!X509_check_private_key(root, key->get())) {
      ERR_clear_error();
      return absl::FailedPreconditionError(
          absl::StrCat(key_path, " does not belong to ", cert_path));
    }
    if (X509_check_ca(root) == 0 || !IsSelfSigned(root)) {
      return absl::FailedPreconditionError(
          absl::StrCat(cert_path, " is not a self-signed CA certificate"));
    }
    impl->key = *std::move(key);
    impl->signing_cert = std::move(certs->front());
    absl::StatusOr<std::string> root_pem = internal::CertificateToPem(impl->signing_cert.get());
    if (!root_pem.ok()) return root_pem.status();
    impl->roots_pem = *std::move(root_pem);
  } else {
    // No root yet (a key without a certificate was never used to sign anything: replace it).
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus("cannot create CA directory", dir);
    }
    absl::StatusOr<PrivateKey> key = PrivateKey::GenerateP256();
    if (!key.ok()) return key.status();
    const absl::Time now = absl::Now();
    CertificateSpec spec;
    spec.subject_key = key->impl().key.get();
    spec.signing_key = key->impl().key.get();
    spec.subject = {{NID_organizationName, options.trust_domain}};
    spec.not_before = now - kRootBackdate;
    spec.not_after = now + options.root_lifetime;
    spec.is_ca = true;
    absl::StatusOr<bssl::UniquePtr<X509>> root = BuildCertificate(spec);
    if (!root.ok()) return root.status();
    absl::StatusOr<std::string> key_pem = key->ToPem();
    if (!key_pem.ok()) return key_pem.status();
    absl::StatusOr<std::string> cert_pem = internal::CertificateToPem(root->get());
    if (!cert_pem.ok()) return cert_pem.status();
    // The key goes first: a certificate on disk always has its key next to it.
    if (absl::Status s = WriteFileAtomically(key_path, *key_pem, 0600); !s.ok()) return s;
    if (absl::Status s = WriteFileAtomically(cert_path, *cert_pem, 0644); !s.ok()) return s;
    impl->key = bssl::UpRef(key->impl().key);
    impl->signing_cert = *std::move(root);
    impl->roots_pem = *std::move(cert_pem);
  }
  impl->chain_not_after = internal::Asn1TimeToAbsl(X509_get0_notAfter(impl->signing_cert.get()));
  if (impl->chain_not_after <= absl::Now()) {
    return absl::FailedPreconditionError(absl::StrCat("CA certificate ", cert_path, " expired at ",
                                                      absl::FormatTime(impl->chain_not_after)));
  }
  return std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::LoadPlugin(
    const std::string& dir, const CaOptions& options) {
  if (!SpiffeId::Make(options.trust_domain, "ns", "sa").ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid trust domain '", options.trust_domain, "'"));
  }
  absl::StatusOr<std::string> cert_pem = ReadFile(PathJoin(dir, kCaCertFile));
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile(PathJoin(dir, kCaKeyFile));
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> root_pem = ReadFile(PathJoin(dir, kRootCertFile));
  if (!root_pem.ok()) return root_pem.status();
  std::optional<std::string> chain_pem;
  if (const std::string chain_path = PathJoin(dir, kCertChainFile); FileExists(chain_path)) {
    absl::StatusOr<std::string> contents = ReadFile(chain_path);
    if (!contents.ok()) return contents.status();
    chain_pem = *std::move(contents);
  }

  auto certs = internal::ParsePemCertificates(*cert_pem);
  if (!certs.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(kCaCertFile, ": ", certs.status().message()));
  }
  auto roots = internal::ParsePemCertificates(*root_pem);
  if (!roots.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(kRootCertFile, ": ", roots.status().message()));
  }
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key = ParseCaKey(*key_pem);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(kCaKeyFile, ": ", key.status().message()));
  }
  X509* signing = certs->front().get();
  if (!X509_check_private_key(signing, key->get())) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(kCaKeyFile, " does not belong to ", kCaCertFile));
  }
  if (X509_check_ca(signing) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(kCaCertFile, " is not a CA certificate"));
  }

  // Everything between a leaf and the roots, signing CA first.
  std::vector<bssl::UniquePtr<X509>> intermediates;
  auto is_root = [&](X509* cert) {
    for (const auto& root : *roots) {
      if (X509_cmp(cert, root.get()) == 0) return true;
    }
    return IsSelfSigned(cert);
  };
  if (!is_root(signing)) intermediates.push_back(bssl::UpRef(certs->front()));
  if (chain_pem.has_value()) {
    auto chain = internal::ParsePemCertificates(*chain_pem);
    if (!chain.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kCertChainFile, ": ", chain.status().message()));
    }
    for (auto& cert : *chain) {
      if (is_root(cert.get()) || X509_cmp(cert.get(), signing) == 0) continue;
      intermediates.push_back(std::move(cert));
    }
  }

  absl::StatusOr<bssl::UniquePtr<X509_STORE>> store = internal::MakeStore(*roots);
  if (!store.ok()) return store.status();
  bssl::UniquePtr<STACK_OF(X509)> untrusted(sk_X509_new_null());
  for (const auto& cert : intermediates) {
    if (untrusted == nullptr || !bssl::PushToStack(untrusted.get(), bssl::UpRef(cert))) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "allocating stack");
    }
  }
  if (auto failure =
          internal::VerifyChain(signing, untrusted.get(), store->get(), 0, std::nullopt)) {
    return absl::FailedPreconditionError(absl::StrCat(
        kCaCertFile, " does not verify to ", kRootCertFile, ": ", failure->status.message()));
  }

  auto impl = std::make_unique<Impl>();
  impl->trust_domain = options.trust_domain;
  impl->key = *std::move(key);
  impl->signing_cert = std::move(certs->front());
  impl->roots_pem = *root_pem;
  if (!impl->roots_pem.empty() && impl->roots_pem.back() != '\n') impl->roots_pem += '\n';
  impl->chain_not_after = internal::Asn1TimeToAbsl(X509_get0_notAfter(impl->signing_cert.get()));
  for (const auto& cert : intermediates) {
    absl::StatusOr<std::string> pem = internal::CertificateToPem(cert.get());
    if (!pem.ok()) return pem.status();
    impl->intermediates_pem += *pem;
    impl->chain_not_after =
        std::min(impl->chain_not_after, internal::Asn1TimeToAbsl(X509_get0_notAfter(cert.get())));
  }
  if (impl->chain_not_after <= absl::Now()) {
    return absl::FailedPreconditionError(
        absl::StrCat("plug-in CA chain expired at ", absl::FormatTime(impl->chain_not_after)));
  }
  return std::unique_ptr<CertificateAuthority>(new CertificateAuthority(std::move(impl)));
}

absl::StatusOr<SignedCertificate> CertificateAuthority::Sign(const SignRequest& request) const {
  if (request.lifetime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("requested lifetime must be positive");
  }
  absl::StatusOr<internal::ParsedCsr> csr = internal::ParseCsr(request.csr_pem);
  if (!csr.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("CSR refused: ", csr.status().message()));
  }
  absl::StatusOr<SpiffeId> identity = CertifiedIdentity(*csr, request.identity);
  if (!identity.ok()) return identity.status();
  if (identity->trust_domain() != impl_->trust_domain) {
    return absl::PermissionDeniedError(absl::StrCat("CSR refused: identity ", identity->ToString(),
                                                    " is outside trust domain ",
                                                    impl_->trust_domain));
  }
  if (request.allowed_identity.has_value() && *identity != *request.allowed_identity) {
    return absl::PermissionDeniedError(absl::StrCat("CSR refused: identity ", identity->ToString(),
                                                    " is not the identity the caller may request (",
                                                    request.allowed_identity->ToString(), ")"));
  }
  const absl::Time not_before = request.not_before.value_or(absl::Now() - kClockSkewBackdate);
  const absl::Time not_after = std::min(not_before + request.lifetime, impl_->chain_not_after);
  if (not_after <= not_before) {
    return absl::FailedPreconditionError(
        absl::StrCat("CA validity ends at ", absl::FormatTime(impl_->chain_not_after),
                     ", before the requested start ", absl::FormatTime(not_before)));
  }
  CertificateSpec spec;
  spec.issuer = impl_->signing_cert.get();
  spec.subject_key = csr->public_key.get();
  spec.signing_key = impl_->key.get();
  spec.not_before = not_before;
  spec.not_after = not_after;
  spec.uri_san = *std::move(identity);
  return SignWithChain(spec, *impl_);
}

absl::StatusOr<SignedCertificate> CertificateAuthority::IssueIntermediate(
    const PrivateKey& key, const std::string& common_name, absl::Duration lifetime) const {
  if (lifetime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("requested lifetime must be positive");
  }
  CertificateSpec spec = IssuedFromNow(*impl_, key.impl().key.get(), lifetime);
  spec.subject = {{NID_organizationName, impl_->trust_domain}, {NID_commonName, common_name}};
  spec.is_ca = true;
  return SignWithChain(spec, *impl_);
}

absl::StatusOr<SignedCertificate> CertificateAuthority::IssueServerCertificate(
    const PrivateKey& key, const std::vector<std::string>& dns_names,
    absl::Duration lifetime) const {
  if (dns_names.empty()) return absl::InvalidArgumentError("no DNS name given");
  return IssueServingCertificate(key, ServerNames{dns_names, {}, std::nullopt}, lifetime);
}

absl::StatusOr<SignedCertificate> CertificateAuthority::IssueServingCertificate(
    const PrivateKey& key, const ServerNames& names, absl::Duration lifetime) const {
  if (lifetime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("requested lifetime must be positive");
  }
  if (names.dns.empty() && names.ips.empty() && !names.spiffe_id.has_value()) {
    return absl::InvalidArgumentError(
        "a server certificate needs a DNS name, an IP or a SPIFFE ID");
  }
  for (const std::string& name : names.dns) {
    if (name.empty() || name.size() > 253 ||
        name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.*") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("not a DNS name: \"", name, "\""));
    }
  }
  CertificateSpec spec = IssuedFromNow(*impl_, key.impl().key.get(), lifetime);
  for (const std::string& ip : names.ips) {
    absl::StatusOr<std::string> canonical = CanonicalIp(ip);
    if (!canonical.ok()) return canonical.status();
    spec.ip_sans.push_back(*std::move(canonical));
  }
  if (!names.dns.empty()) spec.subject = {{NID_commonName, names.dns.front()}};
  spec.dns_sans = names.dns;
  spec.uri_san = names.spiffe_id;
  return SignWithChain(spec, *impl_);
}

absl::StatusOr<std::string> CertificateAuthority::IssueRevocationList(
    const std::vector<std::string>& revoked_serials_hex, absl::Duration lifetime) const {
  if (lifetime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("requested lifetime must be positive");
  }
  const absl::Time this_update = absl::Now() - kClockSkewBackdate;
  bssl::UniquePtr<ASN1_TIME> last(ASN1_TIME_set(nullptr, absl::ToTimeT(this_update)));
  bssl::UniquePtr<ASN1_TIME> next(ASN1_TIME_set(nullptr, absl::ToTimeT(this_update + lifetime)));
  bssl::UniquePtr<X509_CRL> crl(X509_CRL_new());
  if (last == nullptr || next == nullptr || crl == nullptr ||
      !X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) ||
      !X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(impl_->signing_cert.get())) ||
      !X509_CRL_set1_lastUpdate(crl.get(), last.get()) ||
      !X509_CRL_set1_nextUpdate(crl.get(), next.get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "building CRL");
  }
  for (const std::string& hex : revoked_serials_hex) {
    if (hex.empty() || hex.size() % 2 != 0 ||
        hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("not a hex serial: \"", hex, "\""));
    }
    const std::string bytes = absl::HexStringToBytes(hex);
    bssl::UniquePtr<ASN1_INTEGER> serial(ASN1_INTEGER_new());
    bssl::UniquePtr<X509_REVOKED> revoked(X509_REVOKED_new());
    if (serial == nullptr || revoked == nullptr ||
        !ASN1_STRING_set(serial.get(), bytes.data(), static_cast<int>(bytes.size())) ||
        !X509_REVOKED_set_serialNumber(revoked.get(), serial.get()) ||
        !X509_REVOKED_set_revocationDate(revoked.get(), last.get()) ||
        !X509_CRL_add0_revoked(crl.get(), revoked.get())) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "adding a revoked serial");
    }
    revoked.release();  // owned by the CRL now
  }
  // RFC 5280 5.2: the issuer's key identifier tells apart CAs of the same name (verification
  // then skips a CRL of another CA instead of failing its signature), and the CRL number grows
  // with every CRL this CA issues.
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, impl_->signing_cert.get(), nullptr, nullptr, crl.get(), 0);
  bssl::UniquePtr<X509_EXTENSION> akid(
      X509V3_EXT_nconf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  bssl::UniquePtr<ASN1_INTEGER> number(ASN1_INTEGER_new());
  if (akid == nullptr || !X509_CRL_add_ext(crl.get(), akid.get(), -1) || number == nullptr ||
      !ASN1_INTEGER_set_uint64(number.get(),
                               static_cast<std::uint64_t>(absl::ToUnixMicros(absl::Now()))) ||
      !X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, 0)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "adding CRL extensions");
  }
  if (!X509_CRL_sort(crl.get()) || !X509_CRL_sign(crl.get(), impl_->key.get(), EVP_sha256())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "signing CRL");
  }
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || !PEM_write_bio_X509_CRL(bio.get(), crl.get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "encoding CRL");
  }
  const std::uint8_t* data = nullptr;
  std::size_t length = 0;
  BIO_mem_contents(bio.get(), &data, &length);
  return std::string(reinterpret_cast<const char*>(data), length);
}

}  // namespace nodeward::crypto
