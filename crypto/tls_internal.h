// Internal to crypto/: the pieces of tls.cc that contexts built in other files of crypto/ (the
// gateway's, gateway_tls.cc) run on, so their connections are ordinary TlsEngines.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "crypto/tls.h"

namespace nodeward::crypto::internal {

struct TlsContextFactory {
  // A server TlsContext over `ctx`, configured by the caller (callbacks and all). `owner` is
  // kept alive as long as the context: what the callbacks reach through the SSL_CTX's ex_data.
  static std::shared_ptr<const TlsContext> WrapServer(bssl::UniquePtr<SSL_CTX> ctx,
                                                      std::shared_ptr<const void> owner);
  static SSL* Ssl(const TlsEngine& engine);
};

// The certificate chain (leaf first) and key of `credentials` into `ctx`; the leaf into
// `leaf_out` when not null. Keys may be EC (any curve) or RSA of 2048 bits or more.
absl::Status UseCredentials(SSL_CTX* ctx, const TlsCredentials& credentials,
                            bssl::UniquePtr<X509>* leaf_out);

// Every CRL of `pem` into `store`, which from then on checks each certificate of a chain
// against its issuer's CRL (one missing for any CA fails verification, as Envoy's caCrl does).
absl::Status AddRevocationListsTo(X509_STORE* store, std::string_view pem);

// The connection under `engine` (null when it failed to start).
SSL* EngineSsl(const TlsEngine& engine);

// Makes the engine on `ssl` report `status` as the reason its handshake failed, instead of
// BoringSSL's generic error: for callbacks that refuse a connection.
void SetHandshakeFailure(SSL* ssl, absl::Status status);

// "DNS:name", "URI:uri", "IP:<address>" for each SAN of `cert`.
std::vector<std::string> SubjectAltNames(X509* cert);
// Whether `cert` carries `name` as a SAN: a DNS name (wildcards as RFC 6125 allows), an IP
// address or a URI, as DestinationRule and Gateway subjectAltNames are written.
bool CertificateMatchesName(X509* cert, const std::string& name);

}  // namespace nodeward::crypto::internal
