// The calls of the SDS service as gRPC callback reactors: a state-of-the-world stream, a delta
// stream and a FetchSecrets call. Each belongs to the server's table of open calls (its
// CallHost) until gRPC is done with it, and the identity manager's publications reach it
// through that table; a publication holds the call while it runs, so a call is never used
// after it is freed.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "envoy/service/discovery/v3/discovery.pb.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"
#include "sds/authorizer.h"
#include "sds/caller.h"
#include "sds/identity_manager.h"
#include "sds/secret_stream.h"

namespace nodeward::sds {

// One open call, as the publications of the identity manager and the housekeeping reach it.
class Call {
 public:
  virtual ~Call() = default;
  // Once the host tracks it.
  virtual void Begin() = 0;
  virtual void OnCertificate(const SpiffeId& identity) = 0;
  virtual void OnBundle() = 0;
  virtual void OnIssueFailed(const SpiffeId&, const absl::Status&) {}
  // `recheck`: time to ask again what was refused.
  virtual void Tick(absl::Time now, bool recheck) = 0;
};

// What a call needs of the server that holds it.
class CallHost {
 public:
  virtual ~CallHost() = default;
  virtual IdentityManager* manager() const = 0;
  virtual IdentityAuthorizer* authorizer() const = 0;
  virtual SdsCounters* counters() = 0;
  virtual WorkloadResolver* workloads() const = 0;  // may be null
  // gRPC is done with `call`: the host forgets it, and its caller may open another. Returns
  // the host's reference, to be dropped outside the host's lock.
  virtual std::shared_ptr<Call> Forget(Call* call, const std::string& limit_key) = 0;
};

// The call, and in `reactor` what gRPC drives (the same object).
std::shared_ptr<Call> NewStateOfTheWorldCall(
    CallHost* host, SdsCaller caller,
    grpc::ServerBidiReactor<envoy::service::discovery::v3::DiscoveryRequest,
                            envoy::service::discovery::v3::DiscoveryResponse>** reactor);
std::shared_ptr<Call> NewDeltaCall(
    CallHost* host, SdsCaller caller,
    grpc::ServerBidiReactor<envoy::service::discovery::v3::DeltaDiscoveryRequest,
                            envoy::service::discovery::v3::DeltaDiscoveryResponse>** reactor);
// Answers `response` once every one of `names` (resolved without error) is available, with an
// error once an issuance of one failed, or at `deadline`.
std::shared_ptr<Call> NewFetchCall(CallHost* host, SdsCaller caller, std::vector<std::string> names,
                                   std::vector<ResolvedName> resolved,
                                   envoy::service::discovery::v3::DiscoveryResponse* response,
                                   absl::Time deadline, grpc::ServerUnaryReactor** reactor);

// Streams turned away before they start (over their caller's limit), ended with `status`.
grpc::ServerBidiReactor<envoy::service::discovery::v3::DiscoveryRequest,
                        envoy::service::discovery::v3::DiscoveryResponse>*
RefusedStateOfTheWorldStream(const absl::Status& status);
grpc::ServerBidiReactor<envoy::service::discovery::v3::DeltaDiscoveryRequest,
                        envoy::service::discovery::v3::DeltaDiscoveryResponse>*
RefusedDeltaStream(const absl::Status& status);

grpc::Status ToGrpcStatus(const absl::Status& status);
// INVALID_ARGUMENT unless `type_url` is empty or the Secret type.
std::optional<grpc::Status> CheckTypeUrl(const std::string& type_url);

}  // namespace nodeward::sds
