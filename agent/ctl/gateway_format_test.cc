// nodewardctl's gateway commands: their arguments, their tables, and a call through the CLI to
// a fake gateway admin API (and to an agent, which does not answer them).
#include "agent/ctl/gateway_format.h"

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/admin/admin.grpc.pb.h"
#include "agent/ctl/commands.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace nodeward::ctl {
namespace {

namespace v1 = admin::v1;
using ::testing::HasSubstr;

v1::ListGatewayListenersResponse Listeners() {
  v1::ListGatewayListenersResponse response;
  response.set_workload("istio-ingress/gw");
  response.set_identity("spiffe://cluster.local/ns/istio-ingress/sa/gateway");
  response.add_gateways("Gateway istio-ingress/ingress");
  response.set_config_generation(3);
  v1::GatewayListener* tls = response.add_listeners();
  tls->set_port(443);
  tls->set_kind("TLS");
  tls->set_bound("ok");
  v1::GatewayFilterChain* api = tls->add_chains();
  api->set_server("Gateway istio-ingress/ingress servers[0]");
  api->add_sni("api.example.com");
  api->set_tls_mode("SIMPLE");
  api->set_route("VirtualService backend/api tcp[0]");
  api->add_destinations("api:80 weight=0");
  v1::GatewayFilterChain* lost = tls->add_unrouted();
  lost->set_server("Gateway istio-ingress/ingress servers[1]");
  lost->add_sni("old.example.com");
  lost->set_tls_mode("SIMPLE");
  v1::GatewayListener* tcp = response.add_listeners();
  tcp->set_port(9000);
  tcp->set_kind("TCP");
  tcp->set_bound("listen on [::]:9000: Address already in use");
  v1::GatewayFilterChain* raw = tcp->add_chains();
  raw->set_server("Gateway istio-ingress/ingress servers[2]");
  raw->add_sni("*");
  raw->set_route("VirtualService backend/tcp tcp[0]");
  raw->add_destinations("api:80 weight=0");
  response.mutable_trace()->add_warnings("VirtualService backend/web: http routes not applied");
  return response;
}

TEST(GatewayRender, ListenersOneRowPerChainUnroutedMarked) {
  const std::string out = RenderGatewayListeners(Listeners());
  EXPECT_THAT(out,
              HasSubstr("IDENTITY           spiffe://cluster.local/ns/istio-ingress/sa/gateway"));
  EXPECT_THAT(out, HasSubstr("PORT  KIND  BOUND"));
  EXPECT_THAT(out, HasSubstr("443   TLS   ok"));
  EXPECT_THAT(out, HasSubstr("api.example.com  SIMPLE"));
  EXPECT_THAT(out, HasSubstr("VirtualService backend/api tcp[0]"));
  EXPECT_THAT(out, HasSubstr("(no route: refused)"));
  // A TCP chain's mode is its kind; a port that could not be bound says why.
  EXPECT_THAT(out, HasSubstr("Address already in use"));
  EXPECT_THAT(out, HasSubstr("*                TCP"));
  EXPECT_THAT(out, HasSubstr("WARNINGS\n  ! VirtualService backend/web: http routes not applied"));
}

TEST(GatewayRender, CertificatesWithStateAndExpiry) {
  v1::ListGatewayCertificatesResponse response;
  v1::GatewayServerCredential* server = response.add_servers();
  server->set_port(443);
  server->add_hosts("api.example.com");
  server->set_mode("SIMPLE");
  server->set_state("stale");
  server->set_subject("CN=api.example.com");
  server->add_subject_alt_names("DNS:api.example.com");
  server->set_not_after("2026-11-18T00:00:00Z");
  server->add_sources("Secret istio-ingress/api-cert (tls.crt, tls.key)");
  server->set_last_error("tls.key: not a private key");
  const std::string out =
      RenderGatewayCertificates(response, absl::FromUnixSeconds(1795000000));  // 2026-11-17T...
  EXPECT_THAT(out, HasSubstr("stale"));
  EXPECT_THAT(out, HasSubstr("CN=api.example.com"));
  EXPECT_THAT(out, HasSubstr("Secret istio-ingress/api-cert (tls.crt, tls.key)"));
  EXPECT_THAT(out, HasSubstr("tls.key: not a private key"));
  EXPECT_THAT(out, HasSubstr("EXPIRES-IN"));
}

v1::ExplainGatewayResponse Explained() {
  v1::ExplainGatewayResponse response;
  response.set_action("PASSTHROUGH");
  response.set_reason("tls route to passa.backend.svc.cluster.local:443");
  response.set_server("Gateway istio-ingress/ingress servers[3]");
  response.set_tls_mode("PASSTHROUGH");
  response.set_route("VirtualService backend/pass tls[0].match[0]");
  response.set_destination("passa.backend.svc.cluster.local:443");
  v1::ExplainPolicyResponse* upstream = response.mutable_upstream();
  upstream->set_action("HBONE");
  upstream->set_reason("auto mTLS: the destination is in the mesh");
  upstream->set_address("10.241.2.4");
  upstream->set_port(8443);
  upstream->set_destination_workload("backend/passa");
  upstream->set_expected_peer_identity("spiffe://cluster.local/ns/backend/sa/passa");
  response.mutable_trace()->add_deciding("Gateway istio-ingress/ingress");
  response.mutable_trace()->add_steps(
      "the client's TLS is carried unchanged inside the mesh mTLS tunnel (double encryption)");
  response.set_config_generation(3);
  return response;
}

TEST(GatewayRender, ExplainSaysServerRouteAndUpstream) {
  v1::ExplainGatewayRequest request;
  request.set_port(9443);
  request.set_sni("pass-a.example.com");
  const std::string out = RenderGatewayExplain(request, Explained());
  EXPECT_THAT(out, HasSubstr("SNI                     pass-a.example.com"));
  EXPECT_THAT(out, HasSubstr("ACTION                  PASSTHROUGH"));
  EXPECT_THAT(out, HasSubstr("UPSTREAM                HBONE: auto mTLS"));
  EXPECT_THAT(out, HasSubstr("UPSTREAM-ADDRESS        10.241.2.4:8443"));
  EXPECT_THAT(out, HasSubstr("double encryption"));
  request.clear_sni();
  EXPECT_THAT(RenderGatewayExplain(request, Explained()),
              HasSubstr("SNI                     (none)"));
}

TEST(GatewayArguments, ExplainAndDefaultAddress) {
  absl::StatusOr<Invocation> i =
      ParseArguments({"policy", "explain", "--gateway=443", "--sni=api.example.com"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_TRUE(i->explain_gateway);
  EXPECT_EQ(i->gateway_explain.port(), 443u);
  EXPECT_EQ(i->gateway_explain.sni(), "api.example.com");
  EXPECT_EQ(i->Target(), kDefaultGatewayAddress);

  i = ParseArguments({"policy", "explain", "--gateway", "9000"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_FALSE(i->gateway_explain.has_sni());

  i = ParseArguments({"gateway", "listeners"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->command, "gateway listeners");
  EXPECT_EQ(i->Target(), kDefaultGatewayAddress);
  i = ParseArguments({"gateway", "certificates", "--socket=/tmp/gw.sock"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->command, "gateway certs");
  EXPECT_EQ(i->Target(), "unix:/tmp/gw.sock");
  // The agent's commands keep the node socket.
  i = ParseArguments({"workloads"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->Target(), absl::StrCat("unix:", kDefaultSocket));

  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"policy", "explain", "--gateway=0"},
           {"policy", "explain", "--gateway=https"},
           {"policy", "explain", "--gateway=443", "--from=a/b", "--to=10.0.0.1:1"},
           {"policy", "explain", "--gateway=443", "--plaintext"},
           {"gateway"},
           {"gateway", "routes"},
       }) {
    EXPECT_FALSE(ParseArguments(bad).ok()) << absl::StrJoin(bad, " ");
  }
}

class FakeGateway final : public v1::Admin::Service {
 public:
  grpc::Status ListGatewayListeners(grpc::ServerContext*, const v1::ListGatewayListenersRequest*,
                                    v1::ListGatewayListenersResponse* response) override {
    *response = Listeners();
    return grpc::Status::OK;
  }
  grpc::Status ExplainGateway(grpc::ServerContext*, const v1::ExplainGatewayRequest* request,
                              v1::ExplainGatewayResponse* response) override {
    last = *request;
    *response = Explained();
    return grpc::Status::OK;
  }
  v1::ExplainGatewayRequest last;
};

TEST(GatewayCli, CallsTheGatewayAndExplainsAnAgentThatIsNone) {
  char dir_template[] = "/tmp/nodewardctl-gateway.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string socket = std::string(dir_template) + "/admin.sock";
  FakeGateway service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::ostringstream out, err;
  EXPECT_EQ(Main({"gateway", "listeners", "--socket=" + socket}, out, err), kExitOk) << err.str();
  EXPECT_EQ(out.str(), RenderGatewayListeners(Listeners()));
  out.str("");
  EXPECT_EQ(Main({"policy", "explain", "--gateway=9443", "--sni=pass-a.example.com",
                  "--socket=" + socket, "-o", "json"},
                 out, err),
            kExitOk)
      << err.str();
  EXPECT_EQ(service.last.sni(), "pass-a.example.com");
  EXPECT_THAT(out.str(), HasSubstr("\"action\": \"PASSTHROUGH\""));
  // What this fake does not implement is what a node agent answers to gateway commands.
  out.str("");
  EXPECT_EQ(Main({"gateway", "certs", "--socket=" + socket}, out, err), kExitAgentError);
  EXPECT_THAT(err.str(), HasSubstr("the gateway commands"));
  server->Shutdown();
  std::filesystem::remove_all(dir_template);
}

}  // namespace
}  // namespace nodeward::ctl
