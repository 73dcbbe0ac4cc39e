// Policy engine at cluster scale: 10,000 pods, 2,000 services and 1,000 policies (500
// PeerAuthentications, 500 DestinationRules) over 100 namespaces, generated here; a second
// snapshot adds 501 AuthorizationPolicies (per namespace a DENY and four selector policies,
// and one mesh-wide DENY). Measures snapshot build time and decisions per second; the inbound
// decision with and without AuthorizationPolicies runs on the same connections.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "policy/decisions.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

constexpr int kNamespaces = 100;
constexpr int kPodsPerNamespace = 100;
constexpr int kServicesPerNamespace = 20;
constexpr int kWorkloadPoliciesPerNamespace = 4;
constexpr int kRulesPerNamespace = 5;

IpAddress Ip(uint32_t base, uint32_t index) { return IpAddress::V4(htonl(base + index + 1)); }

absl::Time Created(int index) { return absl::FromUnixSeconds(1'600'000'000 + index * 60); }

ResourceSet GenerateCluster() {
  ResourceSet set;
  const uint32_t pod_base = 10u << 24;                       // 10.0.0.0/8
  const uint32_t service_base = (172u << 24) | (16u << 16);  // 172.16.0.0/12
  int policy_index = 0;
  Namespace root;
  root.meta.name = "istio-system";
  set.namespaces.push_back(root);
  PeerAuthentication mesh;
  mesh.meta = {.name = "default", .ns = "istio-system"};
  mesh.meta.creation_timestamp = Created(policy_index++);
  mesh.mode = MtlsMode::kPermissive;
  set.peer_authentications.push_back(mesh);

  for (int n = 0; n < kNamespaces; ++n) {
    std::string ns = absl::StrCat("team-", n);
    Namespace space;
    space.meta.name = ns;
    if (n % 5 != 0) space.meta.labels["nodeward.io/dataplane-mode"] = "enabled";
    set.namespaces.push_back(space);
    for (int p = 0; p < kPodsPerNamespace; ++p) {
      Pod pod;
      int app = p % kServicesPerNamespace;
      pod.meta.name = absl::StrCat("app-", app, "-", p);
      pod.meta.ns = ns;
      pod.meta.labels = {{"app", absl::StrCat("app-", app)}, {"version", "v1"}};
      pod.service_account = absl::StrCat("sa-", app);
      pod.node_name = absl::StrCat("node-", p % 50);
      pod.ips = {Ip(pod_base, n * kPodsPerNamespace + p)};
      pod.ports = {{"http", 8080, "TCP"}, {"grpc", 9090, "TCP"}};
      pod.ready = p % 17 != 0;
      set.pods.push_back(std::move(pod));
    }
    for (int s = 0; s < kServicesPerNamespace; ++s) {
      Service service;
      service.meta.name = absl::StrCat("svc-", s);
      service.meta.ns = ns;
      service.cluster_ips = {Ip(service_base, n * kServicesPerNamespace + s)};
      service.ports = {{"http", 80, "TCP", 0, "http"}, {"grpc", 9090, "TCP", 9090, ""}};
      service.selector = Labels{{"app", absl::StrCat("app-", s)}};
      set.services.push_back(std::move(service));
    }
    if (n != 0) {
      PeerAuthentication space_policy;
      space_policy.meta = {.name = "default", .ns = ns};
      space_policy.meta.creation_timestamp = Created(policy_index++);
      space_policy.mode = n % 3 == 0 ? MtlsMode::kStrict : MtlsMode::kUnset;
      set.peer_authentications.push_back(std::move(space_policy));
    }
    for (int w = 0; w < kWorkloadPoliciesPerNamespace; ++w) {
      PeerAuthentication workload;
      workload.meta = {.name = absl::StrCat("app-", w), .ns = ns};
      workload.meta.creation_timestamp = Created(policy_index++);
      workload.selector = Labels{{"app", absl::StrCat("app-", w)}};
      workload.mode = w % 2 == 0 ? MtlsMode::kStrict : MtlsMode::kPermissive;
      if (w == 1) workload.port_level[8080] = MtlsMode::kDisable;
      set.peer_authentications.push_back(std::move(workload));
    }
    for (int r = 0; r < kRulesPerNamespace; ++r) {
      DestinationRule rule;
      rule.meta = {.name = absl::StrCat("rule-", r), .ns = ns};
      rule.meta.creation_timestamp = Created(policy_index++);
      if (r == 4) {
        rule.host = absl::StrCat("*.", ns, ".svc.cluster.local");
        rule.export_to = {"."};
      } else {
        rule.host = absl::StrCat("svc-", r);
      }
      ClientTlsSettings tls;
      tls.mode = r == 2 ? TlsMode::kDisable : TlsMode::kIstioMutual;
      rule.tls = tls;
      if (r == 3) rule.port_level = {{9090, ClientTlsSettings{.mode = TlsMode::kSimple}}};
      set.destination_rules.push_back(std::move(rule));
    }
  }
  return set;
}

StringMatcher Exact(const std::string& value) { return ParseStringMatcher(value); }

IpBlock Block(const std::string& text) { return *ParseIpBlock(text); }

// Per namespace: a DENY of one other namespace, an ALLOW per app for two of them (principals
// of three namespaces, or an IP block and a port), an AUDIT and an ALLOW with a `when`; one
// mesh-wide DENY of an address block.
void AddAuthorizationPolicies(ResourceSet& set) {
  int index = 0;
  auto policy = [&](std::string name, std::string ns, AuthorizationAction action) {
    AuthorizationPolicy p;
    p.meta = {.name = std::move(name), .ns = std::move(ns)};
    p.meta.creation_timestamp = Created(index++);
    p.action = action;
    return p;
  };
  AuthorizationPolicy mesh = policy("deny-quarantine", "istio-system", AuthorizationAction::kDeny);
  AuthorizationRule quarantine;
  quarantine.from.push_back({.ip_blocks = {Block("192.168.0.0/16")}});
  mesh.rules.push_back(quarantine);
  set.authorization_policies.push_back(std::move(mesh));
  for (int n = 0; n < kNamespaces; ++n) {
    const std::string ns = absl::StrCat("team-", n);
    AuthorizationPolicy deny = policy("deny-other", ns, AuthorizationAction::kDeny);
    AuthorizationRule other;
    other.from.push_back({.namespaces = {Exact(absl::StrCat("team-", (n + 50) % kNamespaces))}});
    deny.rules.push_back(other);
    set.authorization_policies.push_back(std::move(deny));
    for (int app = 0; app < 2; ++app) {
      AuthorizationPolicy allow =
          policy(absl::StrCat("allow-app-", app), ns, AuthorizationAction::kAllow);
      allow.selector = Labels{{"app", absl::StrCat("app-", app)}};
      AuthorizationRule peers;
      for (int k = 0; k < 3; ++k) {
        peers.from.push_back(
            {.principals = {Exact(
                 absl::StrCat("cluster.local/ns/team-", (n + k) % kNamespaces, "/sa/sa-", k))}});
      }
      AuthorizationRule net;
      net.from.push_back({.ip_blocks = {Block("10.0.0.0/16")}});
      net.to.push_back({.ports = {8080}});
      allow.rules = {peers, net};
      set.authorization_policies.push_back(std::move(allow));
    }
    AuthorizationPolicy audit = policy("audit", ns, AuthorizationAction::kAudit);
    audit.selector = Labels{{"app", "app-3"}};
    audit.rules.emplace_back();
    set.authorization_policies.push_back(std::move(audit));
    AuthorizationPolicy when = policy("allow-when", ns, AuthorizationAction::kAllow);
    when.selector = Labels{{"app", "app-2"}};
    AuthorizationRule rule;
    AuthorizationCondition condition;
    condition.key = "source.namespace";
    condition.kind = AuthorizationCondition::Key::kSourceNamespace;
    condition.strings = {Exact(ns)};
    rule.when.push_back(condition);
    when.rules.push_back(rule);
    set.authorization_policies.push_back(std::move(when));
  }
}

const ResourceSet& Cluster() {
  static const auto* set = new ResourceSet(GenerateCluster());
  return *set;
}

std::shared_ptr<const Snapshot> BuiltSnapshot() {
  static const auto* snapshot =
      new std::shared_ptr<const Snapshot>(*Snapshot::Build(Cluster(), SnapshotOptions()));
  return *snapshot;
}

std::shared_ptr<const Snapshot> AuthorizedSnapshot() {
  static const auto* snapshot = new std::shared_ptr<const Snapshot>([] {
    ResourceSet set = Cluster();
    AddAuthorizationPolicies(set);
    return *Snapshot::Build(std::move(set), SnapshotOptions());
  }());
  return *snapshot;
}

void BM_SnapshotBuild(benchmark::State& state) {
  const ResourceSet& cluster = Cluster();
  for (auto _ : state) {
    state.PauseTiming();
    ResourceSet copy = cluster;
    state.ResumeTiming();
    absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
        Snapshot::Build(std::move(copy), SnapshotOptions());
    if (!snapshot.ok()) state.SkipWithError(std::string(snapshot.status().message()).c_str());
    benchmark::DoNotOptimize(snapshot);
  }
  state.counters["objects"] = static_cast<double>(cluster.size());
}
BENCHMARK(BM_SnapshotBuild)->Unit(benchmark::kMillisecond);

// Random sources toward random service addresses and ports, as captured connections arrive.
void BM_DecideOutboundToService(benchmark::State& state) {
  std::shared_ptr<const Snapshot> snapshot = BuiltSnapshot();
  const auto& pods = snapshot->resources().pods;
  const auto& services = snapshot->resources().services;
  std::mt19937_64 random(42);
  uint64_t hbone = 0;
  for (auto _ : state) {
    const Pod& source = pods[random() % pods.size()];
    const Service& service = services[random() % services.size()];
    uint32_t port = random() % 2 == 0 ? 80 : 9090;
    OutboundDecision decision =
        DecideOutbound(*snapshot, source, service.cluster_ips.front(), port, random());
    hbone += decision.action == OutboundAction::kHbone;
    benchmark::DoNotOptimize(decision);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["hbone_share"] =
      static_cast<double>(hbone) / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
}
BENCHMARK(BM_DecideOutboundToService);

void BM_DecideOutboundToPodIp(benchmark::State& state) {
  std::shared_ptr<const Snapshot> snapshot = BuiltSnapshot();
  const auto& pods = snapshot->resources().pods;
  std::mt19937_64 random(7);
  for (auto _ : state) {
    const Pod& source = pods[random() % pods.size()];
    const Pod& destination = pods[random() % pods.size()];
    benchmark::DoNotOptimize(DecideOutbound(*snapshot, source, destination.ips.front(), 8080));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecideOutboundToPodIp);

void BM_DecideInbound(benchmark::State& state) {
  std::shared_ptr<const Snapshot> snapshot = BuiltSnapshot();
  const auto& pods = snapshot->resources().pods;
  std::mt19937_64 random(9);
  for (auto _ : state) {
    const Pod& destination = pods[random() % pods.size()];
    benchmark::DoNotOptimize(
        DecideInbound(*snapshot, destination, 8080,
                      random() % 2 == 0 ? InboundTransport::kMtls : InboundTransport::kPlaintext));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecideInbound);

// What the data plane knows of inbound connections: mTLS from a random workload (or plaintext
// from its address), to a random pod's port.
void DecideInboundConnections(benchmark::State& state, const Snapshot& snapshot) {
  const auto& pods = snapshot.resources().pods;
  std::vector<SpiffeId> identities;
  for (const Pod& pod : pods) identities.push_back(*WorkloadIdentity(snapshot, pod));
  std::mt19937_64 random(9);
  uint64_t allowed = 0;
  for (auto _ : state) {
    const Pod& destination = pods[random() % pods.size()];
    const size_t source = random() % pods.size();
    InboundConnection connection;
    connection.transport =
        random() % 4 == 0 ? InboundTransport::kPlaintext : InboundTransport::kMtls;
    connection.peer_identity = identities[source];
    connection.source_ip = pods[source].ips.front();
    connection.destination_ip = destination.ips.front();
    connection.port = random() % 2 == 0 ? 8080 : 9090;
    InboundDecision decision = DecideInbound(snapshot, destination, connection);
    allowed += decision.allow;
    benchmark::DoNotOptimize(decision);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allowed_share"] =
      static_cast<double>(allowed) / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
}

void BM_DecideInboundConnection(benchmark::State& state) {
  DecideInboundConnections(state, *BuiltSnapshot());
}
BENCHMARK(BM_DecideInboundConnection);

void BM_DecideInboundWithAuthorizationPolicies(benchmark::State& state) {
  std::shared_ptr<const Snapshot> snapshot = AuthorizedSnapshot();
  state.counters["authorization_policies"] =
      static_cast<double>(snapshot->resources().authorization_policies.size());
  DecideInboundConnections(state, *snapshot);
}
BENCHMARK(BM_DecideInboundWithAuthorizationPolicies);

// The lookups alone, without composing a decision and its trace.
void BM_LookupPodAndService(benchmark::State& state) {
  std::shared_ptr<const Snapshot> snapshot = BuiltSnapshot();
  const auto& pods = snapshot->resources().pods;
  const auto& services = snapshot->resources().services;
  std::mt19937_64 random(11);
  for (auto _ : state) {
    benchmark::DoNotOptimize(snapshot->FindPodByIp(pods[random() % pods.size()].ips.front()));
    benchmark::DoNotOptimize(
        snapshot->FindServiceByClusterIp(services[random() % services.size()].cluster_ips[0]));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LookupPodAndService);

}  // namespace
}  // namespace nodeward::policy

BENCHMARK_MAIN();
