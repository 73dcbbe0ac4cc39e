// What the parts of the data plane share: its options, the policy, the credentials, the live
// count and admission, the flows' sinks, the pods of this node, and the per-loop state
// (Worker). Thread safe except Worker, which belongs to its loop.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/capture/captured_pod.h"
#include "agent/io/connection.h"
#include "agent/io/event_loop.h"
#include "agent/io/loop_thread.h"
#include "agent/proxy/access_log.h"
#include "agent/proxy/credentials.h"
#include "agent/proxy/flow.h"
#include "agent/proxy/handshake_budget.h"
#include "agent/proxy/hbone_tunnel.h"
#include "agent/proxy/origination_contexts.h"
#include "agent/proxy/traffic_metrics.h"
#include "agent/proxy/tunnel_pool.h"
#include "common/spiffe_id.h"
#include "policy/decisions.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::proxy {

// The agent's worker loops give memory back after a burst once idle for 10 s.
inline io::EventLoop::Options DefaultLoopOptions() {
  io::EventLoop::Options options;
  options.idle_trim_interval = absl::Seconds(10);
  return options;
}

struct ProxyOptions {
  std::string trust_domain = "cluster.local";
  // io_uring worker loops; 0 means one per core.
  int workers = 0;
  absl::Duration connect_timeout = absl::Seconds(5);
  // An application connection with no byte either way for this long is closed.
  absl::Duration idle_timeout = absl::Hours(1);
  // How long a connection may wait for its pod's first certificate.
  absl::Duration credentials_wait = absl::Seconds(10);
  // Live connections (application side) beyond this are refused at once.
  std::size_t max_connections = 65536;
  HboneTunnel::Options tunnel;
  // Tunnels (15008) that have not finished their TLS handshake: how many, from one source,
  // and for how long.
  HandshakeBudget::Options handshakes;
  io::EventLoop::Options loop = DefaultLoopOptions();
  // TLS origination's roots when a DestinationRule gives no caCertificates.
  std::string system_ca_bundle = kDefaultSystemCaBundle;
  // For diagnosing capture only: every captured connection goes on unchanged, plaintext, with
  // no policy and no certificates (but never to the agent's own ports).
  bool passthrough = false;
};

// Posts to a worker's loop from any thread (certificate notifications come from the cache's
// threads) until the loop is going away; after Detach() tasks are dropped.
class LoopPoster {
 public:
  explicit LoopPoster(io::LoopThread* thread) : thread_(thread) {}
  void Post(absl::AnyInvocable<void()> task) {
    absl::MutexLock lock(&mutex_);
    if (thread_ != nullptr) thread_->Post(std::move(task));
  }
  void Detach() {
    absl::MutexLock lock(&mutex_);
    thread_ = nullptr;
  }

 private:
  absl::Mutex mutex_;
  io::LoopThread* thread_ ABSL_GUARDED_BY(mutex_);
};

// The state of one worker loop: its thread, its client tunnels, the server tunnels it serves
// and the flows it carries. Touched on its loop only (but for the thread itself and the pool's
// atomic size).
struct Worker {
  std::unique_ptr<io::LoopThread> thread;
  std::shared_ptr<LoopPoster> poster;
  TunnelPool pool;
  std::vector<std::weak_ptr<HboneTunnel>> server_tunnels;
  absl::flat_hash_set<Flow*> flows;  // live ones, for the debug CLI
  bool recheck_scheduled = false;    // a policy re-check of `flows` is on the loop's timer

  io::EventLoop& loop() { return thread->loop(); }
};

// The pod as the policy engine sees it: from the configuration when it lists the pod, else
// described from its enrollment, so decisions about it still follow its namespace's policy.
policy::Pod PolicyPodFor(const policy::Snapshot& snapshot, const capture::PodMetadata& metadata);

// Why a policy decision refused, in the metrics' terms (`transport`: the connection's, for
// PeerAuthentication refusals).
RefusalReason RefusalOf(policy::DecisionReason reason, policy::InboundTransport transport);

// Puts what an inbound decision said into the access record: deciding resources, reason,
// AuthorizationPolicy outcome and the AUDIT policies that matched.
void RecordInbound(const policy::InboundDecision& decision, AccessRecord& record);

// Options of a connection accepted on an in-pod listener (which gave it TCP_NODELAY).
io::Connection::Options AcceptedOptions(const ProxyOptions& options);

// The agent's own ports inside a pod (15001, 15006, 15008, and the node-side 15000, 15020,
// 15021 reserved there too): never a place to deliver to, which would hand the connection back
// to the agent or to whatever squats on its port.
bool IsAgentPort(std::uint16_t port);

class ProxyContext {
 public:
  // `config` and `credentials` may be null only with options.passthrough.
  ProxyContext(const ProxyOptions& options, policy::ConfigSource* config,
               MeshCredentials* credentials, AccessLog* access_log);

  const ProxyOptions& options() const { return options_; }
  policy::ConfigSource* config() { return config_; }
  MeshCredentials* credentials() { return credentials_; }
  TrafficMetrics& metrics() { return metrics_; }
  OriginationContexts& origination() { return origination_; }
  HandshakeBudget& handshakes() { return handshakes_; }
  // Whether a line about a dropped handshake may be logged now: at most one a second, so a
  // flood of them cannot flood the log too (the metric counts every one).
  bool MayLogHandshakeDrop(absl::Time now);

  // A place among the live connections, or why there is none (draining, limit reached).
  std::optional<LiveSlot> Admit(RefusalReason* why);
  // For the streams of an admitted tunnel: counted, never refused by the limit.
  LiveSlot CountedSlot();
  std::size_t live() const { return live_.load(); }
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  std::uint64_t NextEndpointHint() { return endpoint_hint_.fetch_add(1); }

  // A flow on `worker`'s loop, holding `slot`.
  std::shared_ptr<Flow> NewFlow(Worker& worker, Direction direction, LiveSlot slot);

  absl::StatusOr<SpiffeId> IdentityOf(const capture::CapturedPod& pod) const;

  // The pods enrolled on this node, by address, for the same-node path.
  void AddLocalPod(std::shared_ptr<const capture::CapturedPod> pod);
  void RemoveLocalPod(const std::shared_ptr<const capture::CapturedPod>& pod);
  std::shared_ptr<const capture::CapturedPod> LocalPodByIp(const IpAddress& ip) const;
  // Whether `ip` is one of those pods': policy's same-node question (policy::LocalPodQuery).
  bool ServesPod(const IpAddress& ip) const { return LocalPodByIp(ip) != nullptr; }

 private:
  const ProxyOptions options_;
  policy::ConfigSource* const config_;
  MeshCredentials* const credentials_;
  AccessLog* const access_log_;
  TrafficMetrics metrics_;
  OriginationContexts origination_;
  HandshakeBudget handshakes_;
  std::atomic<std::int64_t> last_drop_log_seconds_{0};
  std::atomic<std::size_t> live_{0};
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> endpoint_hint_{0};
  mutable absl::Mutex pods_mutex_;
  absl::flat_hash_map<IpAddress, std::shared_ptr<const capture::CapturedPod>> pods_by_ip_
      ABSL_GUARDED_BY(pods_mutex_);
};

}  // namespace nodeward::proxy
