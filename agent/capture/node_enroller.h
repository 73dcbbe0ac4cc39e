// The node enroller: keeps what is enrolled on this node equal to what the configuration says
// (pods of this node in namespaces labelled nodeward.io/dataplane-mode=enabled or
// istio.io/dataplane-mode=ambient, minus those that opt out), the way istio-cni's node agent
// does for ztunnel. Two paths end in the same EnrollmentManager call:
//  - nodeward-cni's ADD at pod creation (CniHandler): answered once the netns is captured, so
//    the application's first connection is protected;
//  - the watch: at start the pods already running are found by their netns and enrolled, and
//    those no longer there released; afterwards label changes enroll and release live pods.
// Failures are retried at every resync, counted, and logged once per pod and reason.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/capture/enrollment.pb.h"
#include "agent/capture/enrollment_manager.h"
#include "agent/capture/netns_locator.h"
#include "agent/cni/cni_server.h"
#include "policy/source.h"

namespace nodeward::capture {

// What the enroller needs of the enrollment layer.
class PodEnrollment {
 public:
  virtual ~PodEnrollment() = default;
  virtual absl::StatusOr<v1::EnrolledPod> Enroll(const v1::EnrollRequest& request) = 0;
  virtual absl::Status Unenroll(const std::string& uid) = 0;
  virtual std::vector<v1::EnrolledPod> List() const = 0;
};

// The EnrollmentManager as a PodEnrollment.
class ManagerEnrollment final : public PodEnrollment {
 public:
  explicit ManagerEnrollment(EnrollmentManager* manager) : manager_(manager) {}
  absl::StatusOr<v1::EnrolledPod> Enroll(const v1::EnrollRequest& request) override {
    return manager_->Enroll(request);
  }
  absl::Status Unenroll(const std::string& uid) override { return manager_->Unenroll(uid); }
  std::vector<v1::EnrolledPod> List() const override { return manager_->List(); }

 private:
  EnrollmentManager* const manager_;
};

struct NodeEnrollerOptions {
  std::string node_name;
  // Rewritten whenever the enrolled namespaces change; empty: not written.
  std::string enrolled_namespaces_file;
  absl::Duration resync_interval = absl::Seconds(10);
  // A sandbox's CNI record younger than this may belong to an ADD on its way to the agent
  // (the plugin writes the record, then calls): the watch leaves that pod to it meanwhile.
  absl::Duration cni_grace = absl::Seconds(2);
};

// A pod of this node that should be enrolled and is not.
struct EnrollmentGap {
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string reason;
  absl::Time since;
  int attempts = 0;
};

class NodeEnroller : public cni::CniHandler {
 public:
  // `source` gives this node's pods and their namespaces (it may hold more).
  NodeEnroller(policy::ConfigSource* source, PodEnrollment* enrollment, NetnsLocator* locator,
               NodeEnrollerOptions options);
  ~NodeEnroller() override;
  NodeEnroller(const NodeEnroller&) = delete;
  NodeEnroller& operator=(const NodeEnroller&) = delete;

  // Subscribes to the source and starts reconciling. Call after EnrollmentManager::Restore.
  void Start();
  void Stop();

  std::vector<EnrollmentGap> Gaps() const;
  // Failed enrollment attempts, by origin ("cni", "sync at start", ...).
  std::map<std::string, uint64_t> FailureCounts() const;
  // When a reconcile last completed; InfinitePast before the first.
  absl::Time LastReconcile() const;

  cni::v1::Response Add(const cni::v1::AddRequest& request, absl::Time deadline) override;
  cni::v1::Response Del(const cni::v1::DelRequest& request) override;
  cni::v1::Response Check(const cni::v1::CheckRequest& request) override;

 private:
  void Run();
  void Reconcile();
  // The latest snapshot, waiting until `deadline` for one that satisfies `ready`.
  std::shared_ptr<const policy::Snapshot> AwaitSnapshot(
      absl::Time deadline, const std::function<bool(const policy::Snapshot&)>& ready)
      ABSL_LOCKS_EXCLUDED(mutex_);
  v1::EnrollRequest RequestFor(const policy::Pod& pod, v1::EnrollmentOrigin origin,
                               const std::string& netns, const std::string& container_id) const;
  void RecordGap(const policy::Pod& pod, const std::string& reason, bool attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void CountFailure(v1::EnrollmentOrigin origin) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void WarnAboutLabels(const policy::Snapshot& snapshot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  policy::ConfigSource* const source_;
  PodEnrollment* const enrollment_;
  NetnsLocator* const locator_;
  const NodeEnrollerOptions options_;

  mutable absl::Mutex mutex_;
  std::shared_ptr<const policy::Snapshot> latest_ ABSL_GUARDED_BY(mutex_);
  uint64_t snapshot_serial_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t reconciled_serial_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  bool started_reconciling_ ABSL_GUARDED_BY(mutex_) = false;
  absl::flat_hash_set<std::string> excluded_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_set<std::string> cni_in_flight_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, EnrollmentGap> gaps_ ABSL_GUARDED_BY(mutex_);  // by uid
  std::map<std::string, uint64_t> failures_ ABSL_GUARDED_BY(mutex_);
  std::set<std::string> written_namespaces_ ABSL_GUARDED_BY(mutex_);
  bool namespaces_written_ ABSL_GUARDED_BY(mutex_) = false;
  absl::flat_hash_set<std::string> warned_labels_ ABSL_GUARDED_BY(mutex_);
  absl::Time last_reconcile_ ABSL_GUARDED_BY(mutex_) = absl::InfinitePast();

  uint64_t subscription_ = 0;
  bool subscribed_ = false;
  std::thread worker_;
};

}  // namespace nodeward::capture
