// Finds the network namespace of a pod that is already running, by its Kubernetes uid: first
// from the record nodeward-cni left when it set the sandbox up, else from the processes on the
// node whose cgroup path names the pod (kubelet's pod<uid> or kubepods-...-pod<uid_>.slice,
// cgroupfs and systemd drivers alike), as istio-cni's node agent does.
#pragma once

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"

namespace nodeward::capture {

struct NetnsLocation {
  std::string path;                            // opens the netns
  std::string container_id;                    // the sandbox, when a CNI record said
  std::string found_by;                        // "cni record" or "process <pid>"
  absl::Time recorded = absl::InfinitePast();  // when the CNI record was written
};

class NetnsLocator {
 public:
  virtual ~NetnsLocator() = default;
  // Where each of `uids` that can be found lives; absent uids were not found.
  virtual absl::flat_hash_map<std::string, NetnsLocation> Find(
      const absl::flat_hash_set<std::string>& uids) = 0;
};

class HostNetnsLocator : public NetnsLocator {
 public:
  // `proc_root` is the host's /proc (the agent runs with hostPID).
  HostNetnsLocator(std::string cni_state_dir, std::string proc_root = "/proc")
      : cni_state_dir_(std::move(cni_state_dir)), proc_root_(std::move(proc_root)) {}

  absl::flat_hash_map<std::string, NetnsLocation> Find(
      const absl::flat_hash_set<std::string>& uids) override;

 private:
  const std::string cni_state_dir_;
  const std::string proc_root_;
};

// Whether the cgroup file `cgroup_text` (of /proc/<pid>/cgroup) places the process in the pod
// with `uid`.
bool CgroupNamesPod(const std::string& cgroup_text, const std::string& uid);

}  // namespace nodeward::capture
