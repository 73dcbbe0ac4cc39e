// A certificate authority for SPIFFE workload certificates. Holds the CA key; only
// nodeward-sds (never the agent) instantiates it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"

namespace nodeward::crypto {

struct CaOptions {
  std::string trust_domain = std::string(kDefaultTrustDomain);
  // Lifetime of a self-signed root created on first use.
  absl::Duration root_lifetime = absl::Hours(24 * 365 * 10);
};

struct SignRequest {
  std::string csr_pem;
  absl::Duration lifetime = absl::Hours(24);
  // The identity to certify when the caller's authentication decides it (istiod's way): the
  // CSR's URI SANs, if it has any, must all be this identity; its other SANs (DNS names, IPs)
  // are not certified. Unset: the CSR must name its identity as its single SAN.
  std::optional<SpiffeId> identity;
  // When set, the CSR's identity must be exactly this one (the caller's authorisation).
  std::optional<SpiffeId> allowed_identity;
  // Start of validity; defaults to now minus a small backdate for clock skew. Tests use it to
  // make not-yet-valid and expired certificates.
  std::optional<absl::Time> not_before;
};

struct SignedCertificate {
  std::string chain_pem;  // leaf first, then intermediates; never the root
  std::string roots_pem;  // the trust bundle to verify the chain with
  CertificateInfo leaf;
};

class CertificateAuthority {
 public:
  // Self-signed root kept in `dir` (ca-cert.pem, ca-key.pem with mode 0600): created on first
  // use, reloaded afterwards. The trust domain of a reloaded CA comes from `options`.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> LoadOrCreate(
      const std::string& dir, const CaOptions& options = {});

  // Plug-in CA in Istio's cacerts layout: ca-cert.pem + ca-key.pem (the signing CA, root or
  // intermediate), cert-chain.pem (signing CA up to the root, optional), root-cert.pem.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> LoadPlugin(
      const std::string& dir, const CaOptions& options = {});

  // Signs into a leaf: the SPIFFE ID as only URI SAN, digitalSignature (and keyEncipherment
  // for an RSA key, as istiod sets it), serverAuth + clientAuth, random 128-bit serial,
  // lifetime clamped to the CA's own validity. The CSR's key may be ECDSA P-256 or P-384, or
  // RSA of 2048, 3072 or 4096 bits.
  absl::StatusOr<SignedCertificate> Sign(const SignRequest& request) const;

  // Signs a subordinate CA (CA:TRUE, pathlen 0, keyCertSign|cRLSign, subject
  // O=<trust domain>, CN=<common_name>) for `key`, e.g. one per cluster under a shared root.
  // The result's chain_pem is the new CA followed by this CA's own intermediates, which is
  // what a plug-in CA's cert-chain.pem needs (append the root for Istio's layout).
  absl::StatusOr<SignedCertificate> IssueIntermediate(const PrivateKey& key,
                                                      const std::string& common_name,
                                                      absl::Duration lifetime) const;

  // Signs a TLS server certificate for a host outside the mesh (tests, the sandbox): `dns_names`
  // as DNS SANs (the first also as subject CN), no SPIFFE ID, serverAuth + clientAuth.
  absl::StatusOr<SignedCertificate> IssueServerCertificate(
      const PrivateKey& key, const std::vector<std::string>& dns_names,
      absl::Duration lifetime) const;
  // The same with every name a server is reached by: DNS names (the first also as subject CN),
  // IP addresses and a SPIFFE ID, at least one of them. A gRPC client checks the host name of
  // its target against the DNS and IP SANs; a SPIFFE-aware one checks the URI.
  struct ServerNames {
    std::vector<std::string> dns;
    std::vector<std::string> ips;
    std::optional<SpiffeId> spiffe_id;
  };
  absl::StatusOr<SignedCertificate> IssueServingCertificate(const PrivateKey& key,
                                                            const ServerNames& names,
                                                            absl::Duration lifetime) const;

  // A CRL (PEM) signed by this CA, revoking the certificates it issued with these serials
  // (`CertificateInfo::serial_hex`), valid from now for `lifetime`: what a DestinationRule's
  // caCrl names (tests, the sandbox). An empty list makes a CRL that revokes nothing.
  absl::StatusOr<std::string> IssueRevocationList(
      const std::vector<std::string>& revoked_serials_hex, absl::Duration lifetime) const;

  const std::string& trust_domain() const;
  std::string RootsPem() const;
  CertificateInfo SigningCertificate() const;

  ~CertificateAuthority();
  struct Impl;

 private:
  explicit CertificateAuthority(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nodeward::crypto
