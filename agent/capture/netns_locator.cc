#include "agent/capture/netns_locator.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/log.h"
#include "agent/cni/state_files.h"
#include "common/files.h"

namespace nodeward::capture {
namespace {

std::string LinkTarget(const std::string& path) {
  char buffer[PATH_MAX];
  const ssize_t length = readlink(path.c_str(), buffer, sizeof(buffer) - 1);
  return length > 0 ? std::string(buffer, static_cast<std::size_t>(length)) : "";
}

bool ContainsPodToken(const std::string& text, const std::string& token) {
  for (std::size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + 1)) {
    // The uid must end there: "pod<uid>/", "pod<uid>.slice", or the line's end.
    const std::size_t end = at + token.size();
    if (end == text.size() || text[end] == '/' || text[end] == '.' || text[end] == '\n') {
      // ...and begin a path component or follow a systemd slice's dash.
      if (at == 0 || text[at - 1] == '/' || text[at - 1] == '-' || text[at - 1] == ':') {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

bool CgroupNamesPod(const std::string& cgroup_text, const std::string& uid) {
  if (uid.empty()) return false;
  return ContainsPodToken(cgroup_text, absl::StrCat("pod", uid)) ||
         ContainsPodToken(cgroup_text, absl::StrCat("pod", absl::StrReplaceAll(uid, {{"-", "_"}})));
}

absl::flat_hash_map<std::string, NetnsLocation> HostNetnsLocator::Find(
    const absl::flat_hash_set<std::string>& uids) {
  absl::flat_hash_map<std::string, NetnsLocation> found;
  if (uids.empty()) return found;
  // Newest record last, so a pod's current sandbox wins over an older one.
  for (const cni::PodRecord& record : cni::ReadPodRecords(cni_state_dir_).records) {
    if (!uids.contains(record.uid)) continue;
    struct stat st {};
    if (stat(record.netns.c_str(), &st) != 0) continue;  // that sandbox is gone
    found[record.uid] = {record.netns, record.container_id, "cni record",
                         absl::FromUnixMillis(record.added_unix_ms)};
  }
  if (found.size() == uids.size()) return found;

  DIR* proc = opendir(proc_root_.c_str());
  if (proc == nullptr) return found;
  const std::string host_netns = LinkTarget(absl::StrCat(proc_root_, "/1/ns/net"));
  std::vector<int> pids;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (absl::SimpleAtoi(entry->d_name, &pid) && pid > 0) pids.push_back(pid);
  }
  closedir(proc);
  std::sort(pids.begin(), pids.end());  // the sandbox's first process: usually the pause one
  for (int pid : pids) {
    absl::StatusOr<std::string> cgroup = ReadFile(absl::StrCat(proc_root_, "/", pid, "/cgroup"));
    if (!cgroup.ok()) continue;
    for (const std::string& uid : uids) {
      if (found.contains(uid) || !CgroupNamesPod(*cgroup, uid)) continue;
      const std::string netns = absl::StrCat(proc_root_, "/", pid, "/ns/net");
      // A host-network pod shares the node's netns: nothing to capture there.
      if (!host_netns.empty() && LinkTarget(netns) == host_netns) continue;
      found[uid] = {netns, "", absl::StrCat("process ", pid), absl::InfinitePast()};
    }
    if (found.size() == uids.size()) break;
  }
  return found;
}

}  // namespace nodeward::capture
