#include "agent/proxy/credentials.h"

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {

absl::StatusOr<CachedMeshCredentials::Built> CachedMeshCredentials::Get(
    const crypto::SpiffeId& identity) {
  absl::StatusOr<sds::IdentityCredentials> current = cache_->Get(identity);
  if (!current.ok()) {
    return absl::UnavailableError(
        absl::StrCat("no certificate for ", identity.ToString(), ": ", current.status().message()));
  }
  std::string version = current->leaf.serial_hex;
  for (const crypto::CertificateInfo& root : current->bundle.Roots()) {
    absl::StrAppend(&version, "/", root.sha256_fingerprint_hex);
  }
  absl::MutexLock lock(&mutex_);
  auto it = built_.find(identity);
  if (it != built_.end() && it->second.version == version) return it->second;
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> client =
      crypto::TlsContext::MeshClient(current->credentials, current->bundle);
  if (!client.ok()) return client.status();
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> server =
      crypto::TlsContext::MeshServer(current->credentials, current->bundle);
  if (!server.ok()) return server.status();
  Built built{std::move(version), *std::move(client), *std::move(server)};
  built_[identity] = built;
  return built;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> CachedMeshCredentials::ClientContext(
    const crypto::SpiffeId& identity) {
  absl::StatusOr<Built> built = Get(identity);
  if (!built.ok()) return built.status();
  return built->client;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> CachedMeshCredentials::ServerContext(
    const crypto::SpiffeId& identity) {
  absl::StatusOr<Built> built = Get(identity);
  if (!built.ok()) return built.status();
  return built->server;
}

absl::Status StaticMeshCredentials::Set(const crypto::SpiffeId& identity,
                                        const crypto::TlsCredentials& credentials) {
  auto client = crypto::TlsContext::MeshClient(credentials, bundle_);
  if (!client.ok()) return client.status();
  auto server = crypto::TlsContext::MeshServer(credentials, bundle_);
  if (!server.ok()) return server.status();
  absl::MutexLock lock(&mutex_);
  contexts_[identity] = {*client, *server};
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> StaticMeshCredentials::ClientContext(
    const crypto::SpiffeId& identity) {
  absl::MutexLock lock(&mutex_);
  auto it = contexts_.find(identity);
  if (it == contexts_.end()) {
    return absl::UnavailableError(absl::StrCat("no certificate for ", identity.ToString()));
  }
  return it->second.first;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> StaticMeshCredentials::ServerContext(
    const crypto::SpiffeId& identity) {
  absl::MutexLock lock(&mutex_);
  auto it = contexts_.find(identity);
  if (it == contexts_.end()) {
    return absl::UnavailableError(absl::StrCat("no certificate for ", identity.ToString()));
  }
  return it->second.second;
}

}  // namespace nodeward::proxy
