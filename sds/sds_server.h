// Envoy SDS v3 (SecretDiscoveryService) on a Unix socket, serving the IdentityManager's
// certificates by SPIFFE ID and its trust bundle as ROOTCA.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "sds/authorizer.h"
#include "sds/identity_manager.h"

namespace grpc {
class Server;
}

namespace nodeward::sds {

struct SdsServerOptions {
  std::string socket_path = "/var/run/nodeward/sds.sock";
  // Longest a FetchSecrets call waits for a certificate when the caller set no deadline.
  absl::Duration fetch_timeout = absl::Seconds(30);
};

class SdsServer {
 public:
  // `manager` and `authorizer` must outlive the server.
  SdsServer(IdentityManager* manager, IdentityAuthorizer* authorizer, SdsServerOptions options);
  ~SdsServer();

  // Binds the socket (replacing a stale one), mode 0660, and starts serving.
  absl::Status Start();
  // Ends every stream (clients see UNAVAILABLE/CANCELLED and reconnect) and stops serving.
  void Shutdown();

  int active_streams() const;
  std::int64_t nacks_received() const;

  class Service;

 private:
  SdsServerOptions options_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace nodeward::sds
