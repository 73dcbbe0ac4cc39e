// TLS origination contexts (DestinationRule SIMPLE/MUTUAL), one per distinct ClientTLSSettings,
// shared by every connection that uses the same settings: the files are not read and the
// certificates not parsed per connection, and the context's session cache lets the next
// connection to the same server resume instead of doing a full handshake.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/file_stamp.h"
#include "crypto/tls.h"
#include "policy/resources.h"

namespace nodeward::proxy {

// Debian's bundle of the operating system's trusted roots (package ca-certificates).
inline constexpr char kDefaultSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

// DestinationRule ClientTLSSettings -> what the TLS engine needs, reading the files it names.
// As in Istio (VERIFY_CERTIFICATE_AT_CLIENT, always on since 1.24), the server is verified
// against the operating system's roots, `system_ca_bundle`, when caCertificates is unset or
// "system"; only insecureSkipVerify turns verification off.
absl::StatusOr<crypto::OriginationSettings> OriginationFrom(
    const policy::ClientTlsSettings& tls,
    const std::string& system_ca_bundle = kDefaultSystemCaBundle);

// Safe to use from every worker loop.
class OriginationContexts {
 public:
  struct Options {
    // A rotated certificate, key, CA or CRL file is noticed this long after it changed at
    // most (it is looked at again, by stat, when a connection needs the context).
    absl::Duration recheck_interval = absl::Seconds(1);
    // Distinct settings kept; the least recently used goes first.
    std::size_t max_entries = 256;
    // The roots for settings without caCertificates (or with "system").
    std::string system_ca_bundle = kDefaultSystemCaBundle;
  };

  OriginationContexts() : OriginationContexts(Options{}) {}
  explicit OriginationContexts(Options options) : options_(options) {}

  // The context for `tls`, rebuilt when one of its files changed. When the changed files do
  // not make a context (a half-written rotation, a bad CRL), the last good one is kept and the
  // failure logged; with no good one to keep, the failure is returned.
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> Get(
      const policy::ClientTlsSettings& tls, absl::Time now = absl::Now());

  std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<const crypto::TlsContext> context;
    std::vector<FileStamp> stamps;         // of the files `context` was built from
    std::vector<FileStamp> failed_stamps;  // files that did not build: not retried unchanged
    absl::Time checked;
    absl::Time used;
  };

  std::vector<std::string> FilesOf(const policy::ClientTlsSettings& tls) const;
  void EvictLeastRecentlyUsed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const Options options_;
  mutable absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::proxy
