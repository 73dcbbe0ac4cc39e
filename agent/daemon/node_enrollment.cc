#include "agent/daemon/node_enrollment.h"

#include <unistd.h>

#include <cerrno>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "agent/cni/conflist.h"
#include "policy/kube_source.h"

namespace nodeward::daemon {


absl::StatusOr<std::unique_ptr<NodeEnrollment>> NodeEnrollment::Start(
    const NodeEnrollmentOptions& options, capture::EnrollmentManager* manager,
    policy::ConfigSource* shared_config) {
  std::unique_ptr<NodeEnrollment> result(new NodeEnrollment());
  policy::ConfigSource* source = shared_config;
  if (!options.config_dir.empty() && source == nullptr) {
    absl::StatusOr<std::unique_ptr<policy::ConfigSource>> started =
        policy::StartDirectoryOrKubeSource(options.config_dir, options.snapshot);
    if (!started.ok()) return started.status();
    result->own_source_ = *std::move(started);
    source = result->own_source_.get();
  } else if (options.config_dir.empty()) {
    // Only this node's pods, and the namespaces that decide for them: small whatever the cluster.
    absl::StatusOr<policy::KubeSourceOptions> kube = policy::KubeSourceOptions::InCluster();
    if (!kube.ok()) return kube.status();
    kube->snapshot = options.snapshot;
    kube->kinds = {"Namespace", "Pod"};
    kube->pod_field_selector = absl::StrCat("spec.nodeName=", options.node_name);
    absl::StatusOr<std::unique_ptr<policy::KubeSource>> started =
        policy::KubeSource::Start(*std::move(kube));
    if (!started.ok()) return started.status();
    result->own_source_ = *std::move(started);
    source = result->own_source_.get();
  }
  result->locator_ =
      std::make_unique<capture::HostNetnsLocator>(options.cni_state_dir, options.proc_root);
  result->enrollment_ = std::make_unique<capture::ManagerEnrollment>(manager);
  capture::NodeEnrollerOptions enroller;
  enroller.node_name = options.node_name;
  enroller.enrolled_namespaces_file = options.enrolled_namespaces_file;
  result->enroller_ = std::make_unique<capture::NodeEnroller>(source, result->enrollment_.get(),
                                                              result->locator_.get(), enroller);
  result->enroller_->Start();
  absl::StatusOr<std::unique_ptr<cni::CniServer>> server =
      cni::CniServer::Start(options.cni_socket, result->enroller_.get());
  if (!server.ok()) return server.status();
  result->cni_server_ = *std::move(server);
  Log(LogLevel::kInfo, "enrolling the pods of node ", options.node_name, " as labelled; ",
      "nodeward-cni served on ", options.cni_socket);
  if (!options.cni_net_dir.empty()) {
    absl::StatusOr<std::optional<JsonValue>> entry = cni::FindEntry(options.cni_net_dir);
    if (!entry.ok() || !entry->has_value()) {
      Log(LogLevel::kWarning, "nodeward-cni is not in the CNI configuration of ",
          options.cni_net_dir, entry.ok() ? "" : absl::StrCat(" (", entry.status().message(), ")"),
          ": new pods are enrolled only by the watch, after they started");
    } else {
      result->keeper_ = std::thread(&NodeEnrollment::KeepCniEntry, result.get(),
                                    options.cni_net_dir, **std::move(entry));
    }
  }
  return result;
}

void NodeEnrollment::KeepCniEntry(std::string net_dir, JsonValue entry) {
  // Network plugins (flannel, Calico, ...) rewrite their conflist when they restart.
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_; };
      if (mutex_.AwaitWithTimeout(absl::Condition(&stop), absl::Seconds(2))) return;
    }
    absl::StatusOr<bool> changed =
        cni::EnsureEntry(net_dir, entry, cni::EntryUpdate::kOnlyIfMissing);
    if (!changed.ok()) {
      Log(LogLevel::kWarning, "nodeward-cni's entry in ", net_dir, ": ",
          changed.status().ToString());
    } else if (*changed) {
      Log(LogLevel::kWarning, "nodeward-cni was missing from the CNI configuration in ", net_dir,
          " (rewritten by the node's CNI?): put back");
    }
  }
}

void NodeEnrollment::StopServing() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  if (keeper_.joinable()) keeper_.join();
  cni_server_.reset();
}

NodeEnrollment::~NodeEnrollment() {
  StopServing();
  if (enroller_ != nullptr) enroller_->Stop();
}

StopKind DecideStop(const std::string& owner, std::string* reason) {
  const std::size_t slash = owner.find('/');
  if (owner.empty() || slash == std::string::npos) {
    *reason = "no owning DaemonSet named (--owner-daemonset): treated as a restart";
    return StopKind::kRestart;
  }
  absl::StatusOr<policy::KubeSourceOptions> options = policy::KubeSourceOptions::InCluster();
  if (!options.ok()) {
    *reason = absl::StrCat("the API cannot be asked (", options.status().message(),
                           "): treated as a restart");
    return StopKind::kRestart;
  }
  options->io_timeout = absl::Seconds(5);
  const std::string path = absl::StrCat("/apis/apps/v1/namespaces/", owner.substr(0, slash),
                                        "/daemonsets/", owner.substr(slash + 1));
  absl::StatusOr<policy::ObjectPresence> presence = policy::GetObjectPresence(*options, path);
  if (!presence.ok()) {
    *reason = absl::StrCat("DaemonSet ", owner, " cannot be looked up (",
                           presence.status().message(), "): treated as a restart");
    return StopKind::kRestart;
  }
  *reason = absl::StrCat("DaemonSet ", owner, " is ", policy::ObjectPresenceName(*presence));
  return *presence == policy::ObjectPresence::kPresent ? StopKind::kRestart : StopKind::kUninstall;
}

absl::Status UninstallCni(const UninstallOptions& options) {
  absl::Status result;
  if (!options.cni_net_dir.empty() && !options.cni_bin_dir.empty()) {
    result.Update(cni::Uninstall(options.cni_net_dir, options.cni_bin_dir));
  }
  // Without it a plugin binary left behind lets every pod start.
  if (!options.enrolled_namespaces_file.empty() &&
      unlink(options.enrolled_namespaces_file.c_str()) != 0 && errno != ENOENT) {
    result.Update(
        absl::ErrnoToStatus(errno, absl::StrCat("remove ", options.enrolled_namespaces_file)));
  }
  return result;
}

}  // namespace nodeward::daemon
