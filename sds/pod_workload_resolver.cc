#include "sds/pod_workload_resolver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace nodeward::sds {

PodWorkloadResolver::PodWorkloadResolver(policy::ConfigSource* source, std::string node_name,
                                         std::string trust_domain, std::string proc_root)
    : source_(source),
      node_name_(std::move(node_name)),
      trust_domain_(std::move(trust_domain)),
      proc_root_(std::move(proc_root)) {
  subscription_ = source_->Subscribe([this](std::shared_ptr<const policy::Snapshot> snapshot) {
    if (snapshot != nullptr) Update(*snapshot);
  });
}

PodWorkloadResolver::~PodWorkloadResolver() { source_->Unsubscribe(subscription_); }

void PodWorkloadResolver::Update(const policy::Snapshot& snapshot) {
  absl::flat_hash_map<std::string, Workload> by_uid;
  for (const policy::Pod& pod : snapshot.resources().pods) {
    if (pod.meta.uid.empty() || pod.node_name != node_name_ || pod.phase == "Succeeded" ||
        pod.phase == "Failed") {
      continue;
    }
    absl::StatusOr<SpiffeId> id = SpiffeId::Make(trust_domain_, pod.meta.ns, pod.service_account);
    if (!id.ok()) continue;
    by_uid.emplace(pod.meta.uid,
                   Workload{*std::move(id), absl::StrCat(pod.meta.ns, "/", pod.meta.name)});
  }
  absl::MutexLock lock(&mu_);
  by_uid_ = std::move(by_uid);
}

absl::StatusOr<WorkloadResolver::Workload> PodWorkloadResolver::WorkloadOf(
    const PeerCredentials& peer) {
  if (peer.pid <= 0) {
    return absl::NotFoundError(
        "the caller's PID is not visible here (nodeward-sds needs the host's PID namespace)");
  }
  absl::StatusOr<std::string> cgroups =
      ReadFile(absl::StrCat(proc_root_, "/", peer.pid, "/cgroup"));
  if (!cgroups.ok()) {
    return absl::NotFoundError(absl::StrCat("the cgroups of pid ", peer.pid,
                                            " cannot be read: ", cgroups.status().message()));
  }
  absl::StatusOr<std::string> uid = PodUidFromCgroups(*cgroups);
  if (!uid.ok()) {
    return absl::NotFoundError(absl::StrCat("pid ", peer.pid, ": ", uid.status().message()));
  }
  absl::MutexLock lock(&mu_);
  auto it = by_uid_.find(*uid);
  if (it == by_uid_.end()) {
    return absl::NotFoundError(absl::StrCat("pid ", peer.pid, " runs in pod UID ", *uid,
                                            ", which is not a pod scheduled on node ", node_name_));
  }
  return it->second;
}

}  // namespace nodeward::sds
