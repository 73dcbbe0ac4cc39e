// Where the data plane gets TLS contexts for the identities of its pods. Contexts are built
// once per identity and certificate (serial) and trust bundle, so a rotated certificate serves
// new connections while live ones keep the context they started with.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "crypto/spiffe_id.h"
#include "crypto/tls.h"
#include "sds/certificate_cache.h"

namespace nodeward::proxy {

class MeshCredentials {
 public:
  virtual ~MeshCredentials() = default;
  // A pod of this identity was enrolled / left: certificates are fetched for the enrolled ones.
  virtual void Acquire(const crypto::SpiffeId& identity) = 0;
  virtual void Release(const crypto::SpiffeId& identity) = 0;
  // UNAVAILABLE while the identity has no valid certificate yet. Thread safe.
  virtual absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const crypto::SpiffeId& identity) = 0;
  virtual absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const crypto::SpiffeId& identity) = 0;
};

// Credentials from the SDS-fed certificate cache.
class CachedMeshCredentials : public MeshCredentials {
 public:
  explicit CachedMeshCredentials(sds::CertificateCache* cache) : cache_(cache) {}

  void Acquire(const crypto::SpiffeId& identity) override { cache_->Acquire(identity); }
  void Release(const crypto::SpiffeId& identity) override { cache_->Release(identity); }
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const crypto::SpiffeId& identity) override;
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const crypto::SpiffeId& identity) override;

 private:
  struct Built {
    std::string version;  // serial + bundle fingerprint the contexts were built from
    std::shared_ptr<const crypto::TlsContext> client;
    std::shared_ptr<const crypto::TlsContext> server;
  };
  absl::StatusOr<Built> Get(const crypto::SpiffeId& identity);

  sds::CertificateCache* const cache_;
  absl::Mutex mutex_;
  absl::flat_hash_map<crypto::SpiffeId, Built> built_ ABSL_GUARDED_BY(mutex_);
};

// Fixed credentials, e.g. for tests and benchmarks that sign with a CA of their own.
class StaticMeshCredentials : public MeshCredentials {
 public:
  explicit StaticMeshCredentials(crypto::TrustBundle bundle) : bundle_(std::move(bundle)) {}
  absl::Status Set(const crypto::SpiffeId& identity, const crypto::TlsCredentials& credentials);

  void Acquire(const crypto::SpiffeId&) override {}
  void Release(const crypto::SpiffeId&) override {}
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ClientContext(
      const crypto::SpiffeId& identity) override;
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ServerContext(
      const crypto::SpiffeId& identity) override;

 private:
  const crypto::TrustBundle bundle_;
  absl::Mutex mutex_;
  absl::flat_hash_map<crypto::SpiffeId, std::pair<std::shared_ptr<const crypto::TlsContext>,
                                                  std::shared_ptr<const crypto::TlsContext>>>
      contexts_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::proxy
