// Configuration from the Kubernetes API: list + watch of namespaces, pods, services,
// endpointslices, peerauthentications, destinationrules and authorizationpolicies (and, for a
// gateway, gateways, virtualservices and its namespace's secrets) over HTTPS with the pod's
// service account token. Follows resourceVersions and bookmarks, relists on "410 Gone",
// reconnects with exponential backoff, and publishes a new snapshot (debounced) once every kind
// has been listed and after each change. An object that stops parsing keeps its last good
// version; an AuthorizationPolicy that never parsed stands in failing closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::policy {

struct KubeSourceOptions {
  // "https" (or "http", e.g. toward a local `kubectl proxy`).
  std::string scheme = "https";
  std::string host;
  uint16_t port = 443;
  // Re-read before every request: projected tokens rotate.
  std::string token_path = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string ca_path = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  // Names (DNS, IP or URI SANs) of which the server certificate must carry one; empty means
  // the host itself.
  std::vector<std::string> server_names;
  SnapshotOptions snapshot;
  absl::Duration debounce = absl::Milliseconds(100);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // Asked of the server per watch; it then ends the watch, and the source resumes it.
  int watch_timeout_seconds = 300;
  int page_size = 500;
  // Set for a gateway: it also lists and watches Gateways and VirtualServices (in every
  // namespace) and the Secrets of this namespace, its own, which is where Istio resolves a
  // Gateway's credentialName. Secrets of other namespaces are never read; the node agent, which
  // needs none of them, leaves this empty.
  std::string gateway_namespace;
  // Connecting, TLS handshakes and list responses must progress within this.
  absl::Duration io_timeout = absl::Seconds(30);
  // The kinds to follow, by name ("Namespace", "Pod", ...); empty: every kind above. A source
  // for one purpose (the pods of one node and their namespaces) lists only what it needs.
  std::vector<std::string> kinds;
  // Pods are listed and watched with this fieldSelector, e.g. "spec.nodeName=node-a".
  std::string pod_field_selector;

  // In-cluster defaults: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
  static absl::StatusOr<KubeSourceOptions> InCluster();
};

class KubeSource : public ConfigSource {
 public:
  // Starts listing and watching in the background; fails only on unusable options (no host,
  // unreadable CA). Current() stays null until every kind has been listed once.
  static absl::StatusOr<std::unique_ptr<KubeSource>> Start(KubeSourceOptions options);
  ~KubeSource() override;

  // Waits until the first snapshot is published; false on timeout.
  bool WaitForSync(absl::Duration timeout) const;

  std::shared_ptr<const Snapshot> Current() const override { return publisher_.Current(); }
  uint64_t Subscribe(Callback callback) override { return publisher_.Subscribe(callback); }
  void Unsubscribe(uint64_t subscription) override { publisher_.Unsubscribe(subscription); }
  SourceStatus Status() const override { return publisher_.Status(); }

  struct Kind;  // one watched resource type (internal)

 private:
  explicit KubeSource(KubeSourceOptions options);
  void RunKind(size_t index);
  void RunBuilder();
  // Sleeps up to `duration`, returning early (false) when stopping.
  bool Sleep(absl::Duration duration);
  void MarkDirty();
  void ReportError(absl::Status error);

  KubeSourceOptions options_;
  std::string ca_pem_;
  SnapshotPublisher publisher_;
  std::vector<std::unique_ptr<Kind>> kinds_;
  std::atomic<bool> stopping_{false};

  mutable absl::Mutex mutex_;
  bool dirty_ ABSL_GUARDED_BY(mutex_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mutex_) = false;
  // Objects the API served that do not parse, by "Kind ns/name": kept out of snapshots.
  std::map<std::string, std::string> invalid_objects_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::thread> threads_;
};

// One request to the API server with `options`' address, CA and token, for calls that are
// not lists or watches (a TokenReview, say): the answer's status and body (at most `limit`
// bytes, else an error).
struct KubeResponse {
  int status = 0;
  std::string body;
};
absl::StatusOr<KubeResponse> KubeRequest(const KubeSourceOptions& options,
                                         const std::string& method, const std::string& target,
                                         const std::string& json_body, size_t limit = 1 << 20);
enum class ObjectPresence { kPresent, kBeingDeleted, kAbsent, kForbidden };
const char* ObjectPresenceName(ObjectPresence presence);

// One GET of the object at `path` (e.g. /apis/apps/v1/namespaces/ns/daemonsets/name) with the
// options' server, CA and token: there (kBeingDeleted once it has a deletionTimestamp), gone
// (404), or no longer ours to read (401, 403). Other answers and transport failures are errors.
absl::StatusOr<ObjectPresence> GetObjectPresence(const KubeSourceOptions& options,
                                                 const std::string& path);

// What a binary is told to decide with: the files under `directory` when it is set, else the
// Kubernetes API from inside the cluster (an error outside one). A gateway passes its own
// namespace as `gateway_namespace` (see KubeSourceOptions).
absl::StatusOr<std::unique_ptr<ConfigSource>> StartDirectoryOrKubeSource(
    const std::string& directory, SnapshotOptions snapshot,
    const std::string& gateway_namespace = "");

}  // namespace nodeward::policy
