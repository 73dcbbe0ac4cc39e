// The agent's certificates, one per service account with workloads on this node, fed by SDS.
// Every pushed secret is validated before use; a bad one is NACKed and the last good kept.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"
#include "crypto/tls.h"
#include "sds/sds_client.h"

namespace nodeward::sds {

struct CertificateCacheOptions {
  SdsClientOptions sds;
  // An identity whose last workload left is kept this long, so a restarting pod does not wait.
  absl::Duration release_grace = absl::Seconds(30);
  // Identities requested but not yet received, at most; the rest wait their turn.
  int max_outstanding_requests = 32;
  // After the server refuses an identity, it is asked for again after this long (the
  // node's allow-list may have changed).
  absl::Duration refused_retry = absl::Seconds(30);
  // An identity requested on the stream and not answered this long is asked about on the
  // side (FetchSecrets): a server that refuses a name goes on serving the others without a
  // word about it, as state-of-the-world SDS has no way to say so. Asked again, less and less
  // often, while it stays unanswered.
  absl::Duration unanswered_probe_after = absl::Seconds(2);
};

// What the agent uses to build a TLS context for one identity.
struct IdentityCredentials {
  SpiffeId identity;
  crypto::TlsCredentials credentials;
  crypto::TrustBundle bundle;
  crypto::CertificateInfo leaf;
};

// What the debug CLI prints for one identity.
struct IdentityStatus {
  enum class State { kQueued, kRequested, kReady, kExpired, kRefused };
  explicit IdentityStatus(SpiffeId id) : identity(std::move(id)) {}
  SpiffeId identity;
  State state = State::kQueued;
  int references = 0;
  std::string serial_hex;
  std::string version;
  absl::Time not_before = absl::InfinitePast();
  absl::Time not_after = absl::InfinitePast();
  // When the server is expected to push the next certificate (half its lifetime).
  absl::Time next_refresh = absl::InfinitePast();
  absl::Time last_update = absl::InfinitePast();
  std::string last_error;
};
const char* StateName(IdentityStatus::State state);

struct CertificateChange {
  enum class Kind { kCertificate, kTrustBundle, kExpired };
  Kind kind;
  std::optional<SpiffeId> identity;  // unset for kTrustBundle
};

class CertificateCache : private SdsClient::Handler {
 public:
  using Listener = std::function<void(const CertificateChange&)>;

  explicit CertificateCache(CertificateCacheOptions options);
  ~CertificateCache() override;

  void Start();
  void Stop();

  // A workload of this service account was enrolled / left. Counted.
  void Acquire(const SpiffeId& identity);
  void Release(const SpiffeId& identity);

  // Current credentials and bundle; an error when none is valid right now (never expired).
  absl::StatusOr<IdentityCredentials> Get(const SpiffeId& identity) const;
  absl::StatusOr<crypto::TrustBundle> Bundle() const;
  // Blocks until Get would succeed, or returns the last error at the deadline.
  absl::StatusOr<IdentityCredentials> WaitForCredentials(const SpiffeId& identity,
                                                         absl::Time deadline) const;

  // Called from the cache's threads after every change; must not block.
  int AddListener(Listener listener);
  void RemoveListener(int id);

  std::vector<IdentityStatus> Status() const;
  std::int64_t rejected_secrets() const;
  std::int64_t sds_connections() const { return client_.connections(); }
  bool sds_connected() const { return client_.connected(); }

 private:
  struct Material {
    crypto::TlsCredentials credentials;
    crypto::CertificateInfo leaf;
  };
  struct Entry {
    explicit Entry(SpiffeId id) : identity(std::move(id)) {}
    SpiffeId identity;
    int references = 0;
    std::uint64_t queue_order = 0;
    bool subscribed = false;
    std::optional<Material> current;
    bool expired_notified = false;
    absl::Time release_at = absl::InfiniteFuture();
    absl::Time refused_until = absl::InfinitePast();
    // On the stream without an answer: when to ask about it on the side next.
    absl::Time next_probe = absl::InfinitePast();
    absl::Duration probe_interval = absl::ZeroDuration();
    absl::Time last_update = absl::InfinitePast();
    std::string last_error;
  };

  absl::Status OnSecret(const ReceivedSecret& secret) override;
  void OnRefused(const std::string& resource, const absl::Status& reason) override;
  void OnDisconnected(const absl::Status& reason) override;

  absl::Status AcceptCertificate(const ReceivedCertificate& received);
  absl::Status AcceptBundle(const ReceivedBundle& received);
  // Recomputes which identities are on the stream and tells the client.
  void UpdateSubscription();
  void TimerLoop();
  void Notify(const std::vector<CertificateChange>& changes);

  const CertificateCacheOptions options_;
  SdsClient client_;

  // Serialises subscription computations with their sending, so the last set computed is the
  // last one sent.
  absl::Mutex subscription_mu_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<SpiffeId, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::uint64_t next_queue_order_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<crypto::TrustBundle> bundle_ ABSL_GUARDED_BY(mu_);
  std::string bundle_pem_ ABSL_GUARDED_BY(mu_);
  std::int64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  std::string connection_error_ ABSL_GUARDED_BY(mu_);
  std::uint64_t wakeups_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex listeners_mu_;
  std::map<int, Listener> listeners_ ABSL_GUARDED_BY(listeners_mu_);
  int next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 0;

  std::thread timer_;
};

}  // namespace nodeward::sds
