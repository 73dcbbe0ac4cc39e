#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/capture/captured_pod.h"
#include "agent/capture/connection_handler.h"
#include "agent/capture/enrollment.pb.h"
#include "agent/capture/netns_executor.h"
#include "bpf/capture_dataplane.h"

namespace nodeward::capture {

struct EnrollmentOptions {
  // One file per enrolled pod, so a restarted agent can take its pods back.
  std::string state_dir = "/var/run/nodeward/pods";
};

// Turns "capture this pod" into kernel and socket state, and back:
//  enroll   = in-pod listeners (15001, 15006, 15008; IPv4 and, when the pod has it, IPv6)
//             created inside the pod netns + every address of the pod (the listed ones and
//             all others, link-local included) and the listeners in the inbound map + the
//             delivery routing (pod_network.h) + sk_lookup linked into the netns + netns
//             cookie in `enrolled`; the pod's addresses are then followed as they change;
//  unenroll = the same steps reversed, leaving nothing behind.
// The ConnectionHandler accepts on the listeners; one thread here follows the pods' address
// changes.
class EnrollmentManager {
 public:
  static absl::StatusOr<std::unique_ptr<EnrollmentManager>> Create(
      bpf::CaptureDataplane* dataplane, ConnectionHandler* handler, NetnsExecutor* executor,
      const EnrollmentOptions& options);
  ~EnrollmentManager();
  EnrollmentManager(const EnrollmentManager&) = delete;
  EnrollmentManager& operator=(const EnrollmentManager&) = delete;

  // Re-enrolls the pods recorded by a previous run and removes kernel state that no recorded
  // pod owns (a pod deleted while the agent was down). Call once, before serving requests.
  absl::Status Restore();

  // Idempotent per uid. A uid enrolled with another netns is moved to the new one.
  absl::StatusOr<v1::EnrolledPod> Enroll(const v1::EnrollRequest& request);
  absl::Status Unenroll(const std::string& uid);
  std::vector<v1::EnrolledPod> List() const;
  absl::Status UnenrollAll();

  // Stops following addresses and closes the listeners. Kernel state stays, so enrolled pods fail
  // closed until an agent serves them again.
  void Stop();

 private:
  using ListenerKind = InPodListener::Kind;
  struct Enrollment;

  EnrollmentManager(bpf::CaptureDataplane* dataplane, ConnectionHandler* handler,
                    NetnsExecutor* executor, EnrollmentOptions options, int epoll_fd, int wake_fd);

  absl::Status UnenrollLocked(const std::string& uid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(operation_);
  // Registers `address` as the pod's: steered to its listeners, or refused when it has none
  // of that family. Added to enrollment.addresses once it is in the kernel's map.
  absl::Status SteerAddress(Enrollment& enrollment, const IpAddress& address)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(operation_);
  // Applies the address changes queued on the pod's watch (or lists them again when the
  // kernel dropped some): new addresses steered, vanished ones released.
  void FollowAddresses(const std::string& uid) ABSL_EXCLUSIVE_LOCKS_REQUIRED(operation_);
  // Best-effort removal of every kernel entry of a netns we no longer serve.
  absl::Status ForgetNetns(uint64_t netns_cookie, const std::vector<IpAddress>& addresses);
  absl::Status Persist(const v1::EnrolledPod& record) const;
  std::string StatePath(const std::string& uid) const;
  void WatchLoop();
  // Stops serving it: shut down, which ends the handler's accepts on it.
  void RemoveListener(InPodListener& listener);

  bpf::CaptureDataplane* const dataplane_;
  ConnectionHandler* const handler_;
  NetnsExecutor* const executor_;
  const EnrollmentOptions options_;
  const int epoll_fd_;
  const int wake_fd_;

  // Serialises Enroll/Unenroll/Restore and the address changes.
  mutable absl::Mutex operation_;
  absl::flat_hash_map<std::string, Enrollment> pods_ ABSL_GUARDED_BY(operation_);
  uint32_t next_pod_id_ ABSL_GUARDED_BY(operation_) = 1;
  absl::flat_hash_map<uint64_t, std::string> watches_ ABSL_GUARDED_BY(operation_);  // id -> uid
  uint64_t next_watch_id_ ABSL_GUARDED_BY(operation_) = 1;

  mutable absl::Mutex mutex_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<InPodListener>> listeners_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_listener_id_ ABSL_GUARDED_BY(mutex_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread watch_thread_;
};

// Checks a request and turns it into pod metadata; the uid must be usable as a file name.
absl::StatusOr<PodMetadata> ValidateEnrollRequest(const v1::EnrollRequest& request);

}  // namespace nodeward::capture
