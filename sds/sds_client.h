// An Envoy SDS v3 client over a Unix socket: one StreamSecrets stream carrying the current
// set of resource names, ACKing what its handler accepts and NACKing what it rejects, and
// reconnecting with backoff and jitter.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sds/backoff.h"
#include "sds/secret_resources.h"

namespace grpc {
class ClientContext;
template <class W, class R>
class ClientReaderWriter;
}  // namespace grpc
namespace envoy::service::discovery::v3 {
class DiscoveryRequest;
class DiscoveryResponse;
}  // namespace envoy::service::discovery::v3

namespace nodeward::sds {

struct SdsClientOptions {
  std::string socket_path = "/var/run/nodeward/sds.sock";
  // Node.id in requests; identifies this client in the server's logs.
  std::string node_id;
  BackoffPolicy reconnect{absl::Milliseconds(100), absl::Seconds(5), 2.0, 0.5};
};

class SdsClient {
 public:
  // Called from the client's thread, one call at a time.
  class Handler {
   public:
    virtual ~Handler() = default;
    // OK accepts the secret; an error rejects it (NACK) with that reason.
    virtual absl::Status OnSecret(const ReceivedSecret& secret) = 0;
    // The server refused `resource` by ending the stream with PERMISSION_DENIED naming it
    // (servers that refuse per name keep the stream and say nothing: see Probe).
    virtual void OnRefused(const std::string& resource, const absl::Status& reason) = 0;
    // The stream ended or could not be opened; the client retries by itself.
    virtual void OnDisconnected(const absl::Status& reason) = 0;
  };

  SdsClient(SdsClientOptions options, Handler* handler);
  ~SdsClient();

  void Start();
  void Stop();
  // The whole set of resources wanted; sent at once when connected, else on connection.
  void SetResourceNames(std::vector<std::string> names);

  // Asks for `resource` once with FetchSecrets, outside the stream: whether the server would
  // serve it now (PERMISSION_DENIED or INVALID_ARGUMENT when it would not), without risking
  // the stream on a server that ends streams on refusals.
  absl::Status Probe(const std::string& resource, absl::Duration timeout) const;

  std::int64_t connections() const;
  bool connected() const;

 private:
  using Stream = grpc::ClientReaderWriter<envoy::service::discovery::v3::DiscoveryRequest,
                                          envoy::service::discovery::v3::DiscoveryResponse>;
  void Run();
  // One stream from connection to end; returns why it ended and whether anything arrived.
  absl::Status RunStream(bool* received_any);
  void HandleResponse(const envoy::service::discovery::v3::DiscoveryResponse& response,
                      Stream* stream);
  envoy::service::discovery::v3::DiscoveryRequest BaseRequestLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const SdsClientOptions options_;
  Handler* const handler_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::int64_t connections_ ABSL_GUARDED_BY(mu_) = 0;

  // Serialises writes on the stream (ACKs from the reader, subscription changes from others).
  mutable absl::Mutex write_mu_;
  Stream* stream_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  std::vector<std::string> names_ ABSL_GUARDED_BY(write_mu_);
  std::string accepted_version_ ABSL_GUARDED_BY(write_mu_);
  std::string last_nonce_ ABSL_GUARDED_BY(write_mu_);

  std::thread thread_;
};

}  // namespace nodeward::sds
