// Server side of the node's identities: generates a key per identity, has it signed, rotates
// it before expiry and tracks the trust bundle across root rotations. Knows nothing about
// SDS streams: they observe it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"
#include "crypto/tls.h"
#include "sds/backoff.h"
#include "sds/certificate_signer.h"

namespace nodeward::sds {

struct IssuedIdentity {
  SpiffeId identity;
  // Changes with every issuance: the leaf's serial.
  std::string version;
  crypto::TlsCredentials credentials;
  crypto::CertificateInfo leaf;
  absl::Time issued_at;
  absl::Time refresh_at;
};

struct TrustBundleSnapshot {
  // Derived from the roots' fingerprints, so equal bundles have equal versions.
  std::string version;
  std::string roots_pem;
  std::size_t root_count = 0;
};

struct IdentityManagerOptions {
  absl::Duration lifetime = absl::Hours(24);
  // Renew when this fraction of the lifetime has passed, moved by up to +/- jitter of itself.
  double rotation_fraction = 0.5;
  double rotation_jitter = 0.1;
  BackoffPolicy retry;
  // Also the number of signing requests outstanding at once.
  int issuing_threads = 4;
  // A certificate nobody watches is kept this long, so a reconnecting client is not made to
  // wait for a new one.
  absl::Duration idle_grace = absl::Minutes(5);
  // After a root rotation, every identity is re-issued within this window (randomly spread).
  absl::Duration reissue_spread = absl::Seconds(5);
};

// What the debug CLI shows for one identity.
struct ManagedIdentityStatus {
  SpiffeId identity;
  int watchers = 0;
  std::string serial_hex;
  absl::Time not_before;
  absl::Time not_after;
  absl::Time next_action;  // refresh, retry or drop
  std::string last_error;
};

class IdentityManager {
 public:
  // Called from the issuing threads; must be quick and must not call back into the observer
  // registration functions.
  class Observer {
   public:
    virtual ~Observer() = default;
    virtual void OnCertificate(const std::shared_ptr<const IssuedIdentity>& issued) = 0;
    virtual void OnTrustBundle(const std::shared_ptr<const TrustBundleSnapshot>& bundle) = 0;
    // An attempt to issue `identity` failed; it is retried with backoff.
    virtual void OnIssueFailed(const SpiffeId& /*identity*/, const absl::Status& /*error*/) {}
  };

  IdentityManager(std::shared_ptr<CertificateSigner> signer, IdentityManagerOptions options);
  ~IdentityManager();
  IdentityManager(const IdentityManager&) = delete;
  IdentityManager& operator=(const IdentityManager&) = delete;

  void AddObserver(Observer* observer);
  // Returns once no notification to `observer` is in progress.
  void RemoveObserver(Observer* observer);

  // Interest in an identity, counted. The first Retain starts issuance.
  void Retain(const SpiffeId& identity);
  void Release(const SpiffeId& identity);

  // The current certificate, or null when none is issued yet or it has expired.
  std::shared_ptr<const IssuedIdentity> Current(const SpiffeId& identity) const;
  // Null until the roots are known.
  std::shared_ptr<const TrustBundleSnapshot> Bundle() const;

  // Waits (the identity must be retained) until a valid certificate exists, or returns the
  // last issuance error once an attempt failed, or DeadlineExceeded.
  absl::StatusOr<std::shared_ptr<const IssuedIdentity>> WaitForCertificate(const SpiffeId& identity,
                                                                           absl::Time deadline);
  absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> WaitForBundle(absl::Time deadline);

  // Picks up a changed CA (SIGHUP). On a new root, the bundle keeps the old root until the last
  // certificate issued under it expires, and every identity is re-issued under the new one.
  absl::Status ReloadSigner();
  // The signer was changed in place (a swapped CA): same handling as a reload that changed it.
  absl::Status OnSignerChanged();

  std::vector<ManagedIdentityStatus> Status() const;
  std::int64_t issued_count() const;

 private:
  struct Entry {
    explicit Entry(SpiffeId id, BackoffPolicy policy) : identity(std::move(id)), backoff(policy) {}
    SpiffeId identity;
    int refs = 0;
    std::shared_ptr<const IssuedIdentity> current;
    std::optional<absl::Time> scheduled;
    bool in_flight = false;
    bool reissue_requested = false;
    int failed_attempts = 0;
    Backoff backoff;
    absl::Time idle_deadline = absl::InfiniteFuture();
    absl::Status last_error;
  };
  struct RetiredRoot {
    std::string pem;
    absl::Time until;
  };
  struct RootSet {
    std::vector<std::pair<std::string, std::string>> fingerprint_and_pem;
  };
  // Changes to publish once the lock is dropped, in order: bundle before certificate, so a
  // client always knows the root of a certificate it receives.
  struct Publication {
    std::shared_ptr<const TrustBundleSnapshot> bundle;
    std::shared_ptr<const IssuedIdentity> certificate;
    std::optional<std::pair<SpiffeId, absl::Status>> failure;
  };

  void WorkerLoop();
  void ScheduleLocked(Entry& entry, absl::Time when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<const IssuedIdentity>> Issue(const SpiffeId& identity,
                                                              std::string* roots_pem);
  // Records the roots of a signer; returns the new bundle when it changed.
  absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> UpdateRootsLocked(
      const std::string& roots_pem, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<const TrustBundleSnapshot> RebuildBundleLocked(absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RequestReissueOfAllLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Publish(const Publication& publication);

  const std::shared_ptr<CertificateSigner> signer_;
  const IdentityManagerOptions options_;

  mutable absl::Mutex mu_;
  absl::CondVar work_available_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<std::pair<absl::Time, std::string>> schedule_ ABSL_GUARDED_BY(mu_);
  RootSet current_roots_ ABSL_GUARDED_BY(mu_);
  // Latest expiry of a leaf issued under the current roots: how long they must stay trusted
  // once replaced.
  absl::Time current_roots_last_leaf_expiry_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, RetiredRoot> retired_roots_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const TrustBundleSnapshot> bundle_ ABSL_GUARDED_BY(mu_);
  std::int64_t issued_count_ ABSL_GUARDED_BY(mu_) = 0;
  absl::BitGen random_ ABSL_GUARDED_BY(mu_);

  absl::Mutex observers_mu_;
  std::vector<Observer*> observers_ ABSL_GUARDED_BY(observers_mu_);

  std::vector<std::thread> workers_;
};

}  // namespace nodeward::sds
