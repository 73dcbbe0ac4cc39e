#include "agent/proxy/origination_contexts.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/log.h"

namespace nodeward::proxy {
namespace {

bool IsMutual(const policy::ClientTlsSettings& tls) { return tls.mode == policy::TlsMode::kMutual; }

// The file the server's roots come from; empty when nothing is verified.
std::string RootsFile(const policy::ClientTlsSettings& tls, const std::string& system_ca_bundle) {
  if (tls.insecure_skip_verify) return "";
  if (tls.ca_certificates.empty() || tls.ca_certificates == "system") return system_ca_bundle;
  return tls.ca_certificates;
}

absl::StatusOr<std::string> ReadNamed(const char* field, const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        absl::StrCat(field, ": ", contents.status().message()));
  }
  return contents;
}

// Every field that makes two settings build different contexts.
std::string KeyOf(const policy::ClientTlsSettings& tls) {
  return absl::StrJoin(
      {std::string(policy::TlsModeName(tls.mode)), tls.client_certificate, tls.private_key,
       tls.ca_certificates, tls.ca_crl, tls.sni, std::string(tls.insecure_skip_verify ? "1" : "0"),
       tls.credential_name, absl::StrJoin(tls.subject_alt_names, absl::string_view("\x1f", 1))},
      absl::string_view("\0", 1));
}

}  // namespace

absl::StatusOr<crypto::OriginationSettings> OriginationFrom(const policy::ClientTlsSettings& tls,
                                                            const std::string& system_ca_bundle) {
  if (!tls.credential_name.empty()) {
    return absl::UnimplementedError(
        "credentialName (Kubernetes secrets) is not supported; use file paths");
  }
  crypto::OriginationSettings settings;
  settings.mode = IsMutual(tls) ? crypto::OriginationSettings::Mode::kMutual
                                : crypto::OriginationSettings::Mode::kSimple;
  settings.subject_alt_names = tls.subject_alt_names;
  settings.sni = tls.sni;
  settings.insecure_skip_verify = tls.insecure_skip_verify;
  if (const std::string roots = RootsFile(tls, system_ca_bundle); !roots.empty()) {
    absl::StatusOr<std::string> ca = ReadNamed(
        roots == tls.ca_certificates ? "caCertificates"
                                     : "the system's roots (caCertificates unset or \"system\")",
        roots);
    if (!ca.ok()) return ca.status();
    settings.ca_certificates_pem = *std::move(ca);
  }
  if (!tls.ca_crl.empty() && !tls.insecure_skip_verify) {
    absl::StatusOr<std::string> crl = ReadNamed("caCrl", tls.ca_crl);
    if (!crl.ok()) return crl.status();
    settings.ca_crl_pem = *std::move(crl);
  }
  if (IsMutual(tls)) {
    absl::StatusOr<std::string> cert = ReadNamed("clientCertificate", tls.client_certificate);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadNamed("privateKey", tls.private_key);
    if (!key.ok()) return key.status();
    settings.client_credentials = crypto::TlsCredentials{*std::move(cert), *std::move(key)};
  }
  return settings;
}

std::vector<std::string> OriginationContexts::FilesOf(const policy::ClientTlsSettings& tls) const {
  std::vector<std::string> files;
  if (const std::string roots = RootsFile(tls, options_.system_ca_bundle); !roots.empty()) {
    files.push_back(roots);
  }
  if (!tls.ca_crl.empty() && !tls.insecure_skip_verify) files.push_back(tls.ca_crl);
  if (IsMutual(tls)) {
    files.push_back(tls.client_certificate);
    files.push_back(tls.private_key);
  }
  return files;
}

absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> OriginationContexts::Get(
    const policy::ClientTlsSettings& tls, absl::Time now) {
  const std::string key = KeyOf(tls);
  absl::MutexLock lock(&mutex_);
  auto found = entries_.find(key);
  if (found != entries_.end()) {
    found->second.used = now;
    if (now - found->second.checked < options_.recheck_interval) return found->second.context;
  }
  const std::vector<std::string> files = FilesOf(tls);
  std::vector<FileStamp> stamps = StampFiles(files);
  if (found != entries_.end()) {
    Entry& entry = found->second;
    entry.checked = now;
    if (stamps == entry.stamps || stamps == entry.failed_stamps) return entry.context;
  }

  // Stamped before reading: a file replaced while it is read shows as changed next time.
  absl::StatusOr<crypto::OriginationSettings> settings =
      OriginationFrom(tls, options_.system_ca_bundle);
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
      settings.ok() ? crypto::TlsContext::OriginationClient(*settings)
                    : absl::StatusOr<std::shared_ptr<const crypto::TlsContext>>(settings.status());
  if (!context.ok()) {
    if (found == entries_.end()) return context.status();
    found->second.failed_stamps = std::move(stamps);
    Log(LogLevel::kWarning, "TLS origination files ", absl::StrJoin(files, ", "),
        " changed but do not build (", context.status().message(),
        "); the previous ones stay in use");
    return found->second.context;
  }
  if (found == entries_.end()) {
    if (entries_.size() >= options_.max_entries) EvictLeastRecentlyUsed();
    found = entries_.emplace(key, Entry{}).first;
  }
  Entry& entry = found->second;
  entry.context = *std::move(context);
  entry.stamps = std::move(stamps);
  entry.failed_stamps.clear();
  entry.checked = now;
  entry.used = now;
  return entry.context;
}

void OriginationContexts::EvictLeastRecentlyUsed() {
  auto oldest = entries_.begin();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.used < oldest->second.used) oldest = it;
  }
  if (oldest != entries_.end()) entries_.erase(oldest);
}

std::size_t OriginationContexts::size() const {
  absl::MutexLock lock(&mutex_);
  return entries_.size();
}

}  // namespace nodeward::proxy
