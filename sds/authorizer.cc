#include "sds/authorizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sds/log.h"

namespace nodeward::sds {

absl::StatusOr<absl::flat_hash_set<SpiffeId>> ParseIdentityList(absl::string_view text) {
  absl::flat_hash_set<SpiffeId> identities;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    absl::StatusOr<SpiffeId> id = SpiffeId::Parse(std::string_view(line.data(), line.size()));
    if (!id.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", id.status().message()));
    }
    identities.insert(*std::move(id));
  }
  return identities;
}

AllowListAuthorizer::AllowListAuthorizer(std::vector<SpiffeId> fixed,
                                         std::optional<std::string> file)
    : fixed_(fixed.begin(), fixed.end()), file_(std::move(file)) {}

absl::Status AllowListAuthorizer::Reload() {
  absl::MutexLock lock(&mu_);
  loaded_stamp_ = FileStamp{};
  return ReloadLocked();
}

absl::Status AllowListAuthorizer::ReloadLocked() {
  if (!file_) return absl::OkStatus();
  struct stat info;
  if (::stat(file_->c_str(), &info) != 0) {
    return absl::NotFoundError(
        absl::StrCat("allowed identities file ", *file_, ": ", std::strerror(errno)));
  }
  FileStamp stamp{
      static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec,
      static_cast<std::int64_t>(info.st_size), static_cast<std::uint64_t>(info.st_ino)};
  if (stamp == loaded_stamp_) return absl::OkStatus();
  std::ifstream in(*file_);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", *file_));
  std::stringstream contents;
  contents << in.rdbuf();
  absl::StatusOr<absl::flat_hash_set<SpiffeId>> parsed = ParseIdentityList(contents.str());
  // Remember the stamp even on failure so a broken file is reported once, not on every call.
  loaded_stamp_ = stamp;
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(*file_, " ", parsed.status().message(), "; keeping the previous list"));
  }
  from_file_ = *std::move(parsed);
  LogInfo("loaded ", from_file_.size(), " allowed identities from ", *file_);
  return absl::OkStatus();
}

absl::Status AllowListAuthorizer::Authorize(const SpiffeId& identity) {
  if (fixed_.contains(identity)) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (absl::Status reloaded = ReloadLocked(); !reloaded.ok()) {
    LogWarning("allow-list reload failed: ", reloaded.message());
  }
  if (from_file_.contains(identity)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "identity ", identity.ToString(), " is not scheduled on this node (not in the allow-list)"));
}

}  // namespace nodeward::sds
