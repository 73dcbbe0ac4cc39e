#include "agent/proxy/context.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bpf/nodeward_maps.h"
#include "policy/authorization.h"

namespace nodeward::proxy {
namespace {

// The node-side ports of the agent (admin, metrics, readiness), reserved inside pods too.
constexpr std::uint16_t kAdminPort = 15000;
constexpr std::uint16_t kMetricsPort = 15020;
constexpr std::uint16_t kReadinessPort = 15021;

}  // namespace

policy::Pod PolicyPodFor(const policy::Snapshot& snapshot, const capture::PodMetadata& metadata) {
  if (const policy::Pod* known = snapshot.FindPod(metadata.namespace_name, metadata.name)) {
    return *known;
  }
  policy::Pod synthesized;
  synthesized.meta.name = metadata.name;
  synthesized.meta.ns = metadata.namespace_name;
  synthesized.meta.uid = metadata.uid;
  synthesized.meta.origin = "enrollment";
  for (const auto& [key, value] : metadata.labels) synthesized.meta.labels[key] = value;
  synthesized.service_account = metadata.service_account;
  synthesized.ips = metadata.ips;
  synthesized.ready = true;
  synthesized.phase = "Running";
  return synthesized;
}

RefusalReason RefusalOf(policy::DecisionReason reason, policy::InboundTransport transport) {
  switch (reason) {
    case policy::DecisionReason::kPeerAuthentication:
      return transport == policy::InboundTransport::kPlaintext ? RefusalReason::kStrictRequiresMtls
                                                               : RefusalReason::kMtlsDisabled;
    case policy::DecisionReason::kAuthorization:
      return RefusalReason::kAuthorization;
    case policy::DecisionReason::kNotInMesh:
      return RefusalReason::kNotInMesh;
    case policy::DecisionReason::kNoServicePort:
      return RefusalReason::kNoServicePort;
    case policy::DecisionReason::kNoReadyEndpoint:
      return RefusalReason::kNoReadyEndpoint;
    case policy::DecisionReason::kDestinationRule:
    case policy::DecisionReason::kAutoMtls:
      return RefusalReason::kDestinationRule;
  }
  return RefusalReason::kDestinationRule;
}

void RecordInbound(const policy::InboundDecision& decision, AccessRecord& record) {
  record.policy = absl::StrJoin(decision.trace.deciding, "; ");
  record.reason = decision.reason;
  if (decision.authorization.has_value() &&
      decision.authorization->outcome != policy::AuthorizationOutcome::kNoPolicy) {
    const policy::AuthorizationResult& authorization = *decision.authorization;
    record.authorization = std::string(policy::AuthorizationOutcomeName(authorization.outcome));
    if (authorization.policy != nullptr) {
      absl::StrAppend(&record.authorization, " by AuthorizationPolicy ",
                      authorization.policy->meta.ns, "/", authorization.policy->meta.name);
    }
    std::vector<std::string> audited;
    for (const policy::AuthorizationPolicy* audit : authorization.audit) {
      audited.push_back(absl::StrCat(audit->meta.ns, "/", audit->meta.name));
    }
    record.audited_by = absl::StrJoin(audited, ",");
  }
}

io::Connection::Options AcceptedOptions(const ProxyOptions& options) {
  io::Connection::Options connection;
  connection.idle_timeout = options.idle_timeout;
  connection.set_nodelay = false;  // inherited from the in-pod listener
  return connection;
}

bool IsAgentPort(std::uint16_t port) {
  switch (port) {
    case NW_PORT_OUTBOUND:
    case NW_PORT_INBOUND_PLAINTEXT:
    case NW_PORT_TUNNEL:
    case kAdminPort:
    case kMetricsPort:
    case kReadinessPort:
      return true;
    default:
      return false;
  }
}

ProxyContext::ProxyContext(const ProxyOptions& options, policy::ConfigSource* config,
                           MeshCredentials* credentials, AccessLog* access_log)
    : options_(options),
      config_(config),
      credentials_(credentials),
      access_log_(access_log),
      origination_({.system_ca_bundle = options.system_ca_bundle}),
      handshakes_(options.handshakes) {}

bool ProxyContext::MayLogHandshakeDrop(absl::Time now) {
  const std::int64_t second = absl::ToUnixSeconds(now);
  std::int64_t last = last_drop_log_seconds_.load();
  return last != second && last_drop_log_seconds_.compare_exchange_strong(last, second);
}

std::optional<LiveSlot> ProxyContext::Admit(RefusalReason* why) {
  if (draining_.load()) {
    *why = RefusalReason::kDraining;
    return std::nullopt;
  }
  if (live_.fetch_add(1) >= options_.max_connections) {
    live_.fetch_sub(1);
    *why = RefusalReason::kConnectionLimit;
    return std::nullopt;
  }
  return LiveSlot(&live_);
}

LiveSlot ProxyContext::CountedSlot() {
  live_.fetch_add(1);
  return LiveSlot(&live_);
}

std::shared_ptr<Flow> ProxyContext::NewFlow(Worker& worker, Direction direction, LiveSlot slot) {
  return std::make_shared<Flow>(direction, std::move(slot), FlowSinks{&metrics_, access_log_},
                                &worker.flows);
}

absl::StatusOr<SpiffeId> ProxyContext::IdentityOf(const capture::CapturedPod& pod) const {
  return SpiffeId::Make(options_.trust_domain, pod.metadata().namespace_name,
                        pod.metadata().service_account);
}

void ProxyContext::AddLocalPod(std::shared_ptr<const capture::CapturedPod> pod) {
  absl::MutexLock lock(&pods_mutex_);
  for (const IpAddress& ip : pod->metadata().ips) pods_by_ip_[ip] = pod;
}

void ProxyContext::RemoveLocalPod(const std::shared_ptr<const capture::CapturedPod>& pod) {
  absl::MutexLock lock(&pods_mutex_);
  for (const IpAddress& ip : pod->metadata().ips) {
    auto it = pods_by_ip_.find(ip);
    if (it != pods_by_ip_.end() && it->second == pod) pods_by_ip_.erase(it);
  }
}

std::shared_ptr<const capture::CapturedPod> ProxyContext::LocalPodByIp(const IpAddress& ip) const {
  absl::MutexLock lock(&pods_mutex_);
  auto it = pods_by_ip_.find(ip);
  return it == pods_by_ip_.end() ? nullptr : it->second;
}

}  // namespace nodeward::proxy
