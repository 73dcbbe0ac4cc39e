// Where the data plane gets TLS contexts for the identities of its pods. Contexts are built
// once per identity and certificate and trust bundle, and rebuilt only when the certificate
// cache says one changed, so a rotated certificate serves new connections while live ones keep
// the context they started with. A connection whose pod has no certificate yet waits for a
// ready notification instead of polling.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/spiffe_id.h"
#include "crypto/tls.h"
#include "sds/certificate_cache.h"

namespace nodeward::proxy {

class MeshCredentials {
 public:
  virtual ~MeshCredentials() = default;
  // A pod of this identity was enrolled / left: certificates are fetched for the enrolled ones.
  virtual void Acquire(const SpiffeId& identity) = 0;
  virtual void Release(const SpiffeId& identity) = 0;
  // UNAVAILABLE while the identity has no valid certificate yet. Thread safe.
  virtual absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const SpiffeId& identity) = 0;
  virtual absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const SpiffeId& identity) = 0;
  // Runs `ready` once `identity` has a certificate: at once on this thread when it has one
  // now, else later on another thread (the caller posts to its loop). It may run after the
  // caller stopped waiting; it must not block.
  virtual void WhenReady(const SpiffeId& identity, absl::AnyInvocable<void()> ready) = 0;
};

// Credentials from the SDS-fed certificate cache.
class CachedMeshCredentials : public MeshCredentials {
 public:
  explicit CachedMeshCredentials(sds::CertificateCache* cache);
  ~CachedMeshCredentials() override;

  void Acquire(const SpiffeId& identity) override { cache_->Acquire(identity); }
  void Release(const SpiffeId& identity) override { cache_->Release(identity); }
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const SpiffeId& identity) override;
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const SpiffeId& identity) override;
  void WhenReady(const SpiffeId& identity, absl::AnyInvocable<void()> ready) override;

 private:
  struct Built {
    std::shared_ptr<const crypto::TlsContext> client;
    std::shared_ptr<const crypto::TlsContext> server;
  };
  absl::StatusOr<Built> Get(const SpiffeId& identity);
  void OnChange(const sds::CertificateChange& change);

  sds::CertificateCache* const cache_;
  int listener_ = -1;
  absl::Mutex mutex_;
  absl::flat_hash_map<SpiffeId, Built> built_ ABSL_GUARDED_BY(mutex_);
  // Bumped by every change, so contexts built from what was read before it are not kept.
  std::uint64_t generation_ ABSL_GUARDED_BY(mutex_) = 0;
  absl::flat_hash_map<SpiffeId, std::vector<absl::AnyInvocable<void()>>> waiters_
      ABSL_GUARDED_BY(mutex_);
};

// Fixed credentials, e.g. for tests and benchmarks that sign with a CA of their own.
class StaticMeshCredentials : public MeshCredentials {
 public:
  explicit StaticMeshCredentials(crypto::TrustBundle bundle) : bundle_(std::move(bundle)) {}
  absl::Status Set(const SpiffeId& identity, const crypto::TlsCredentials& credentials);

  void Acquire(const SpiffeId&) override {}
  void Release(const SpiffeId&) override {}
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const SpiffeId& identity) override;
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const SpiffeId& identity) override;
  void WhenReady(const SpiffeId& identity, absl::AnyInvocable<void()> ready) override;

 private:
  const crypto::TrustBundle bundle_;
  absl::Mutex mutex_;
  absl::flat_hash_map<SpiffeId, std::vector<absl::AnyInvocable<void()>>> waiters_
      ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<SpiffeId, std::pair<std::shared_ptr<const crypto::TlsContext>,
                                          std::shared_ptr<const crypto::TlsContext>>>
      contexts_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::proxy
