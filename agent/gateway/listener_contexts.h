// The gateway's certificates, following their sources without a restart: for each listener
// port the TLS context that terminates its SIMPLE, MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL
// servers, each server built from
//  - serverCertificate / privateKey / caCertificates files, looked at again by stat at most
//    once per recheck interval when a connection needs the port (as TLS origination does);
//  - credentialName Secrets, read from each new snapshot (policy::ResolveCredentialName);
//  - for ISTIO_MUTUAL, the gateway's own mesh certificate and roots, as SDS delivers them.
// A change that does not build (a half-written file, a Secret with a bad key) keeps the last
// good certificate of that server serving, and its status says why; other servers and ports
// are untouched. New connections get the new context; live ones keep the one they started with.
// Safe to use from every loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/gateway/gateway_config.h"
#include "common/file_stamp.h"
#include "crypto/gateway_tls.h"
#include "crypto/tls.h"

namespace nodeward::gateway {

enum class CredentialState {
  kServing,      // built from what its source holds now
  kStale,        // what its source holds now does not build; the last good one serves
  kUnavailable,  // nothing has built yet: handshakes for this server are refused
};
// "serving", "stale", "unavailable": for the CLI and metric labels.
absl::string_view CredentialStateName(CredentialState state);

struct ServerCredentialStatus {
  uint32_t port = 0;
  std::string server;              // "Gateway ns/name servers[i]"
  std::vector<std::string> hosts;  // the SNIs it serves
  std::string mode;                // SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL
  // Where the material comes from: file paths, "Secret ns/name (keys)", or the mesh identity.
  std::vector<std::string> sources;
  CredentialState state = CredentialState::kUnavailable;
  absl::Status last_error;  // why the current material does not build, when it does not
  std::optional<crypto::ServedCertificate> certificate;  // what is served
  absl::Time built = absl::InfinitePast();               // when that was built
};

// One served SNI and its certificate: what `nodewardctl` shows per host.
struct SniCertificate {
  uint32_t port = 0;
  std::string sni;
  std::string server;
  crypto::ServedCertificate certificate;
};

class ListenerContexts {
 public:
  struct Options {
    absl::Duration recheck_interval = absl::Seconds(1);
  };

  ListenerContexts() : ListenerContexts(Options{}) {}
  explicit ListenerContexts(Options options);
  ~ListenerContexts();

  // A new configuration. Servers whose settings and material did not change keep their
  // contexts (so no handshake is affected); the others are built again.
  void Update(std::shared_ptr<const GatewayConfig> config, absl::Time now = absl::Now());

  // The gateway's own mesh certificate chain, key and roots (for ISTIO_MUTUAL servers).
  void SetMeshCredentials(crypto::TlsCredentials credentials, std::string roots_pem,
                          absl::Time now = absl::Now());

  // The context for TLS terminated on `port`, first rebuilt if a file of it changed. Null
  // when the port terminates nothing, or none of its servers has ever built.
  std::shared_ptr<const crypto::TlsContext> ForPort(uint32_t port, absl::Time now = absl::Now());

  std::vector<ServerCredentialStatus> Status() const;
  std::vector<SniCertificate> Certificates() const;

 private:
  struct Server;
  struct Port {
    std::vector<std::string> keys;  // of the servers terminated here, in chain order
    std::shared_ptr<const crypto::TlsContext> context;
    absl::Time checked = absl::InfinitePast();
  };

  enum class Source : int;  // where a server's material comes from

  void Refresh(Server& server, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Refreshes the servers of `port` whose material comes from `source`, and the port's
  // context when one of them changed.
  void RefreshPort(uint32_t number, Port& port, Source source, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RebuildPort(uint32_t number, Port& port) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const Options options_;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const GatewayConfig> config_ ABSL_GUARDED_BY(mutex_);
  std::optional<crypto::TlsCredentials> mesh_credentials_ ABSL_GUARDED_BY(mutex_);
  std::string mesh_roots_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::unique_ptr<Server>> servers_ ABSL_GUARDED_BY(mutex_);
  std::map<uint32_t, Port> ports_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::gateway
