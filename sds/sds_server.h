// Envoy SDS v3 (SecretDiscoveryService: StreamSecrets, DeltaSecrets, FetchSecrets) on Unix
// sockets, serving the IdentityManager's certificates by SPIFFE ID, the caller's own as
// "default", and the trust bundle as ROOTCA.
//
// Calls are served by gRPC's callback API: an open stream costs memory (a few KiB), never a
// thread; each caller (its pod, else its user) may have `max_calls_per_caller` streams and
// fetches open at once, and the next one is refused with RESOURCE_EXHAUSTED.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sds/authorizer.h"
#include "sds/caller.h"
#include "sds/identity_manager.h"
#include "sds/secret_stream.h"

namespace grpc {
class Server;
}

namespace nodeward::sds {

class PeerListener;

struct SdsServerOptions {
  // The node's socket (mode 0660): any identity this node may hold.
  std::string socket_path = "/var/run/nodeward/sds.sock";
  // Longest a FetchSecrets call waits for a certificate when the caller set no deadline.
  absl::Duration fetch_timeout = absl::Seconds(30);
  // A socket for the proxies of pods (mode 0666, to be mounted into pods): a caller gets only
  // its own identity, as "default" or by SPIFFE ID, and ROOTCA. Empty: none.
  std::string workload_socket_path;
  int max_calls_per_caller = 128;
  // How often names refused to a stream, or "default" asked by a caller not yet known to be
  // in a pod, are tried again.
  absl::Duration recheck_interval = absl::Seconds(5);
  // Tells the pods of callers, so "default" means something and limits count per pod. May be
  // null: callers are then told apart by user only.
  WorkloadResolver* workloads = nullptr;
};

struct SdsServerStats {
  std::int64_t open_calls = 0;
  std::int64_t calls_refused_over_limit = 0;
  std::int64_t nacks = 0;
  std::array<std::int64_t, kResourceErrorKinds> resource_errors{};
};

class SdsServer {
 public:
  // `manager`, `authorizer` and `options.workloads` must outlive the server.
  SdsServer(IdentityManager* manager, IdentityAuthorizer* authorizer, SdsServerOptions options);
  ~SdsServer();

  // Binds the sockets (replacing stale ones) and starts serving.
  absl::Status Start();
  // Ends every call (clients see UNAVAILABLE/CANCELLED and reconnect) and stops serving.
  void Shutdown();

  int active_streams() const;
  std::int64_t nacks_received() const;
  SdsServerStats Stats() const;

  class Service;

 private:
  SdsServerOptions options_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<PeerListener> listener_;
  std::unique_ptr<grpc::Server> server_;
};

// The server's counters as Prometheus text, for nodeward-sds's metrics endpoint.
std::string RenderSdsMetrics(const SdsServerStats& stats);

}  // namespace nodeward::sds
