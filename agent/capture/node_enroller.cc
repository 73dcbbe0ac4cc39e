#include "agent/capture/node_enroller.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/capture/enrollment_plan.h"
#include "agent/cni/state_files.h"
#include "common/log.h"
#include "policy/decisions.h"

namespace nodeward::capture {
namespace {

using CniResponse = cni::v1::Response;

CniResponse Answer(cni::v1::Outcome outcome, std::string reason, uint64_t cookie = 0) {
  CniResponse response;
  response.set_outcome(outcome);
  response.set_reason(std::move(reason));
  response.set_netns_cookie(cookie);
  return response;
}

bool SameNetns(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa {};
  struct stat sb {};
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string PodName(const policy::Pod& pod) {
  return absl::StrCat(pod.meta.ns, "/", pod.meta.name);
}

// The dataplane-mode values that mean something; any other is a typo worth one warning.
constexpr std::pair<const char*, const char*> kModeLabels[] = {
    {"nodeward.io/dataplane-mode", "enabled"}, {"istio.io/dataplane-mode", "ambient"}};

}  // namespace

NodeEnroller::NodeEnroller(policy::ConfigSource* source, PodEnrollment* enrollment,
                           NetnsLocator* locator, NodeEnrollerOptions options)
    : source_(source), enrollment_(enrollment), locator_(locator), options_(std::move(options)) {}

NodeEnroller::~NodeEnroller() { Stop(); }

void NodeEnroller::Start() {
  subscription_ = source_->Subscribe([this](std::shared_ptr<const policy::Snapshot> snapshot) {
    absl::MutexLock lock(&mutex_);
    latest_ = std::move(snapshot);
    ++snapshot_serial_;
  });
  subscribed_ = true;
  worker_ = std::thread([this] { Run(); });
}

void NodeEnroller::Stop() {
  if (subscribed_) {
    source_->Unsubscribe(subscription_);
    subscribed_ = false;
  }
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

std::vector<EnrollmentGap> NodeEnroller::Gaps() const {
  // A pod enrolled since (through the API, say) is no gap, even before the next reconcile.
  absl::flat_hash_set<std::string> enrolled;
  for (const v1::EnrolledPod& record : enrollment_->List()) enrolled.insert(record.pod().uid());
  absl::MutexLock lock(&mutex_);
  std::vector<EnrollmentGap> gaps;
  for (const auto& [uid, gap] : gaps_) {
    if (!enrolled.contains(uid)) gaps.push_back(gap);
  }
  return gaps;
}

std::map<std::string, uint64_t> NodeEnroller::FailureCounts() const {
  absl::MutexLock lock(&mutex_);
  return failures_;
}

absl::Time NodeEnroller::LastReconcile() const {
  absl::MutexLock lock(&mutex_);
  return last_reconcile_;
}

std::shared_ptr<const policy::Snapshot> NodeEnroller::AwaitSnapshot(
    absl::Time deadline, const std::function<bool(const policy::Snapshot&)>& ready) {
  absl::MutexLock lock(&mutex_);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return stopping_ || (latest_ != nullptr && ready(*latest_));
  };
  mutex_.AwaitWithDeadline(absl::Condition(&done), deadline);
  return latest_;
}

v1::EnrollRequest NodeEnroller::RequestFor(const policy::Pod& pod, v1::EnrollmentOrigin origin,
                                           const std::string& netns,
                                           const std::string& container_id) const {
  v1::EnrollRequest request;
  request.set_netns_path(netns);
  request.set_namespace_(pod.meta.ns);
  request.set_name(pod.meta.name);
  request.set_uid(pod.meta.uid);
  request.set_service_account(pod.service_account);
  for (const IpAddress& ip : pod.ips) request.add_ips(ip.ToString());
  for (const auto& [key, value] : pod.meta.labels) (*request.mutable_labels())[key] = value;
  request.set_origin(origin);
  request.set_container_id(container_id);
  request.set_enrolled_at_unix_ms(absl::ToUnixMillis(absl::Now()));
  return request;
}

void NodeEnroller::RecordGap(const policy::Pod& pod, const std::string& reason, bool attempt) {
  EnrollmentGap& gap = gaps_[pod.meta.uid];
  const bool changed = gap.reason != reason;
  if (gap.uid.empty()) {
    gap = {pod.meta.ns, pod.meta.name, pod.meta.uid, reason, absl::Now(), 0};
  }
  gap.reason = reason;
  if (attempt) ++gap.attempts;
  // Once per pod and reason, not at every resync.
  if (changed) {
    Log(attempt ? LogLevel::kWarning : LogLevel::kInfo, "pod=", PodName(pod), " uid=", pod.meta.uid,
        " identity=", pod.service_account, " not enrolled reason=", reason);
  }
}

void NodeEnroller::CountFailure(v1::EnrollmentOrigin origin) { ++failures_[OriginName(origin)]; }

void NodeEnroller::WarnAboutLabels(const policy::Snapshot& snapshot) {
  auto check = [&](absl::string_view what, const policy::Labels& labels, bool is_pod) {
    for (const auto& [key, enabling] : kModeLabels) {
      auto it = labels.find(key);
      if (it == labels.end() || it->second == "none" || (!is_pod && it->second == enabling)) {
        continue;
      }
      const std::string warned = absl::StrCat(what, " ", key, "=", it->second);
      if (!warned_labels_.insert(warned).second) continue;
      Log(LogLevel::kWarning, what, " has label ", key, "=", it->second, ": ",
          is_pod ? "only \"none\" means something on a pod (it opts out); ignored"
                 : absl::StrCat("not \"", enabling,
                                "\" or \"none\", so its pods are not enrolled "
                                "by it"));
    }
  };
  for (const policy::Namespace& ns : snapshot.resources().namespaces) {
    check(absl::StrCat("namespace ", ns.meta.name), ns.meta.labels, false);
  }
  for (const policy::Pod& pod : snapshot.resources().pods) {
    if (pod.node_name == options_.node_name) {
      check(absl::StrCat("pod ", PodName(pod)), pod.meta.labels, true);
    }
  }
}

void NodeEnroller::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stopping_ || snapshot_serial_ != reconciled_serial_;
      };
      mutex_.AwaitWithTimeout(absl::Condition(&wake), options_.resync_interval);
      if (stopping_) return;
    }
    Reconcile();
  }
}

void NodeEnroller::Reconcile() {
  PlanInput input;
  std::shared_ptr<const policy::Snapshot> snapshot;
  uint64_t serial;
  {
    absl::MutexLock lock(&mutex_);
    snapshot = latest_;
    serial = snapshot_serial_;
    if (snapshot == nullptr) return;
    input.startup = !started_reconciling_;
    input.was_excluded = excluded_;
  }
  input.snapshot = snapshot.get();
  input.node_name = options_.node_name;
  input.enrolled = enrollment_->List();
  const EnrollmentPlan plan = PlanEnrollment(input);
  absl::flat_hash_set<std::string> in_flight;
  {
    absl::MutexLock lock(&mutex_);
    excluded_ = plan.excluded;
    in_flight = cni_in_flight_;
    WarnAboutLabels(*snapshot);
    if (!options_.enrolled_namespaces_file.empty() &&
        (!namespaces_written_ || written_namespaces_ != plan.enrolled_namespaces)) {
      absl::Status written =
          cni::WriteEnrolledNamespaces(options_.enrolled_namespaces_file, plan.enrolled_namespaces);
      if (written.ok()) {
        written_namespaces_ = plan.enrolled_namespaces;
        namespaces_written_ = true;
      } else {
        Log(LogLevel::kError,
            "enrolled namespaces for nodeward-cni not written: ", written.ToString());
      }
    }
  }

  for (const PlannedRelease& release : plan.release) {
    if (in_flight.contains(release.uid)) continue;
    absl::Status status = enrollment_->Unenroll(release.uid);
    Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "pod=", release.pod,
        " uid=", release.uid, " released reason=", release.reason,
        status.ok() ? "" : absl::StrCat(" error=", status.ToString()));
  }

  absl::flat_hash_set<std::string> wanted;
  for (const PlannedEnrollment& planned : plan.enroll) {
    if (!in_flight.contains(planned.pod->meta.uid)) wanted.insert(planned.pod->meta.uid);
  }
  absl::flat_hash_map<std::string, NetnsLocation> found = locator_->Find(wanted);
  absl::flat_hash_set<std::string> still_missing;
  absl::flat_hash_set<std::string> postponed;  // keep how they will be enrolled
  for (const PlannedEnrollment& planned : plan.enroll) {
    const policy::Pod& pod = *planned.pod;
    if (!wanted.contains(pod.meta.uid)) continue;
    auto location = found.find(pod.meta.uid);
    if (location == found.end()) {
      absl::MutexLock lock(&mutex_);
      RecordGap(pod,
                pod.phase == "Pending" || pod.phase.empty()
                    ? "waiting for its sandbox: no network namespace yet"
                    : "no network namespace found for it on this node (no CNI record, no "
                      "process in its cgroup)",
                /*attempt=*/false);
      still_missing.insert(pod.meta.uid);
      continue;
    }
    if (absl::Now() - location->second.recorded < options_.cni_grace) {
      still_missing.insert(pod.meta.uid);  // its CNI ADD has not reached us yet
      postponed.insert(pod.meta.uid);
      continue;
    }
    absl::StatusOr<v1::EnrolledPod> enrolled = enrollment_->Enroll(
        RequestFor(pod, planned.origin, location->second.path, location->second.container_id));
    absl::MutexLock lock(&mutex_);
    if (!enrolled.ok()) {
      CountFailure(planned.origin);
      RecordGap(pod, absl::StrCat("enrolling failed: ", enrolled.status().ToString()),
                /*attempt=*/true);
      still_missing.insert(pod.meta.uid);
      continue;
    }
    gaps_.erase(pod.meta.uid);
    Log(LogLevel::kInfo, "pod=", PodName(pod), " uid=", pod.meta.uid,
        " identity=", pod.service_account, " enrolled by=", OriginName(planned.origin),
        " netns=", location->second.path, " (", location->second.found_by,
        ") reason=", planned.reason);
  }

  absl::MutexLock lock(&mutex_);
  for (const PlannedEnrollment& planned : plan.enroll) {
    const std::string& uid = planned.pod->meta.uid;
    if ((postponed.contains(uid) || in_flight.contains(uid)) && input.was_excluded.contains(uid)) {
      excluded_.insert(uid);
    }
  }
  for (auto it = gaps_.begin(); it != gaps_.end();) {
    it = still_missing.contains(it->first) || cni_in_flight_.contains(it->first) ? std::next(it)
                                                                                 : gaps_.erase(it);
  }
  started_reconciling_ = true;
  reconciled_serial_ = serial;
  last_reconcile_ = absl::Now();
}

CniResponse NodeEnroller::Add(const cni::v1::AddRequest& request, absl::Time deadline) {
  const std::string& ns = request.pod().namespace_();
  const std::string& name = request.pod().name();
  const std::string& uid = request.pod().uid();
  // The watch leaves this pod to us from now on, even while we wait for it to show up.
  struct InFlight {
    NodeEnroller* self;
    std::string uid;
    ~InFlight() {
      absl::MutexLock lock(&self->mutex_);
      self->cni_in_flight_.erase(uid);
    }
  } in_flight{this, uid};
  {
    absl::MutexLock lock(&mutex_);
    cni_in_flight_.insert(uid);
  }
  std::string waiting_for = "no configuration loaded yet";
  std::shared_ptr<const policy::Snapshot> snapshot =
      AwaitSnapshot(deadline, [&](const policy::Snapshot& s) {
        if (s.FindNamespace(ns) == nullptr) {
          waiting_for = absl::StrCat("namespace ", ns, " not seen yet");
          return false;
        }
        if (!NamespaceEnrolls(s, ns)) return true;  // no pod of it is captured: no need to wait
        const policy::Pod* pod = s.FindPod(ns, name);
        if (pod == nullptr || (!uid.empty() && pod->meta.uid != uid) ||
            pod->node_name != options_.node_name) {
          waiting_for = absl::StrCat("pod ", ns, "/", name, " (uid ", uid,
                                     ") not yet seen on node ", options_.node_name);
          return false;
        }
        return true;
      });
  if (snapshot == nullptr || snapshot->FindNamespace(ns) == nullptr) {
    return Answer(cni::v1::UNDECIDED, waiting_for);
  }
  if (!NamespaceEnrolls(*snapshot, ns)) {
    policy::Pod probe;
    probe.meta.ns = ns;
    probe.meta.name = name;
    return Answer(cni::v1::NOT_ENROLLED, policy::ResolveEnrollment(*snapshot, probe).reason);
  }
  const policy::Pod* pod = snapshot->FindPod(ns, name);
  if (pod == nullptr || (!uid.empty() && pod->meta.uid != uid) ||
      pod->node_name != options_.node_name) {
    return Answer(cni::v1::UNDECIDED, waiting_for);
  }
  const policy::Enrollment decision = policy::ResolveEnrollment(*snapshot, *pod);
  if (!decision.enrolled) return Answer(cni::v1::NOT_ENROLLED, decision.reason);

  v1::EnrollRequest enroll =
      RequestFor(*pod, v1::ORIGIN_CNI, request.netns(), request.container_id());
  if (request.ips_size() > 0) {
    enroll.clear_ips();
    for (const std::string& ip : request.ips()) enroll.add_ips(ip);
  }
  absl::StatusOr<v1::EnrolledPod> enrolled = enrollment_->Enroll(enroll);
  absl::MutexLock lock(&mutex_);
  if (!enrolled.ok()) {
    CountFailure(v1::ORIGIN_CNI);
    RecordGap(*pod, absl::StrCat("CNI ADD failed: ", enrolled.status().ToString()),
              /*attempt=*/true);
    return Answer(cni::v1::FAILED, enrolled.status().ToString());
  }
  gaps_.erase(pod->meta.uid);
  Log(LogLevel::kInfo, "pod=", PodName(*pod), " uid=", pod->meta.uid,
      " identity=", pod->service_account, " enrolled by=cni netns=", request.netns(),
      " container=", request.container_id(), " reason=", decision.reason);
  return Answer(cni::v1::ENROLLED, decision.reason, enrolled->netns_cookie());
}

CniResponse NodeEnroller::Del(const cni::v1::DelRequest& request) {
  const std::string& uid = request.pod().uid();
  for (const v1::EnrolledPod& record : enrollment_->List()) {
    const bool match = uid.empty() ? record.pod().container_id() == request.container_id()
                                   : record.pod().uid() == uid;
    if (!match) continue;
    if (!record.pod().container_id().empty() &&
        record.pod().container_id() != request.container_id()) {
      return Answer(cni::v1::NOT_ENROLLED, absl::StrCat("sandbox ", record.pod().container_id(),
                                                        " of the pod holds the enrollment"));
    }
    absl::Status status = enrollment_->Unenroll(record.pod().uid());
    Log(LogLevel::kInfo, "pod=", record.pod().namespace_(), "/", record.pod().name(),
        " uid=", record.pod().uid(), " released by=cni container=", request.container_id(),
        status.ok() ? "" : absl::StrCat(" error=", status.ToString()));
    absl::MutexLock lock(&mutex_);
    gaps_.erase(record.pod().uid());
    return status.ok() ? Answer(cni::v1::ENROLLED, "released")
                       : Answer(cni::v1::FAILED, status.ToString());
  }
  return Answer(cni::v1::NOT_ENROLLED, "nothing enrolled for this sandbox");
}

CniResponse NodeEnroller::Check(const cni::v1::CheckRequest& request) {
  std::shared_ptr<const policy::Snapshot> snapshot;
  {
    absl::MutexLock lock(&mutex_);
    snapshot = latest_;
  }
  if (snapshot == nullptr) return Answer(cni::v1::UNDECIDED, "no configuration loaded yet");
  const policy::Pod* pod = snapshot->FindPod(request.pod().namespace_(), request.pod().name());
  if (pod == nullptr || (!request.pod().uid().empty() && pod->meta.uid != request.pod().uid())) {
    return Answer(cni::v1::UNDECIDED, "pod not seen on this node");
  }
  const policy::Enrollment decision = policy::ResolveEnrollment(*snapshot, *pod);
  if (!decision.enrolled) return Answer(cni::v1::NOT_ENROLLED, decision.reason);
  for (const v1::EnrolledPod& record : enrollment_->List()) {
    if (record.pod().uid() != pod->meta.uid) continue;
    if (SameNetns(record.pod().netns_path(), request.netns())) {
      return Answer(cni::v1::ENROLLED, decision.reason, record.netns_cookie());
    }
    return Answer(cni::v1::FAILED,
                  absl::StrCat("enrolled with another netns (", record.pod().netns_path(), ")"));
  }
  return Answer(cni::v1::FAILED, absl::StrCat(decision.reason, ", but it is not enrolled"));
}

}  // namespace nodeward::capture
