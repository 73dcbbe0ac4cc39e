// Which identities this node may hold. The SDS server asks before issuing anything; the
// implementation is expected to be fed by the cluster's workload inventory eventually, so the
// server only sees this interface.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/spiffe_id.h"

namespace nodeward::sds {

class IdentityAuthorizer {
 public:
  virtual ~IdentityAuthorizer() = default;
  // OK when this node may hold `identity`; PermissionDenied with the reason otherwise.
  virtual absl::Status Authorize(const SpiffeId& identity) = 0;
};

// Parses an allow-list: one SPIFFE ID per line; blank lines and lines starting with '#' are
// ignored. The error names the line that is not a SPIFFE ID.
absl::StatusOr<absl::flat_hash_set<SpiffeId>> ParseIdentityList(absl::string_view text);

// A fixed set of identities plus, optionally, those listed in a file. The file is re-read when
// its modification time or size changes (checked on every call, which is one stat) and on
// Reload() (SIGHUP). A file that fails to parse keeps the previous list, so a half-written edit
// never revokes every workload at once.
class AllowListAuthorizer : public IdentityAuthorizer {
 public:
  AllowListAuthorizer(std::vector<SpiffeId> fixed, std::optional<std::string> file);

  // Loads the file now; the error says why it could not be used.
  absl::Status Reload();
  absl::Status Authorize(const SpiffeId& identity) override;

 private:
  struct FileStamp {
    std::int64_t mtime_ns = -1;
    std::int64_t size = -1;
    std::uint64_t inode = 0;
    friend bool operator==(const FileStamp&, const FileStamp&) = default;
  };
  absl::Status ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::flat_hash_set<SpiffeId> fixed_;
  const std::optional<std::string> file_;
  absl::Mutex mu_;
  absl::flat_hash_set<SpiffeId> from_file_ ABSL_GUARDED_BY(mu_);
  FileStamp loaded_stamp_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nodeward::sds
