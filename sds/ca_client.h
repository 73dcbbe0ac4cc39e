// Upstream CA client: istio.v1.auth.IstioCertificateService over TLS with a bearer token, so
// istiod (or `nodeward-sds --serve-ca`) signs this node's certificates. Each request names the
// workload identity it is for in the ImpersonatedIdentity metadata, as ztunnel's do.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "sds/certificate_signer.h"

namespace grpc {
class Channel;
}

namespace nodeward::sds {

struct IstioCaClientOptions {
  // host:port of the CA.
  std::string address;
  // PEM roots the CA's serving certificate must chain to.
  std::string root_cert_pem;
  // The trust bundle served before the CA's first answer, as istio-agent serves the root it
  // was given (usually the same as `root_cert_pem`); the roots of every answer replace it.
  // Empty: nothing until the first answer.
  std::string initial_trust_bundle_pem;
  // Bearer token file, re-read for every request because projected tokens rotate.
  std::string token_file;
  // When set, the CA's certificate must carry this SPIFFE ID as URI SAN (nodeward-sds
  // --serve-ca serves a SPIFFE certificate, which has no DNS name). Otherwise the usual host
  // name check applies, against `tls_server_name` when set (istiod.istio-system.svc).
  std::optional<SpiffeId> server_identity;
  std::string tls_server_name;
  // Sent as metadata ClusterID, as istio-agent does, when not empty.
  std::string cluster_id;
  absl::Duration timeout = absl::Seconds(10);
};

// Parses a CreateCertificate answer (leaf first, root last; an entry may itself hold several
// PEM blocks) into the chain to serve and the root to trust.
absl::StatusOr<SignedChain> SplitIstioCertChain(const std::vector<std::string>& cert_chain);

class IstioCaSigner : public CertificateSigner {
 public:
  static absl::StatusOr<std::unique_ptr<IstioCaSigner>> Create(IstioCaClientOptions options);

  absl::StatusOr<SignedChain> Sign(const std::string& csr_pem, const SpiffeId& identity,
                                   absl::Duration lifetime) override;
  std::optional<std::string> KnownRoots() override;
  absl::StatusOr<bool> Reload() override { return false; }

 private:
  IstioCaSigner(IstioCaClientOptions options, std::shared_ptr<grpc::Channel> channel);

  const IstioCaClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace nodeward::sds
