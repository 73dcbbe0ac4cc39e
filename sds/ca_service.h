// istio.v1.auth.IstioCertificateService served by `nodeward-sds --serve-ca`: one CA for a
// multi-node cluster. Callers are nodes, authenticated by bearer token; each token names its
// node and, optionally, the only identities that node may request.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "crypto/spiffe_id.h"
#include "sds/certificate_signer.h"

namespace grpc {
class Server;
}

namespace nodeward::sds {

struct CaCaller {
  std::string node;
  // nullopt: any identity of the trust domain.
  std::optional<absl::flat_hash_set<crypto::SpiffeId>> allowed_identities;
};

// Tokens file: one caller per line, "<token> <node-name> [spiffe-id ...]"; blank lines and
// '#' comments ignored. Errors name the line.
absl::StatusOr<absl::flat_hash_map<std::string, CaCaller>> ParseCaTokens(absl::string_view text);

class CaTokenStore {
 public:
  explicit CaTokenStore(std::string path) : path_(std::move(path)) {}
  // Re-reads the file; on error the previous tokens stay in force.
  absl::Status Reload();
  std::optional<CaCaller> Lookup(absl::string_view token) const;

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
  // `signer` and `tokens` must outlive the server.
  CaServer(CertificateSigner* signer, CaTokenStore* tokens, CaServiceOptions options);
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
