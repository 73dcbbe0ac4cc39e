// The ingress gateway's TLS servers: one context per listener port that picks, during the
// handshake, the server (certificate, client verification, versions, ciphers) for the
// client's SNI, as Envoy's filter chains do for Istio's Gateway servers. Connections are
// ordinary TlsEngine::Server engines over memory buffers, so any event loop drives them.
//
// What BoringSSL gives these settings, and how they map Istio's ServerTLSSettings:
//  - Versions TLS 1.0 to 1.3 are all available (this BoringSSL still has 1.0 and 1.1); the
//    defaults are Envoy's for servers, TLS 1.2 to 1.3.
//  - TLS 1.3 cipher suites (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) are fixed in
//    BoringSSL, as in Envoy: cipherSuites order and restrict TLS 1.2 and below. Names are
//    Envoy's (BoringSSL's: "ECDHE-ECDSA-AES128-GCM-SHA256", "[A|B]" for equal preference);
//    TLS 1.3 names are accepted and ignored; any other unknown name fails the server. Without
//    cipherSuites, Istio's default list for gateways applies.
//  - Session resumption is off: a resumed session would skip the client certificate checks
//    and could cross from one server's SNI to another's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"
#include "crypto/tls.h"

namespace nodeward::crypto {

enum class TlsVersion { kDefault, kTls1_0, kTls1_1, kTls1_2, kTls1_3 };

// One Gateway server as the gateway terminates it.
struct GatewayServerSettings {
  enum class ClientAuth {
    kNone,      // SIMPLE
    kRequired,  // MUTUAL: a certificate chaining to client_ca_pem
    kOptional,  // OPTIONAL_MUTUAL: verified when presented
    kMesh,      // ISTIO_MUTUAL: a SPIFFE certificate of the mesh, chaining to client_ca_pem
  };
  // Names the server in errors and in the CLI, e.g. "Gateway istio-ingress/public servers[1]".
  std::string name;
  ClientAuth client_auth = ClientAuth::kNone;
  // The server's chain and key; for kMesh, the gateway's own mesh certificate.
  TlsCredentials credentials;
  // The roots client certificates must chain to: caCertificates, or the mesh roots for kMesh.
  std::string client_ca_pem;
  // caCrl (PEM, one or more): as in Envoy, every CA of the client's chain then needs a CRL,
  // and a certificate listed is refused (kClientCertificateUntrusted).
  std::string client_crl_pem;
  // Client certificate checks, when set. subjectAltNames: any one matches a DNS, URI or IP SAN.
  // verifyCertificateSpki (base64 SHA-256 of the SubjectPublicKeyInfo) and
  // verifyCertificateHash (hex SHA-256 of the DER, colons allowed): as in Envoy, a match in
  // either list accepts.
  std::vector<std::string> subject_alt_names;
  std::vector<std::string> verify_certificate_spki;
  std::vector<std::string> verify_certificate_hash;
  TlsVersion min_version = TlsVersion::kDefault;
  TlsVersion max_version = TlsVersion::kDefault;
  std::vector<std::string> cipher_suites;
};

// The certificate a server presents, for the CLI: subject, SANs and validity.
struct ServedCertificate {
  CertificateInfo info;
  std::vector<std::string> subject_alt_names;  // "DNS:...", "URI:...", "IP:..."
};

// The two pins a Gateway's verifyCertificateSpki and verifyCertificateHash compare a client
// certificate with, for the first certificate of `pem`: what an operator writes there.
struct CertificatePins {
  std::string spki_sha256_base64;
  std::string sha256_hex;  // lowercase, without colons
};
absl::StatusOr<CertificatePins> ComputeCertificatePins(std::string_view pem);

// One server, built and checked once: shared by the listener contexts that include it, so a
// rebuilt port reuses the servers whose credentials did not change.
class GatewayServerContext {
 public:
  // Errors name the server and the setting: an unparsable certificate or key, a key that is
  // not the certificate's, a CA that does not parse, an unknown cipher, versions out of order.
  static absl::StatusOr<std::shared_ptr<const GatewayServerContext>> Create(
      const GatewayServerSettings& settings);

  const std::string& name() const;
  GatewayServerSettings::ClientAuth client_auth() const;
  const ServedCertificate& certificate() const;

  ~GatewayServerContext();
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit GatewayServerContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Which server serves a ClientHello's SNI (nullopt when it has none): an index into the
// servers of the listener, or nullopt to refuse. Called on the engine's thread during each
// handshake; must be safe to call from several threads at once.
using GatewayServerSelector =
    std::function<std::optional<std::size_t>(std::optional<absl::string_view> sni)>;

// A server TlsContext for one listener port, for TlsEngine::Server.
absl::StatusOr<std::shared_ptr<const TlsContext>> MakeGatewayListenerContext(
    std::vector<std::shared_ptr<const GatewayServerContext>> servers,
    GatewayServerSelector selector);

enum class GatewayHandshakeFailure {
  kNone,
  kNoServerForSni,              // the selector refused the SNI (unknown, or none)
  kClientCertificateRequired,   // MUTUAL or ISTIO_MUTUAL: the client presented none
  kClientCertificateUntrusted,  // the chain does not verify: unknown CA, expired, not yet valid
  kSubjectAltNameMismatch,      // none of subjectAltNames is in the certificate
  kCertificatePinMismatch,      // neither verifyCertificateSpki nor verifyCertificateHash matches
  kNotMeshIdentity,             // ISTIO_MUTUAL: no SPIFFE ID of the mesh's trust domain
  kProtocolVersion,             // no TLS version in common
  kNoSharedCipher,
  kClientAlert,  // the client gave up (e.g. it does not trust the certificate)
  kMalformed,    // anything else BoringSSL refuses in the client's messages
};
// "none", "no_server_for_sni", "client_certificate_required", "client_certificate_untrusted",
// "subject_alt_name_mismatch", "certificate_pin_mismatch", "not_mesh_identity",
// "protocol_version", "no_shared_cipher", "client_alert", "malformed": metric labels.
absl::string_view GatewayHandshakeFailureName(GatewayHandshakeFailure failure);

// What a gateway handshake chose and, when it failed, why, typed.
struct GatewayHandshake {
  std::optional<std::size_t> server;  // the selector's answer
  std::optional<std::string> sni;
  GatewayHandshakeFailure failure = GatewayHandshakeFailure::kNone;
  std::string version;  // "TLSv1.3", once negotiated
  std::string cipher;   // BoringSSL's name, once negotiated
  // The client's certificate once verified (MUTUAL, OPTIONAL_MUTUAL when given, ISTIO_MUTUAL).
  std::optional<ServedCertificate> client_certificate;
  std::optional<SpiffeId> client_identity;  // ISTIO_MUTUAL
};

// For an engine made from a MakeGatewayListenerContext context; an empty record otherwise.
GatewayHandshake InspectGatewayHandshake(const TlsEngine& engine);

}  // namespace nodeward::crypto
