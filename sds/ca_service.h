// istio.v1.auth.IstioCertificateService served by `nodeward-sds --serve-ca`: one CA for a
// multi-node cluster, and for workloads that ask it directly as they ask istiod. A caller's
// bearer token is either a static node token (naming its node and, optionally, the only
// identities that node may request, which the CSR names) or a workload's service-account
// token (checked with the Kubernetes TokenReview API; the certificate is for that service
// account, and a CSR naming anything else is refused).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "sds/certificate_signer.h"

namespace grpc {
class Server;
}

namespace nodeward::sds {

struct CaCaller {
  // A node: what it may request.
  std::string node;
  // nullopt: any identity of the trust domain.
  std::optional<absl::flat_hash_set<SpiffeId>> allowed_identities;
  // A workload: the only identity it gets, from how it authenticated.
  std::optional<SpiffeId> workload;

  std::string Describe() const;
};

// One way of telling who holds a bearer token.
class CaAuthenticator {
 public:
  virtual ~CaAuthenticator() = default;
  // NotFound when the token is not this authenticator's to judge (the next one is asked);
  // Unauthenticated when it is and is not valid; Unavailable when it cannot be judged now.
  virtual absl::StatusOr<CaCaller> Authenticate(absl::string_view token) = 0;
};

// Tokens file: one caller per line, "<token> <node-name> [spiffe-id ...]"; blank lines and
// '#' comments ignored. Errors name the line.
absl::StatusOr<absl::flat_hash_map<std::string, CaCaller>> ParseCaTokens(absl::string_view text);

class CaTokenStore : public CaAuthenticator {
 public:
  explicit CaTokenStore(std::string path) : path_(std::move(path)) {}
  // Re-reads the file; on error the previous tokens stay in force.
  absl::Status Reload();
  std::optional<CaCaller> Lookup(absl::string_view token) const;
  absl::StatusOr<CaCaller> Authenticate(absl::string_view token) override;

 private:
  const std::string path_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, CaCaller> callers_ ABSL_GUARDED_BY(mu_);
};

struct CaServiceOptions {
  std::string listen_address;  // host:port
  std::string trust_domain;
  // Serving certificate and key (PEM), issued by the same CA.
  std::string server_cert_chain_pem;
  std::string server_key_pem;
  absl::Duration default_lifetime = absl::Hours(24);
  absl::Duration max_lifetime = absl::Hours(24 * 7);
};

class CaServer {
 public:
  // `signer` and `authenticators` (asked in order) must outlive the server.
  CaServer(CertificateSigner* signer, std::vector<CaAuthenticator*> authenticators,
           CaServiceOptions options);
  ~CaServer();
  absl::Status Start();
  void Shutdown();
  // The port bound (useful when listening on port 0).
  int port() const { return port_; }

  class Service;

 private:
  CaServiceOptions options_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace nodeward::sds
