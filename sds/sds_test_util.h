// Helpers shared by the SDS tests: identities, a CA and a running SDS server on a Unix
// socket (and, from testing/processes.h, temporary directories and waiting).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/spiffe_id.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/tls.h"
#include "gtest/gtest.h"
#include "sds/authorizer.h"
#include "sds/certificate_cache.h"
#include "sds/certificate_signer.h"
#include "sds/identity_manager.h"
#include "sds/sds_server.h"
#include "sds/testing/processes.h"

namespace nodeward::sds::testing {

inline SpiffeId Id(const std::string& ns, const std::string& sa) {
  absl::StatusOr<SpiffeId> id = SpiffeId::Make("cluster.local", ns, sa);
  if (!id.ok()) throw std::runtime_error(std::string(id.status().message()));
  return *id;
}

inline std::shared_ptr<const crypto::CertificateAuthority> MakeCa(const std::string& dir) {
  auto ca = crypto::CertificateAuthority::LoadOrCreate(dir);
  if (!ca.ok()) throw std::runtime_error(absl::StrCat("CA: ", ca.status().message()));
  return std::shared_ptr<const crypto::CertificateAuthority>(*std::move(ca));
}

// An IdentityManager and SDS server on a socket in `dir`, authorising a fixed list.
struct SdsServerFixture {
  SdsServerFixture(std::shared_ptr<CertificateSigner> signer, std::string socket,
                   std::vector<SpiffeId> allowed, IdentityManagerOptions options)
      : authorizer(std::move(allowed), std::nullopt),
        manager(std::make_unique<IdentityManager>(std::move(signer), options)),
        server(std::make_unique<SdsServer>(manager.get(), &authorizer,
                                           SocketOnly(std::move(socket)))) {}
  static SdsServerOptions SocketOnly(std::string socket) {
    SdsServerOptions options;
    options.socket_path = std::move(socket);
    return options;
  }
  AllowListAuthorizer authorizer;
  std::unique_ptr<IdentityManager> manager;
  std::unique_ptr<SdsServer> server;
};

inline IdentityManagerOptions ShortLived(absl::Duration lifetime) {
  IdentityManagerOptions options;
  options.lifetime = lifetime;
  options.retry.initial = absl::Milliseconds(50);
  options.retry.max = absl::Milliseconds(500);
  options.reissue_spread = absl::Milliseconds(200);
  options.idle_grace = absl::Seconds(2);
  return options;
}

// The agent's cache, set up to reconnect and forget quickly.
inline CertificateCacheOptions CacheOptions(const std::string& socket) {
  CertificateCacheOptions options;
  options.sds.socket_path = socket;
  options.sds.node_id = "test-node";
  options.sds.reconnect = {absl::Milliseconds(50), absl::Milliseconds(300), 2.0, 0.5};
  options.release_grace = absl::Milliseconds(500);
  options.refused_retry = absl::Seconds(60);
  return options;
}

// A key and a certificate for `identity`, signed by `ca` without any SDS in between.
inline crypto::TlsCredentials IssueDirectly(const crypto::CertificateAuthority& ca,
                                            const SpiffeId& identity) {
  auto key = crypto::PrivateKey::GenerateP256();
  auto csr = crypto::MakeCsr(*key, identity);
  crypto::SignRequest request;
  request.csr_pem = *csr;
  auto issued = ca.Sign(request);
  if (!issued.ok()) throw std::runtime_error(std::string(issued.status().message()));
  return {issued->chain_pem, *key->ToPem()};
}

}  // namespace nodeward::sds::testing
