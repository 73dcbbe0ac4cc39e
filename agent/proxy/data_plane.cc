#include "agent/proxy/data_plane.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/io/socket.h"
#include "agent/proxy/workers.h"
#include "common/log.h"

namespace nodeward::proxy {
namespace {

constexpr absl::Duration kPodAcceptRetryDelay = absl::Milliseconds(100);
// Changes arriving within this of each other are re-checked against live flows once.
constexpr absl::Duration kPolicyRecheckDelay = absl::Milliseconds(500);

}  // namespace

absl::StatusOr<std::unique_ptr<DataPlane>> DataPlane::Create(const ProxyOptions& options,
                                                             policy::ConfigSource* config,
                                                             MeshCredentials* credentials,
                                                             AccessLog* access_log) {
  if (!options.passthrough && (config == nullptr || credentials == nullptr)) {
    return absl::InvalidArgumentError("the data plane needs a configuration and credentials");
  }
  std::unique_ptr<DataPlane> plane(new DataPlane(options, config, credentials, access_log));
  absl::StatusOr<std::vector<std::unique_ptr<Worker>>> workers =
      StartWorkers(options.workers, options.loop);
  if (!workers.ok()) return workers.status();
  plane->workers_ = *std::move(workers);
  if (config != nullptr && !options.passthrough) {
    DataPlane* raw = plane.get();
    plane->config_subscription_ =
        config->Subscribe([raw](std::shared_ptr<const policy::Snapshot>) { raw->OnSnapshot(); });
  }
  return plane;
}

DataPlane::DataPlane(const ProxyOptions& options, policy::ConfigSource* config,
                     MeshCredentials* credentials, AccessLog* access_log)
    : context_(options, config, credentials, access_log),
      upstreams_(context_),
      outbound_(context_, upstreams_),
      inbound_(context_, upstreams_) {}

DataPlane::~DataPlane() {
  if (config_subscription_.has_value()) context_.config()->Unsubscribe(*config_subscription_);
  // Open connections hold their relays and the relays them: cut them while the loops run.
  CutEverything(absl::CancelledError("agent stopping"));
  for (auto& worker : workers_) worker->poster->Detach();
  for (auto& worker : workers_) worker->thread->Stop().IgnoreError();
  workers_.clear();
}

Worker& DataPlane::WorkerFor(const capture::CapturedPod& pod) {
  // One pod's connections share a loop, so they share that loop's pooled tunnels.
  return *workers_[pod.netns_cookie() % workers_.size()];
}

void DataPlane::OnSnapshot() {
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->poster->Post([this, w] {
      if (w->recheck_scheduled) return;
      w->recheck_scheduled = true;
      w->loop().Timer(kPolicyRecheckDelay, [this, w](io::Completion&) {
        w->recheck_scheduled = false;
        RecheckFlows(*w);
      });
    });
  }
}

void DataPlane::RecheckFlows(Worker& worker) {
  std::shared_ptr<const policy::Snapshot> snapshot = context_.config()->Current();
  if (snapshot == nullptr) return;
  std::vector<Flow*> flows(worker.flows.begin(), worker.flows.end());
  // A pod's many flows share one view of it for the pass.
  absl::flat_hash_map<const capture::CapturedPod*, policy::Pod> pods;
  for (Flow* flow : flows) {
    // Cutting one flow may end others (the streams of one tunnel).
    if (!worker.flows.contains(flow) || flow->revoked()) continue;
    const InboundAdmission* admission = flow->admission();
    if (admission == nullptr) continue;
    auto [it, added] = pods.try_emplace(admission->pod.get());
    if (added) it->second = PolicyPodFor(*snapshot, admission->pod->metadata());
    policy::InboundDecision decision =
        policy::DecideInbound(*snapshot, it->second, admission->connection);
    if (decision.allow) continue;
    const AccessRecord& record = flow->record();
    Log(LogLevel::kInfo, "pod=", admission->pod->display_name(),
        " peer=", record.source_principal.empty() ? record.source_address : record.source_principal,
        " connection closed, the policy changed: ", decision.trace.ToString());
    RecordInbound(decision, flow->record());
    flow->Revoke(RefusalOf(decision.reason_code, admission->connection.transport), decision.reason);
  }
}

void DataPlane::OnPodEnrolled(std::shared_ptr<const capture::CapturedPod> pod) {
  if (context_.credentials() != nullptr) {
    absl::StatusOr<SpiffeId> identity = context_.IdentityOf(*pod);
    if (!identity.ok()) {
      Log(LogLevel::kError, "pod=", pod->display_name(),
          " has no valid identity: ", identity.status().ToString());
    } else {
      context_.credentials()->Acquire(*identity);
    }
  }
  context_.AddLocalPod(std::move(pod));
}

void DataPlane::OnPodUnenrolled(std::shared_ptr<const capture::CapturedPod> pod) {
  if (context_.credentials() != nullptr) {
    if (absl::StatusOr<SpiffeId> identity = context_.IdentityOf(*pod); identity.ok()) {
      context_.credentials()->Release(*identity);
    }
  }
  context_.RemoveLocalPod(pod);
}

void DataPlane::ServeListener(std::shared_ptr<capture::InPodListener> listener) {
  Worker& worker = WorkerFor(*listener->pod());
  worker.thread->Post([this, &worker, listener = std::move(listener)]() mutable {
    ArmPodAccept(worker, std::move(listener));
  });
}

void DataPlane::ArmPodAccept(Worker& worker, std::shared_ptr<capture::InPodListener> listener) {
  if (listener->closed()) return;
  const int listen_fd = listener->fd();
  worker.loop().AcceptMultishot(
      listen_fd,
      [this, &worker, listener = std::move(listener)](io::Completion& completion) {
        if (completion.result >= 0) OnPodAccepted(worker, *listener, completion.result);
        if (completion.more() || listener->closed()) return;
        const int error = completion.result < 0 ? -completion.result : 0;
        if (error != 0 && error != ECONNABORTED && error != EPROTO && error != EPERM) {
          // Out of descriptors or memory, or a listener in a bad state: accepting again at once
          // would spin on the same error.
          Log(LogLevel::kWarning, "pod=", listener->pod()->display_name(), " accept on ",
              listener->address(), ": ", std::strerror(error), "; retrying in ",
              absl::FormatDuration(kPodAcceptRetryDelay));
          worker.loop().Timer(kPodAcceptRetryDelay, [this, &worker, listener](io::Completion&) {
            ArmPodAccept(worker, listener);
          });
          return;
        }
        // Ended by one client's failure (or by the kernel): the listener itself is fine.
        ArmPodAccept(worker, listener);
      },
      SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void DataPlane::OnPodAccepted(Worker& worker, const capture::InPodListener& listener, int fd) {
  // A multishot accept does not return the peer: the socket is asked, for outbound only.
  std::optional<capture::InPodListener::Accepted> accepted =
      listener.Resolve(fd, [fd] { return SocketAddress::PeerOf(fd); });
  if (!accepted.has_value()) return;
  const std::shared_ptr<const capture::CapturedPod>& pod = listener.pod();
  if (listener.kind() == capture::InPodListener::Kind::kTunnel) {
    // The tunnel is not an application connection (its streams are), but it is only served
    // while the agent takes connections.
    if (context_.draining()) {
      io::SetResetOnClose(fd);
      close(fd);
      return;
    }
    inbound_.HandleTunnel(worker, pod, fd);
    return;
  }
  const bool outbound = listener.kind() == capture::InPodListener::Kind::kOutbound;
  RefusalReason why = RefusalReason::kNone;
  std::optional<LiveSlot> slot = context_.Admit(&why);
  if (!slot.has_value()) {
    Log(why == RefusalReason::kDraining ? LogLevel::kInfo : LogLevel::kWarning,
        "pod=", pod->display_name(),
        outbound ? absl::StrCat(" outbound to ", accepted->destination.ToString())
                 : absl::StrCat(" inbound port ", accepted->port),
        " refused reason=", RefusalReasonName(why));
    io::SetResetOnClose(fd);
    close(fd);
    return;
  }
  if (outbound) {
    outbound_.Handle(worker, pod, fd, accepted->destination, accepted->client, *std::move(slot));
  } else {
    inbound_.HandlePlaintext(worker, pod, fd, accepted->port, *std::move(slot));
  }
}

std::vector<DataPlane::ConnectionInfo> DataPlane::Connections(absl::Duration timeout) {
  return GatherConnections(workers_, timeout);
}

std::vector<DataPlane::TunnelInfo> DataPlane::Tunnels(absl::Duration timeout) {
  return GatherFromWorkers<TunnelInfo>(
      workers_,
      [](Worker& worker, std::vector<TunnelInfo>& out) {
        const absl::Time now = absl::Now();
        auto describe = [&](const HboneTunnel& tunnel, const char* role) {
          TunnelInfo info;
          info.role = role;
          info.description = tunnel.description();
          if (tunnel.peer_identity().has_value()) {
            info.peer_identity = tunnel.peer_identity()->ToString();
          }
          info.established = tunnel.established();
          info.draining = tunnel.draining();
          info.active_streams = tunnel.active_streams();
          info.streams_opened = tunnel.streams_opened();
          info.age = now - tunnel.created();
          out.push_back(std::move(info));
        };
        worker.pool.ForEach(
            [&](const TunnelKey&, const HboneTunnel& tunnel) { describe(tunnel, "client"); });
        for (const std::weak_ptr<HboneTunnel>& weak : worker.server_tunnels) {
          if (auto tunnel = weak.lock(); tunnel != nullptr && !tunnel->closed()) {
            describe(*tunnel, "server");
          }
        }
      },
      timeout);
}

std::vector<std::size_t> DataPlane::LoopPendingOperations(absl::Duration timeout) {
  return GatherFromWorkers<std::size_t>(
      workers_,
      [](Worker& worker, std::vector<std::size_t>& out) {
        out.push_back(worker.loop().pending_operations());
      },
      timeout);
}

std::size_t DataPlane::pooled_tunnels() const {
  std::size_t total = 0;
  for (const auto& worker : workers_) total += worker->pool.size();
  return total;
}

std::size_t DataPlane::Drain(absl::Duration grace) {
  context_.StartDraining();
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->thread->Post([w] {
      w->pool.DrainAll("agent draining");
      for (const std::weak_ptr<HboneTunnel>& weak : w->server_tunnels) {
        if (auto tunnel = weak.lock()) tunnel->Drain("agent draining");
      }
    });
  }
  const absl::Time deadline = absl::Now() + grace;
  while (context_.live() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  const std::size_t left = context_.live();
  if (left > 0) CutEverything(absl::DeadlineExceededError("drain grace over"));
  return left;
}

void DataPlane::CutEverything(const absl::Status& reason) { CutWorkers(workers_, reason); }

}  // namespace nodeward::proxy
