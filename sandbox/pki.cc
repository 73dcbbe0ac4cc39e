#include "sandbox/pki.h"

#include <sys/stat.h>

#include <cerrno>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "sandbox/system.h"

namespace nodeward::sandbox {

absl::Status MakeServerPki(const std::string& out, const std::vector<std::string>& dns_names) {
  if (absl::Status s = MakeDirectories(out, 0755); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
      crypto::CertificateAuthority::LoadOrCreate(absl::StrCat(out, "/ca"));
  if (!ca.ok()) return ca.status();
  absl::StatusOr<crypto::PrivateKey> key = crypto::PrivateKey::GenerateP256();
  if (!key.ok()) return key.status();
  absl::StatusOr<crypto::SignedCertificate> issued =
      (*ca)->IssueServerCertificate(*key, dns_names, absl::Hours(24));
  if (!issued.ok()) return issued.status();
  absl::StatusOr<std::string> key_pem = key->ToPem();
  if (!key_pem.ok()) return key_pem.status();
  const std::string key_path = absl::StrCat(out, "/server-key.pem");
  const mode_t mask = umask(0077);
  absl::Status written = WriteFile(key_path, *key_pem);
  umask(mask);
  if (!written.ok()) return written;
  if (chmod(key_path.c_str(), 0600) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", key_path));
  }
  if (absl::Status s = WriteFile(absl::StrCat(out, "/server-cert.pem"), issued->chain_pem);
      !s.ok()) {
    return s;
  }
  // Two CRLs for a DestinationRule's caCrl: one that revokes nothing, one that revokes the
  // server certificate just written.
  absl::StatusOr<std::string> revokes_nothing = (*ca)->IssueRevocationList({}, absl::Hours(24));
  if (!revokes_nothing.ok()) return revokes_nothing.status();
  absl::StatusOr<std::string> revokes_server =
      (*ca)->IssueRevocationList({issued->leaf.serial_hex}, absl::Hours(24));
  if (!revokes_server.ok()) return revokes_server.status();
  if (absl::Status s = WriteFile(absl::StrCat(out, "/crl.pem"), *revokes_nothing); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFile(absl::StrCat(out, "/crl-server-revoked.pem"), *revokes_server);
      !s.ok()) {
    return s;
  }
  return WriteFile(absl::StrCat(out, "/ca.pem"), issued->roots_pem);
}

}  // namespace nodeward::sandbox
