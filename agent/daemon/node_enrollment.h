// The agent's part in enrolling this node's pods by themselves: the source of this node's pods
// and namespaces, the node enroller over the EnrollmentManager, and the CNI socket nodeward-cni
// calls. Also how the agent tells, when it is stopped, an upgrade or restart (capture stays
// pinned, nodeward-cni stays, pods of enrolled namespaces wait for the next agent) from an
// uninstall (its DaemonSet gone or being deleted: everything is taken off the node), as
// istio-cni does.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/capture/enrollment_manager.h"
#include "agent/capture/netns_locator.h"
#include "agent/capture/node_enroller.h"
#include "agent/cni/cni_server.h"
#include "common/json.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::daemon {

struct NodeEnrollmentOptions {
  std::string node_name;
  std::string cni_socket;
  std::string cni_state_dir;
  std::string enrolled_namespaces_file;
  std::string proc_root = "/proc";
  // The node's CNI configuration directory: nodeward-cni's entry, as found at start, is put
  // back whenever the node's CNI rewrites its file without it. Empty: not watched.
  std::string cni_net_dir;
  // Without a directory the pods of this node are watched in the Kubernetes API.
  std::string config_dir;
  policy::SnapshotOptions snapshot;
};

class NodeEnrollment {
 public:
  // `shared_config` is the agent's own source when it has one; with a directory it also serves
  // as this node's source (it holds every pod, with spec.nodeName).
  static absl::StatusOr<std::unique_ptr<NodeEnrollment>> Start(const NodeEnrollmentOptions& options,
                                                               capture::EnrollmentManager* manager,
                                                               policy::ConfigSource* shared_config);
  // Stops answering nodeward-cni first (it then decides as without an agent), then the watch.
  ~NodeEnrollment();

  capture::NodeEnroller* enroller() { return enroller_.get(); }
  // Stops serving nodeward-cni and keeping its entry, before the agent drains or uninstalls.
  void StopServing();

 private:
  NodeEnrollment() = default;
  void KeepCniEntry(std::string net_dir, JsonValue entry);

  std::unique_ptr<policy::ConfigSource> own_source_;
  std::unique_ptr<capture::HostNetnsLocator> locator_;
  std::unique_ptr<capture::ManagerEnrollment> enrollment_;
  std::unique_ptr<capture::NodeEnroller> enroller_;
  std::unique_ptr<cni::CniServer> cni_server_;
  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread keeper_;
};

enum class StopKind { kRestart, kUninstall };

// kUninstall when the DaemonSet `owner` ("namespace/name") is gone, being deleted, or no longer
// readable with the agent's own credentials (its RBAC went with it); kRestart otherwise,
// including when the API cannot be asked: leaving capture in place is the safe side. The
// reason is for the log.
StopKind DecideStop(const std::string& owner, std::string* reason);

struct UninstallOptions {
  std::string cni_net_dir;  // empty: nodeward-cni is left alone
  std::string cni_bin_dir;
  std::string enrolled_namespaces_file;
};

// Takes nodeward-cni off the node (its conflist entry, its binary, the enrolled namespaces it
// decides by), so new pods start as before nodeward was installed.
absl::Status UninstallCni(const UninstallOptions& options);

}  // namespace nodeward::daemon
