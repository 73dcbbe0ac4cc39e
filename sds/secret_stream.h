// What one SDS stream is subscribed to and has been sent, for both variants of the protocol
// (state of the world and delta): names resolved against the caller, interest in identities
// held with the IdentityManager, versions sent, ACKed and NACKed, and why a name cannot be
// served. No lock, no I/O: the server serialises calls and writes what Next() returns.
//
// A name that cannot be served (not a resource name, refused to this node, "default" from a
// caller whose workload is unknown, another pod's identity on the workload socket) never ends
// the stream: the other names go on being served, as Envoy's state-of-the-world protocol
// wants. The error is logged once and counted; the delta variant also tells the client, by
// listing the name in removed_resources.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sds/authorizer.h"
#include "sds/caller.h"
#include "sds/identity_manager.h"
#include "sds/secret_resources.h"

namespace google::rpc {
class Status;
}

namespace nodeward::sds {

enum class ResourceError {
  kInvalidName,    // neither ROOTCA, default nor a SPIFFE ID, or too long
  kRefused,        // this node may not hold the identity
  kUnknownCaller,  // "default" from a caller whose workload cannot be told
  kOutsideScope,   // a caller on the workload socket asked for another identity
  kTooManyNames,   // past the names one stream may hold
};
inline constexpr std::size_t kResourceErrorKinds = 5;
// The metric label: invalid_name, refused, unknown_caller, outside_scope, too_many_names.
const char* ResourceErrorName(ResourceError error);

// Counted across every stream of a server.
struct SdsCounters {
  std::atomic<std::int64_t> nacks{0};
  std::array<std::atomic<std::int64_t>, kResourceErrorKinds> resource_errors{};
  void Count(ResourceError error) {
    resource_errors[static_cast<std::size_t>(error)].fetch_add(1, std::memory_order_relaxed);
  }
};

struct NameError {
  ResourceError kind;
  absl::Status status;  // PermissionDenied or InvalidArgument, with the reason
};
// A name as it resolves for one caller: the bundle, an identity, or why it cannot be served.
struct ResolvedName {
  bool bundle = false;
  std::optional<SpiffeId> identity;
  std::optional<NameError> error;
};
// Resolves `name` for `caller` and checks the node may hold what it names. FetchSecrets and
// the streams share it.
ResolvedName ResolveName(absl::string_view name, const SdsCaller& caller,
                         IdentityAuthorizer& authorizer);

// What to send next: a resource at a version, or (delta only) that a name does not exist.
struct SecretUpdate {
  std::string name;
  std::string version;
  std::optional<SecretProto> secret;  // unset: the name does not exist for this caller
};

class SecretStream {
 public:
  // More names than this on one stream are refused (an agent asks for one per identity with a
  // pod on its node, an Envoy for two).
  static constexpr std::size_t kMaxNames = 1024;

  enum class Variant { kStateOfTheWorld, kDelta };

  // `manager`, `authorizer`, `counters` and `resolver` (may be null) must outlive this.
  SecretStream(Variant variant, IdentityManager* manager, IdentityAuthorizer* authorizer,
               SdsCaller caller, SdsCounters* counters, WorkloadResolver* resolver);
  ~SecretStream();
  SecretStream(const SecretStream&) = delete;
  SecretStream& operator=(const SecretStream&) = delete;

  // State of the world: `names` is the whole set wanted now.
  void Replace(const std::vector<std::string>& names);
  // Delta: names gained and lost; `known` (first request of a reconnected stream) maps names
  // to the versions the client already holds, which are then not sent again.
  void Subscribe(const std::vector<std::string>& names,
                 const std::vector<std::pair<std::string, std::string>>& known);
  void Unsubscribe(const std::vector<std::string>& names);
  // The client's answer to the response sent with `nonce`: an ACK, or a NACK when `error`
  // carries a non-zero code. A NACKed version is not sent again on this stream.
  void Acknowledge(absl::string_view nonce, const google::rpc::Status* error);

  // Published changes.
  void CertificateChanged(const SpiffeId& identity);
  void BundleChanged();
  // Asks again what was refused or could not be attributed: the node's inventory, or the
  // caller's pod, may have appeared since.
  void Recheck();

  // The next resource to send, recorded as sent under `nonce`; nullopt when nothing is due.
  // The bundle always goes before a certificate that needs it.
  std::optional<SecretUpdate> Next(const std::string& nonce);

  const SdsCaller& caller() const { return caller_; }
  // For the log line of a client: the Node.id it gave, escaped and cut.
  void set_client(std::string client) { client_ = std::move(client); }
  std::size_t subscribed() const { return subscriptions_.size(); }

 private:
  struct Subscription {
    ResolvedName resolved;
    bool retained = false;
    std::string sent_version;    // what the client holds, as far as this stream knows
    std::string nacked_version;  // refused by the client: not sent again
    bool absence_sent = false;   // delta: the client was told the name does not exist
  };

  void Add(const std::string& name);
  void Remove(const std::string& name);
  void Enqueue(const std::string& name);
  // Marks `name` unservable (logged and counted once) and gives up its interest.
  void Fail(const std::string& name, Subscription& subscription, NameError error);
  void Retain(Subscription& subscription);
  void Release(Subscription& subscription);
  // The resource `name` is at now, if it can be sent.
  std::optional<SecretUpdate> Current(const std::string& name, Subscription& subscription);

  const Variant variant_;
  IdentityManager* const manager_;
  IdentityAuthorizer* const authorizer_;
  SdsCaller caller_;
  SdsCounters* const counters_;
  WorkloadResolver* const resolver_;
  std::string client_;

  absl::flat_hash_map<std::string, Subscription> subscriptions_;
  std::deque<std::string> pending_;
  absl::flat_hash_set<std::string> pending_set_;
  // nonce -> (name, version) of responses not answered yet.
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> unanswered_;
  // Names refused before they could be subscribed (too long, too many), by hash, so that the
  // same request repeated in every ACK is logged once.
  absl::flat_hash_set<std::size_t> rejected_;
};

}  // namespace nodeward::sds
