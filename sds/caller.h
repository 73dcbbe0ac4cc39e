// Who is on the other end of an SDS connection: the kernel's account of the Unix socket peer
// (SO_PEERCRED) and, when that process runs in a pod of this node, the pod and its workload
// identity. That identity is what the resource name "default" means for the caller, as it
// means the pod's own identity to istio-agent, and the pod is what per-caller limits count.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/spiffe_id.h"

namespace nodeward::sds {

struct PeerCredentials {
  pid_t pid = 0;  // 0 when the peer's PID namespace is not visible from here
  uid_t uid = 0;
  gid_t gid = 0;
};

// Which socket a caller came in through.
enum class CallerScope {
  // The node's agent: any identity this node may hold.
  kNode,
  // A pod's own proxy (a socket mounted into pods): its own identity and the bundle only.
  kWorkload,
};

struct SdsCaller {
  PeerCredentials peer;
  CallerScope scope = CallerScope::kNode;
  // The workload identity of the pod the peer process runs in, when it could be told.
  std::optional<SpiffeId> workload;
  std::string pod;  // "namespace/name", with `workload`
  // Why `workload` is unset, for the error a "default" request gets.
  std::string unattributed_reason;

  // What per-caller limits count by: the pod when known, else the peer's user.
  std::string LimitKey() const;
  // For log lines: "pid 42 uid 1337 pod shop/web-1".
  std::string Describe() const;
};

// Tells the pod, and so the workload identity, of a peer process.
class WorkloadResolver {
 public:
  struct Workload {
    SpiffeId identity;
    std::string pod;  // "namespace/name"
  };
  virtual ~WorkloadResolver() = default;
  // NotFound with the reason when the process is not known to run in a pod of this node.
  virtual absl::StatusOr<Workload> WorkloadOf(const PeerCredentials& peer) = 0;
};

// The pod UID in the text of /proc/<pid>/cgroup: the kubelet names a pod's cgroup
// "pod<uid>" (cgroupfs driver) or "kubepods-<qos>-pod<uid with _ for ->.slice" (systemd
// driver), on cgroup v1 and v2 alike, and under a cgroup namespace the path is relative but
// keeps that component. The UID is returned with dashes. NotFound when no line names a pod.
absl::StatusOr<std::string> PodUidFromCgroups(absl::string_view proc_cgroup);

}  // namespace nodeward::sds
