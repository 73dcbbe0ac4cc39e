#include "sds/caller.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace nodeward::sds {
namespace {

// A Kubernetes UID: 8-4-4-4-12 hexadecimal digits; the systemd driver writes '_' for '-'.
bool IsUid(absl::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool separator = i == 8 || i == 13 || i == 18 || i == 23;
    if (separator ? (text[i] != '-' && text[i] != '_') : !absl::ascii_isxdigit(text[i])) {
      return false;
    }
  }
  return true;
}

// The UID in one path component, if the component is a pod's cgroup.
std::optional<std::string> UidOfComponent(absl::string_view component) {
  absl::ConsumeSuffix(&component, ".slice");
  const std::size_t at = component.rfind("pod");
  if (at == absl::string_view::npos) return std::nullopt;
  // "pod<uid>" alone, or the last part of "kubepods-burstable-pod<uid>".
  if (at != 0 && component[at - 1] != '-') return std::nullopt;
  absl::string_view uid = component.substr(at + 3);
  if (!IsUid(uid)) return std::nullopt;
  return absl::AsciiStrToLower(absl::StrReplaceAll(uid, {{"_", "-"}}));
}

}  // namespace

std::string SdsCaller::LimitKey() const {
  if (!pod.empty()) return absl::StrCat("pod ", pod);
  return absl::StrCat("uid ", peer.uid);
}

std::string SdsCaller::Describe() const {
  std::string out = absl::StrCat("pid ", peer.pid, " uid ", peer.uid);
  if (!pod.empty()) absl::StrAppend(&out, " pod ", pod);
  if (scope == CallerScope::kWorkload) absl::StrAppend(&out, " (workload socket)");
  return out;
}

absl::StatusOr<std::string> PodUidFromCgroups(absl::string_view proc_cgroup) {
  for (absl::string_view line : absl::StrSplit(proc_cgroup, '\n', absl::SkipEmpty())) {
    // "<hierarchy>:<controllers>:<path>"; the path may itself hold ':'.
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    // The deepest pod component wins: a pod's cgroup never nests in another's.
    std::optional<std::string> found;
    for (absl::string_view component : absl::StrSplit(fields[2], '/', absl::SkipEmpty())) {
      if (std::optional<std::string> uid = UidOfComponent(component)) found = std::move(uid);
    }
    if (found.has_value()) return *std::move(found);
  }
  return absl::NotFoundError("its cgroups name no Kubernetes pod");
}

}  // namespace nodeward::sds
