// Which pod of this node a peer process runs in: its cgroups name the pod's UID, the workload
// inventory (the pods scheduled on this node, followed as it changes) gives the pod's
// namespace and service account. Reading another pod's /proc/<pid>/cgroup needs the host's
// PID namespace (hostPID in a DaemonSet); without it the kernel reports no PID.
#pragma once

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "policy/snapshot.h"
#include "policy/source.h"
#include "sds/caller.h"

namespace nodeward::sds {

class PodWorkloadResolver : public WorkloadResolver {
 public:
  // `source` must outlive this.
  PodWorkloadResolver(policy::ConfigSource* source, std::string node_name, std::string trust_domain,
                      std::string proc_root = "/proc");
  ~PodWorkloadResolver() override;
  PodWorkloadResolver(const PodWorkloadResolver&) = delete;
  PodWorkloadResolver& operator=(const PodWorkloadResolver&) = delete;

  absl::StatusOr<Workload> WorkloadOf(const PeerCredentials& peer) override;

 private:
  void Update(const policy::Snapshot& snapshot);

  policy::ConfigSource* const source_;
  const std::string node_name_;
  const std::string trust_domain_;
  const std::string proc_root_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Workload> by_uid_ ABSL_GUARDED_BY(mu_);
  std::uint64_t subscription_ = 0;
};

}  // namespace nodeward::sds
