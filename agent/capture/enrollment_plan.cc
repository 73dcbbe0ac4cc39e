#include "agent/capture/enrollment_plan.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "policy/decisions.h"

namespace nodeward::capture {
namespace {

// Pods that have finished no longer own a netns worth capturing.
bool Finished(const policy::Pod& pod) { return pod.phase == "Succeeded" || pod.phase == "Failed"; }

}  // namespace

const char* OriginName(v1::EnrollmentOrigin origin) {
  switch (origin) {
    case v1::ORIGIN_API:
      return "api";
    case v1::ORIGIN_CNI:
      return "cni";
    case v1::ORIGIN_STARTUP_SYNC:
      return "sync at start";
    case v1::ORIGIN_LABEL_CHANGE:
      return "label change";
    case v1::ORIGIN_WATCH:
      return "watch";
    default:
      return "unknown";
  }
}

bool NamespaceEnrolls(const policy::Snapshot& snapshot, const std::string& ns) {
  // A pod of the namespace with no labels of its own: what the namespace alone decides.
  policy::Pod probe;
  probe.meta.ns = ns;
  probe.meta.name = "-";
  return policy::ResolveEnrollment(snapshot, probe).enrolled;
}

EnrollmentPlan PlanEnrollment(const PlanInput& input) {
  EnrollmentPlan plan;
  const policy::Snapshot& snapshot = *input.snapshot;
  for (const policy::Namespace& ns : snapshot.resources().namespaces) {
    if (NamespaceEnrolls(snapshot, ns.meta.name)) plan.enrolled_namespaces.insert(ns.meta.name);
  }
  absl::flat_hash_map<std::string, const v1::EnrolledPod*> enrolled;
  for (const v1::EnrolledPod& record : input.enrolled) enrolled[record.pod().uid()] = &record;

  absl::flat_hash_set<std::string> on_node;
  for (const policy::Pod& pod : snapshot.resources().pods) {
    if (pod.node_name != input.node_name || pod.meta.uid.empty()) continue;
    on_node.insert(pod.meta.uid);
    const policy::Enrollment decision = policy::ResolveEnrollment(snapshot, pod);
    const bool wanted = decision.enrolled && !Finished(pod);
    auto current = enrolled.find(pod.meta.uid);
    if (!wanted) {
      plan.excluded.insert(pod.meta.uid);
      if (current != enrolled.end() && current->second->pod().origin() != v1::ORIGIN_API) {
        plan.release.push_back(
            {pod.meta.uid, absl::StrCat(pod.meta.ns, "/", pod.meta.name),
             Finished(pod) ? absl::StrCat("pod has ended (", pod.phase, ")") : decision.reason});
      }
      continue;
    }
    if (current != enrolled.end()) continue;
    v1::EnrollmentOrigin origin = v1::ORIGIN_WATCH;
    if (input.startup) {
      origin = v1::ORIGIN_STARTUP_SYNC;
    } else if (input.was_excluded.contains(pod.meta.uid)) {
      origin = v1::ORIGIN_LABEL_CHANGE;
    }
    plan.enroll.push_back({&pod, origin, decision.reason});
  }
  // Enrolled by us for a pod this node no longer runs: deleted (perhaps while the agent was
  // down) or never known to the configuration.
  for (const v1::EnrolledPod& record : input.enrolled) {
    if (record.pod().origin() == v1::ORIGIN_API || on_node.contains(record.pod().uid())) continue;
    plan.release.push_back({record.pod().uid(),
                            absl::StrCat(record.pod().namespace_(), "/", record.pod().name()),
                            absl::StrCat("pod is no longer on node ", input.node_name)});
  }
  return plan;
}

}  // namespace nodeward::capture
