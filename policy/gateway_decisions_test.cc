#include "policy/gateway_decisions.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

// An ingress gateway workload in istio-ingress in front of "shop" (enrolled) and "legacy"
// (outside the mesh).
constexpr char kCluster[] = R"yaml(
apiVersion: v1
kind: Namespace
metadata: {name: istio-ingress}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {nodeward.io/dataplane-mode: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: gw-1, namespace: istio-ingress, labels: {istio: ingressgateway}}
spec: {serviceAccountName: gateway}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {serviceAccountName: web}
status: {podIP: 10.0.1.10, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, labels: {app: api}}
spec: {serviceAccountName: api}
status: {podIP: 10.0.1.11, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {serviceAccountName: db}
status: {podIP: 10.0.1.12, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old-1, namespace: legacy, labels: {app: old}}
status: {podIP: 10.0.3.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 443, targetPort: 8443}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: api}
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.12, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: shop}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: old, namespace: legacy}
spec: {clusterIP: 10.96.3.1, selector: {app: old}, ports: [{port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-ingress, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-www, protocol: HTTPS}
    hosts: ["shop/www.example.com"]
    tls: {mode: SIMPLE, credentialName: www-cert}
  - port: {number: 443, name: tls-a, protocol: TLS}
    hosts: ["*/a.example.com", "*.wild.example.com"]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 5432, name: tcp-db, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8443, name: tls-bank, protocol: TLS}
    hosts: ["bank.example.com"]
    tls: {mode: MUTUAL, credentialName: bank-cert}
  - port: {number: 9443, name: tls-lonely, protocol: TLS}
    hosts: ["lonely.example.com"]
    tls: {mode: SIMPLE, credentialName: lonely-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: later, namespace: istio-ingress, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls-a-again, protocol: TLS}
    hosts: ["a.example.com"]
    tls: {mode: SIMPLE, credentialName: other}
  - port: {number: 5432, name: tls-on-tcp, protocol: TLS}
    hosts: ["x.example.com"]
    tls: {mode: SIMPLE, credentialName: other}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: istio-ingress}
spec:
  selector: {app: another-gateway}
  servers:
  - port: {number: 7000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: shop, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [a.example.com, "*.wild.example.com", "*.pass.example.com", www.example.com,
          bank.example.com]
  gateways: [istio-ingress/public]
  http:
  - route: [{destination: {host: web}}]
  tcp:
  - match: [{port: 443}]
    route: [{destination: {host: web, port: {number: 443}}}]
  - match: [{port: 8443}]
    route:
    - {destination: {host: api, port: {number: 9090}}, weight: 75}
    - {destination: {host: api.shop.svc.cluster.local, port: {number: 80}}, weight: 25}
  tls:
  - match: [{sniHosts: [x.pass.example.com]}]
    route: [{destination: {host: web}}]
  - match: [{sniHosts: ["*.pass.example.com"]}]
    route: [{destination: {host: old.legacy.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop, creationTimestamp: "2024-02-02T00:00:00Z"}
spec:
  hosts: ["*"]
  gateways: [istio-ingress/public]
  tcp: [{match: [{port: 5432}], route: [{destination: {host: db}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: shop}
spec:
  hosts: [lonely.example.com]
  gateways: [istio-ingress/public]
  exportTo: ["."]
  tcp: [{route: [{destination: {host: web}}]}]
)yaml";

class GatewayDecisionsTest : public ::testing::Test {
 protected:
  void SetUp() override { Load(""); }

  void Load(const std::string& extra) {
    ResourceSet resources;
    absl::Status status =
        AppendYamlResources(absl::StrCat(kCluster, extra), "cluster.yaml", resources);
    ASSERT_TRUE(status.ok()) << status;
    absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
        Snapshot::Build(std::move(resources), {});
    ASSERT_TRUE(snapshot.ok()) << snapshot.status();
    snapshot_ = *std::move(snapshot);
    gateway_ = snapshot_->FindPod("istio-ingress", "gw-1");
    ASSERT_NE(gateway_, nullptr);
    listeners_ = ResolveGatewayListeners(*snapshot_, *gateway_);
  }

  GatewayDecision Decide(uint32_t port, std::optional<std::string> sni, uint64_t hint = 0,
                         std::vector<std::string> alpn = {}) {
    const GatewayListener* listener = listeners_.ForPort(port);
    EXPECT_NE(listener, nullptr) << port;
    if (listener == nullptr) return {};
    return DecideGateway(*snapshot_, *listener, {std::move(sni), std::move(alpn)}, hint);
  }

  std::shared_ptr<const Snapshot> snapshot_;
  const Pod* gateway_ = nullptr;
  GatewayListeners listeners_;
};

TEST_F(GatewayDecisionsTest, MergesTheSelectingGatewaysIntoListenersAsIstioDoes) {
  ASSERT_EQ(listeners_.gateways.size(), 2u);
  EXPECT_EQ(listeners_.gateways[0]->meta.name, "public");  // oldest first
  EXPECT_EQ(listeners_.gateways[1]->meta.name, "later");
  std::vector<uint32_t> ports;
  for (const GatewayListener& listener : listeners_.listeners) ports.push_back(listener.port);
  EXPECT_EQ(ports, (std::vector<uint32_t>{443, 5432, 8443, 9443}));
  EXPECT_EQ(listeners_.ForPort(443)->kind, ListenerKind::kTls);
  EXPECT_EQ(listeners_.ForPort(5432)->kind, ListenerKind::kPlaintext);
  // 443: the HTTPS server, the SIMPLE one, and one per passthrough tls route match.
  EXPECT_EQ(listeners_.ForPort(443)->chains.size(), 4u);
  const std::string trace = listeners_.trace.ToString();
  EXPECT_THAT(trace, HasSubstr("Gateway istio-ingress/elsewhere does not select pod "
                               "istio-ingress/gw-1 (selector app=another-gateway)"));
  EXPECT_THAT(trace, HasSubstr("Gateway istio-ingress/later servers[0] is skipped: port 443 "
                               "already serves a.example.com over TLS"));
  EXPECT_THAT(trace, HasSubstr("Gateway istio-ingress/later servers[1] is skipped: port 5432 is "
                               "already a plain-text TCP port"));
  EXPECT_THAT(trace, HasSubstr("1 http route(s) are not applied by the nodeward gateway"));
  EXPECT_THAT(trace,
              HasSubstr("VirtualService shop/private names a Gateway of pod "
                        "istio-ingress/gw-1 but is not exported to namespace istio-ingress"));
  EXPECT_THAT(trace, HasSubstr("Gateway istio-ingress/public servers[5] on port 9443 has no tcp "
                               "route from a VirtualService bound to it"));
}

TEST_F(GatewayDecisionsTest, TerminatesBySniAndRoutesByTheFirstMatchingTcpRoute) {
  GatewayDecision decision = Decide(443, "a.example.com");
  EXPECT_EQ(decision.action, GatewayAction::kTerminate) << decision.trace.ToString();
  EXPECT_EQ(decision.server_index, 1u);
  EXPECT_EQ(decision.tls_mode, ServerTlsMode::kSimple);
  ASSERT_NE(decision.virtual_service, nullptr);
  EXPECT_EQ(decision.virtual_service->meta.name, "routes");
  EXPECT_EQ(decision.route_name, "tcp[0]");
  ASSERT_TRUE(decision.destination.has_value());
  EXPECT_EQ(decision.destination->host, "web.shop.svc.cluster.local");
  EXPECT_EQ(decision.destination->address.ToString(), "10.96.0.10");
  EXPECT_EQ(decision.destination->port, 443u);
  EXPECT_THAT(decision.trace.deciding, Contains("Gateway istio-ingress/public"));
  EXPECT_THAT(decision.trace.deciding, Contains("VirtualService shop/routes"));

  GatewayDecision wildcard = Decide(443, "deep.sub.wild.example.com");
  EXPECT_EQ(wildcard.action, GatewayAction::kTerminate);
  EXPECT_EQ(wildcard.server_index, 1u);
  // SNI is compared without regard to case.
  EXPECT_EQ(Decide(443, "A.Example.COM").server_index, 1u);
}

TEST_F(GatewayDecisionsTest, PassthroughPrefersTheExactSniOverTheWildcardRoute) {
  GatewayDecision exact = Decide(443, "x.pass.example.com");
  EXPECT_EQ(exact.action, GatewayAction::kPassthrough) << exact.trace.ToString();
  EXPECT_EQ(exact.route_name, "tls[0].match[0]");
  EXPECT_EQ(exact.destination->host, "web.shop.svc.cluster.local");
  GatewayDecision wildcard = Decide(443, "y.pass.example.com");
  EXPECT_EQ(wildcard.action, GatewayAction::kPassthrough);
  EXPECT_EQ(wildcard.route_name, "tls[1].match[0]");
  EXPECT_EQ(wildcard.destination->host, "old.legacy.svc.cluster.local");
  EXPECT_EQ(wildcard.destination->port, 80u);  // the Service's only port
}

TEST_F(GatewayDecisionsTest, UnknownOrMissingSniIsRefusedWithAReason) {
  GatewayDecision unknown = Decide(443, "nobody.example.com");
  EXPECT_EQ(unknown.action, GatewayAction::kRefuse);
  EXPECT_EQ(unknown.refusal, GatewayRefusal::kNoFilterChain);
  EXPECT_EQ(unknown.reason, "no server on port 443 serves SNI nobody.example.com");
  GatewayDecision none = Decide(443, std::nullopt);
  EXPECT_EQ(none.refusal, GatewayRefusal::kNoFilterChain);
  EXPECT_THAT(none.reason, HasSubstr("serves no SNI"));
  // A server without routes explains the refusal of the names it would serve.
  GatewayDecision lonely = Decide(9443, "lonely.example.com");
  EXPECT_EQ(lonely.refusal, GatewayRefusal::kNoFilterChain);
  EXPECT_THAT(lonely.reason, HasSubstr("Gateway istio-ingress/public servers[5] would, but no "
                                       "VirtualService routes it"));
  EXPECT_EQ(GatewayRefusalName(lonely.refusal), "no_filter_chain");
}

TEST_F(GatewayDecisionsTest, HttpsServersThatTerminateAreRefusedAsHttpRouting) {
  GatewayDecision decision = Decide(443, "www.example.com");
  EXPECT_EQ(decision.action, GatewayAction::kRefuse);
  EXPECT_EQ(decision.refusal, GatewayRefusal::kHttpNotSupported);
  EXPECT_THAT(decision.reason, HasSubstr("does not route HTTP: use protocol TLS with tcp routes"));
  EXPECT_EQ(decision.server_index, 0u);
}

TEST_F(GatewayDecisionsTest, PlainTcpPortsRouteByPort) {
  GatewayDecision decision = Decide(5432, std::nullopt);
  EXPECT_EQ(decision.action, GatewayAction::kTcp) << decision.trace.ToString();
  EXPECT_EQ(decision.virtual_service->meta.name, "db");
  EXPECT_EQ(decision.destination->address.ToString(), "10.96.0.12");
  EXPECT_EQ(decision.destination->port, 5432u);
}

TEST_F(GatewayDecisionsTest, WeightsSplitByTheHint) {
  int first = 0;
  for (uint64_t hint = 0; hint < 100; ++hint) {
    GatewayDecision decision = Decide(8443, "bank.example.com", hint);
    ASSERT_EQ(decision.action, GatewayAction::kTerminate) << decision.trace.ToString();
    EXPECT_EQ(decision.tls_mode, ServerTlsMode::kMutual);
    first += decision.destination->route_index == 0;
    EXPECT_EQ(decision.destination->port, decision.destination->route_index == 0 ? 9090u : 80u);
  }
  EXPECT_EQ(first, 75);
}

TEST_F(GatewayDecisionsTest, ExplainJoinsTheUpstreamDecisionFromTheGateway) {
  GatewayExplanation pass =
      ExplainGateway(*snapshot_, *gateway_, 443, {std::string("x.pass.example.com"), {}});
  ASSERT_TRUE(pass.upstream.has_value());
  EXPECT_EQ(pass.upstream->action, OutboundAction::kHbone) << pass.trace.ToString();
  EXPECT_EQ(pass.upstream->expected_peer_identity, "spiffe://cluster.local/ns/shop/sa/web");
  const std::string text = pass.trace.ToString();
  EXPECT_THAT(text, HasSubstr("upstream: source pod istio-ingress/gw-1 "
                              "(spiffe://cluster.local/ns/istio-ingress/sa/gateway) connects to "
                              "10.96.0.10:443"));
  EXPECT_THAT(text, HasSubstr("carried unchanged inside the mesh mTLS tunnel (double encryption)"));

  // Terminated, to a destination outside the mesh: plain text after the gateway, said so.
  Load(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-legacy, namespace: legacy, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [a.example.com]
  gateways: [istio-ingress/public]
  tcp: [{route: [{destination: {host: old}}]}]
)yaml");
  GatewayExplanation legacy =
      ExplainGateway(*snapshot_, *gateway_, 443, {std::string("a.example.com"), {}});
  EXPECT_EQ(legacy.decision.action, GatewayAction::kTerminate);
  EXPECT_EQ(legacy.decision.virtual_service->meta.name, "to-legacy");  // the older one wins
  ASSERT_TRUE(legacy.upstream.has_value());
  EXPECT_EQ(legacy.upstream->action, OutboundAction::kPlaintext);
  EXPECT_THAT(legacy.trace.ToString(),
              HasSubstr("the client's TLS ends at the gateway and the connection to "
                        "old.legacy.svc.cluster.local is plain text"));

  GatewayExplanation closed = ExplainGateway(*snapshot_, *gateway_, 7000, {std::nullopt, {}});
  EXPECT_EQ(closed.decision.refusal, GatewayRefusal::kNoListener);
  EXPECT_FALSE(closed.upstream.has_value());
}

TEST_F(GatewayDecisionsTest, DestinationsThatCannotBeReachedAreRefusedByName) {
  struct Case {
    const char* destination;
    GatewayRefusal refusal;
    const char* reason;
  };
  for (const Case& c : std::vector<Case>{
           {"{host: web, subset: v2}", GatewayRefusal::kSubsetNotSupported,
            "DestinationRule subsets are not applied by this gateway"},
           {"{host: nowhere.example.org}", GatewayRefusal::kUnknownDestination,
            "destination nowhere.example.org is not a Kubernetes Service this gateway knows"},
           {"{host: headless}", GatewayRefusal::kHeadlessDestination, "is headless"},
           {"{host: api}", GatewayRefusal::kAmbiguousServicePort,
            "the route names no destination port and Service shop/api has 2 TCP ports [80, 9090]"},
           {"{host: api, port: {number: 81}}", GatewayRefusal::kNoServicePort,
            "Service shop/api has no TCP port 81"},
       }) {
    Load(absl::StrCat(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first, namespace: shop, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [a.example.com]
  gateways: [istio-ingress/public]
  tcp: [{route: [{destination: )yaml",
                      c.destination, "}]}]\n"));
    GatewayDecision decision = Decide(443, "a.example.com");
    EXPECT_EQ(decision.action, GatewayAction::kRefuse) << c.destination;
    EXPECT_EQ(decision.refusal, c.refusal) << c.destination << ": " << decision.reason;
    EXPECT_THAT(decision.reason, HasSubstr(c.reason));
  }
}

TEST_F(GatewayDecisionsTest, ServerHostNamespacesAdmitOnlyTheirVirtualServices) {
  // www.example.com is "shop/www.example.com": a legacy VirtualService for it does not bind.
  Load(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: www-tls, namespace: istio-ingress, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 10443, name: tls, protocol: TLS}
    hosts: ["shop/www.example.com"]
    tls: {mode: SIMPLE, credentialName: www}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: intruder, namespace: legacy}
spec:
  hosts: [www.example.com]
  gateways: [istio-ingress/www-tls]
  tcp: [{route: [{destination: {host: old}}]}]
)yaml");
  GatewayDecision decision = Decide(10443, "www.example.com");
  EXPECT_EQ(decision.refusal, GatewayRefusal::kNoFilterChain) << decision.trace.ToString();
}

TEST_F(GatewayDecisionsTest, GatewaysCanBeScopedToTheirNamespace) {
  Load(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: foreign, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 6000, name: tcp, protocol: TCP}, hosts: ["*"]}]
)yaml");
  EXPECT_NE(ResolveGatewayListeners(*snapshot_, *gateway_).ForPort(6000), nullptr);
  GatewayListeners scoped =
      ResolveGatewayListeners(*snapshot_, *gateway_, {.scope_to_namespace = true});
  EXPECT_EQ(scoped.ForPort(6000), nullptr);
  EXPECT_THAT(
      scoped.trace.ToString(),
      HasSubstr("Gateway shop/foreign is in another namespace than pod istio-ingress/gw-1"));
}

TEST_F(GatewayDecisionsTest, AutoPassthroughRoutesIstioMtlsByTheServiceNamedInTheSni) {
  Load(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: east-west, namespace: istio-ingress}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.shop.svc.cluster.local"]
    tls: {mode: AUTO_PASSTHROUGH}
)yaml");
  const std::string sni = "outbound_.443_._.web.shop.svc.cluster.local";
  GatewayDecision decision = Decide(15443, sni, 0, {"istio-peer-exchange", "istio"});
  EXPECT_EQ(decision.action, GatewayAction::kPassthrough) << decision.trace.ToString();
  EXPECT_EQ(decision.destination->address.ToString(), "10.96.0.10");
  EXPECT_EQ(decision.destination->port, 443u);
  // Only Istio mTLS clients, only services of the server's hosts, no subsets.
  EXPECT_EQ(Decide(15443, sni, 0, {"h2"}).refusal, GatewayRefusal::kNoFilterChain);
  EXPECT_EQ(Decide(15443, "outbound_.80_._.old.legacy.svc.cluster.local", 0, {"istio"}).refusal,
            GatewayRefusal::kNoFilterChain);
  EXPECT_EQ(Decide(15443, "outbound_.443_.v1_.web.shop.svc.cluster.local", 0, {"istio"}).refusal,
            GatewayRefusal::kSubsetNotSupported);
  EXPECT_EQ(Decide(15443, "outbound_.444_._.web.shop.svc.cluster.local", 0, {"istio"}).refusal,
            GatewayRefusal::kNoServicePort);
}

TEST_F(GatewayDecisionsTest, AnEmptySelectorSelectsEveryGatewayWorkload) {
  Load(R"yaml(
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everyone, namespace: istio-ingress}
spec:
  servers: [{port: {number: 6001, name: tcp, protocol: TCP}, hosts: ["*"]}]
)yaml");
  EXPECT_NE(listeners_.ForPort(6001), nullptr);
}

}  // namespace
}  // namespace nodeward::policy
