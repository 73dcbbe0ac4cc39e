#include "agent/proxy/credentials.h"

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {

CachedMeshCredentials::CachedMeshCredentials(sds::CertificateCache* cache) : cache_(cache) {
  listener_ =
      cache_->AddListener([this](const sds::CertificateChange& change) { OnChange(change); });
}

CachedMeshCredentials::~CachedMeshCredentials() { cache_->RemoveListener(listener_); }

void CachedMeshCredentials::OnChange(const sds::CertificateChange& change) {
  std::vector<absl::AnyInvocable<void()>> ready;
  {
    absl::MutexLock lock(&mutex_);
    ++generation_;
    if (change.kind == sds::CertificateChange::Kind::kTrustBundle) {
      built_.clear();
    } else if (change.identity.has_value()) {
      built_.erase(*change.identity);
    }
    if (change.kind == sds::CertificateChange::Kind::kCertificate && change.identity.has_value()) {
      if (auto it = waiters_.find(*change.identity); it != waiters_.end()) {
        ready = std::move(it->second);
        waiters_.erase(it);
      }
    }
  }
  for (auto& callback : ready) callback();
}

absl::StatusOr<CachedMeshCredentials::Built> CachedMeshCredentials::Get(const SpiffeId& identity) {
  std::uint64_t generation = 0;
  {
    absl::MutexLock lock(&mutex_);
    if (auto it = built_.find(identity); it != built_.end()) return it->second;
    generation = generation_;
  }
  absl::StatusOr<sds::IdentityCredentials> current = cache_->Get(identity);
  if (!current.ok()) {
    return absl::UnavailableError(
        absl::StrCat("no certificate for ", identity.ToString(), ": ", current.status().message()));
  }
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> client =
      crypto::TlsContext::MeshClient(current->credentials, current->bundle);
  if (!client.ok()) return client.status();
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> server =
      crypto::TlsContext::MeshServer(current->credentials, current->bundle);
  if (!server.ok()) return server.status();
  Built built{*std::move(client), *std::move(server)};
  absl::MutexLock lock(&mutex_);
  // A change that came in meanwhile may have made these stale: use them once, keep nothing.
  if (generation == generation_) built_[identity] = built;
  return built;
}

void CachedMeshCredentials::WhenReady(const SpiffeId& identity, absl::AnyInvocable<void()> ready) {
  {
    absl::MutexLock lock(&mutex_);
    waiters_[identity].push_back(std::move(ready));
  }
  // Registered before looking, so a certificate arriving in between is not missed: whichever
  // of the two finds it takes the waiters.
  if (!Get(identity).ok()) return;
  std::vector<absl::AnyInvocable<void()>> now;
  {
    absl::MutexLock lock(&mutex_);
    if (auto it = waiters_.find(identity); it != waiters_.end()) {
      now = std::move(it->second);
      waiters_.erase(it);
    }
  }
  for (auto& callback : now) callback();
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> CachedMeshCredentials::ClientContext(
    const SpiffeId& identity) {
  absl::StatusOr<Built> built = Get(identity);
  if (!built.ok()) return built.status();
  return built->client;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> CachedMeshCredentials::ServerContext(
    const SpiffeId& identity) {
  absl::StatusOr<Built> built = Get(identity);
  if (!built.ok()) return built.status();
  return built->server;
}

absl::Status StaticMeshCredentials::Set(const SpiffeId& identity,
                                        const crypto::TlsCredentials& credentials) {
  auto client = crypto::TlsContext::MeshClient(credentials, bundle_);
  if (!client.ok()) return client.status();
  auto server = crypto::TlsContext::MeshServer(credentials, bundle_);
  if (!server.ok()) return server.status();
  std::vector<absl::AnyInvocable<void()>> ready;
  {
    absl::MutexLock lock(&mutex_);
    contexts_[identity] = {*client, *server};
    if (auto it = waiters_.find(identity); it != waiters_.end()) {
      ready = std::move(it->second);
      waiters_.erase(it);
    }
  }
  for (auto& callback : ready) callback();
  return absl::OkStatus();
}

void StaticMeshCredentials::WhenReady(const SpiffeId& identity, absl::AnyInvocable<void()> ready) {
  {
    absl::MutexLock lock(&mutex_);
    if (!contexts_.contains(identity)) {
      waiters_[identity].push_back(std::move(ready));
      return;
    }
  }
  ready();
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> StaticMeshCredentials::ClientContext(
    const SpiffeId& identity) {
  absl::MutexLock lock(&mutex_);
  auto it = contexts_.find(identity);
  if (it == contexts_.end()) {
    return absl::UnavailableError(absl::StrCat("no certificate for ", identity.ToString()));
  }
  return it->second.first;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> StaticMeshCredentials::ServerContext(
    const SpiffeId& identity) {
  absl::MutexLock lock(&mutex_);
  auto it = contexts_.find(identity);
  if (it == contexts_.end()) {
    return absl::UnavailableError(absl::StrCat("no certificate for ", identity.ToString()));
  }
  return it->second.second;
}

}  // namespace nodeward::proxy
