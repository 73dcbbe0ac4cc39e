// What the node enroller should change, as a pure function of the configuration (this node's
// pods and their namespaces) and of what is enrolled: which pods to enroll (and why, which the
// CLI shows), which to release (and why). Pods enrolled through the enrollment API by hand are
// never touched; the enroller owns the ones it or nodeward-cni enrolled.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "agent/capture/enrollment.pb.h"
#include "policy/snapshot.h"

namespace nodeward::capture {

struct PlannedEnrollment {
  const policy::Pod* pod = nullptr;  // points into the snapshot
  v1::EnrollmentOrigin origin = v1::ORIGIN_WATCH;
  std::string reason;  // why it is to be enrolled (the namespace label)
};

struct PlannedRelease {
  std::string uid;
  std::string pod;  // namespace/name
  std::string reason;
};

struct EnrollmentPlan {
  std::vector<PlannedEnrollment> enroll;
  std::vector<PlannedRelease> release;
  // Pods of this node that are not to be enrolled now: a later plan that enrolls one of them
  // does so because a label changed.
  absl::flat_hash_set<std::string> excluded;
  // Namespaces whose pods are enrolled: what nodeward-cni decides by while the agent is away.
  std::set<std::string> enrolled_namespaces;
};

struct PlanInput {
  const policy::Snapshot* snapshot = nullptr;
  std::string node_name;
  std::vector<v1::EnrolledPod> enrolled;
  bool startup = false;                           // the first plan since the agent started
  absl::flat_hash_set<std::string> was_excluded;  // `excluded` of the previous plan
};

EnrollmentPlan PlanEnrollment(const PlanInput& input);

// Whether pods of namespace `ns` are enrolled (unless they opt out), by the same decision as
// policy::ResolveEnrollment.
bool NamespaceEnrolls(const policy::Snapshot& snapshot, const std::string& ns);

const char* OriginName(v1::EnrollmentOrigin origin);

}  // namespace nodeward::capture
