// Helpers shared by crypto/'s tests, fuzz targets and benchmarks: throwaway CA directories
// and workload certificates. Test-only; nothing in a shipped binary includes it.
#pragma once

#include <stdlib.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/tls.h"

namespace nodeward::crypto::testing {

// A directory removed with its contents when this goes out of scope, also on test failure.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "nodeward-crypto-XXXXXX");
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct Workload {
  PrivateKey key;
  SignedCertificate cert;
  std::string key_pem;
  TlsCredentials credentials() const { return {cert.chain_pem, key_pem}; }
};

inline absl::StatusOr<Workload> IssueWorkload(const CertificateAuthority& ca,
                                              const SpiffeId& identity,
                                              absl::Duration lifetime = absl::Hours(24),
                                              std::optional<absl::Time> not_before = {}) {
  absl::StatusOr<PrivateKey> key = PrivateKey::GenerateP256();
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> csr = MakeCsr(*key, identity);
  if (!csr.ok()) return csr.status();
  SignRequest request;
  request.csr_pem = *csr;
  request.lifetime = lifetime;
  request.not_before = not_before;
  absl::StatusOr<SignedCertificate> cert = ca.Sign(request);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_pem = key->ToPem();
  if (!key_pem.ok()) return key_pem.status();
  return Workload{*std::move(key), *std::move(cert), *std::move(key_pem)};
}

inline SpiffeId Id(const std::string& td, const std::string& ns, const std::string& sa) {
  return *SpiffeId::Make(td, ns, sa);
}

// Moves what `from` has for the wire into `to`, as far as `to` accepts it; whether any moved.
inline bool Transfer(TlsEngine& from, TlsEngine& to) {
  bool moved = false;
  while (from.PendingWire() > 0) {
    const std::size_t n = to.FeedWire(from.PeekWire());
    if (n == 0) break;
    from.ConsumeWire(n);
    moved = true;
  }
  return moved;
}

// Runs both engines and moves bytes between them until none move: a handshake's flights, or
// what was written. Failures are left in the engines' states.
inline void Pump(TlsEngine& client, TlsEngine& server) {
  for (int round = 0; round < 64; ++round) {
    (void)client.Advance();
    (void)server.Advance();
    const bool to_server = Transfer(client, server);
    const bool to_client = Transfer(server, client);
    if (!to_server && !to_client) break;
  }
}

}  // namespace nodeward::crypto::testing
