#include "agent/ctl/gateway_format.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/ctl/format.h"

namespace nodeward::ctl {
namespace {

namespace v1 = admin::v1;

std::string Or(const std::string& value, const std::string& fallback) {
  return value.empty() ? fallback : value;
}

void AddChains(Table& table, const v1::GatewayListener& listener,
               const google::protobuf::RepeatedPtrField<v1::GatewayFilterChain>& chains,
               const std::string& routed) {
  for (const v1::GatewayFilterChain& chain : chains) {
    table.AddRow({absl::StrCat(listener.port()), listener.kind(), listener.bound(),
                  absl::StrJoin(chain.sni(), ","), Or(chain.tls_mode(), listener.kind()),
                  chain.server(), Or(chain.route(), routed),
                  absl::StrJoin(chain.destinations(), ", ")});
  }
}

}  // namespace

std::string RenderGatewayListeners(const v1::ListGatewayListenersResponse& response) {
  std::string out = KeyValues({{"WORKLOAD", response.workload()},
                               {"IDENTITY", response.identity()},
                               {"GATEWAYS", absl::StrJoin(response.gateways(), ", ")},
                               {"CONFIG-GENERATION", absl::StrCat(response.config_generation())}});
  Table table({"PORT", "KIND", "BOUND", "SNI", "MODE", "SERVER", "ROUTE", "DESTINATIONS"});
  for (const v1::GatewayListener& listener : response.listeners()) {
    AddChains(table, listener, listener.chains(), "");
    // Servers no route reaches: shown, so "why is my host refused" has an answer here.
    AddChains(table, listener, listener.unrouted(), "(no route: refused)");
  }
  absl::StrAppend(&out, "\n", table.Render());
  return absl::StrCat(out, RenderTrace(response.trace()));
}

std::string RenderGatewayCertificates(const v1::ListGatewayCertificatesResponse& response,
                                      absl::Time now) {
  Table table({"PORT", "HOSTS", "MODE", "STATE", "SUBJECT", "SANS", "NOT-AFTER", "EXPIRES-IN",
               "SOURCES", "LAST-ERROR"});
  for (const v1::GatewayServerCredential& server : response.servers()) {
    table.AddRow({absl::StrCat(server.port()), absl::StrJoin(server.hosts(), ","), server.mode(),
                  server.state(), server.subject(), absl::StrJoin(server.subject_alt_names(), ","),
                  server.not_after(), DurationUntil(server.not_after(), now),
                  absl::StrJoin(server.sources(), "; "), server.last_error()});
  }
  return table.Render();
}

std::string RenderGatewayExplain(const v1::ExplainGatewayRequest& request,
                                 const v1::ExplainGatewayResponse& response) {
  std::vector<std::pair<std::string, std::string>> lines = {
      {"PORT", absl::StrCat(request.port())},
      {"SNI", request.has_sni() ? request.sni() : "(none)"},
      {"ACTION", response.action()},
      {"REFUSAL", response.refusal()},
      {"REASON", response.reason()},
      {"SERVER", response.server()},
      {"TLS-MODE", response.tls_mode()},
      {"ROUTE", response.route()},
      {"DESTINATION", response.destination()},
  };
  if (response.has_upstream()) {
    const v1::ExplainPolicyResponse& upstream = response.upstream();
    lines.push_back({"UPSTREAM", absl::StrCat(upstream.action(), ": ", upstream.reason())});
    if (!upstream.address().empty()) {
      lines.push_back({"UPSTREAM-ADDRESS", absl::StrCat(upstream.address(), ":", upstream.port())});
    }
    lines.push_back({"UPSTREAM-WORKLOAD", upstream.destination_workload()});
    lines.push_back({"EXPECTED-PEER-IDENTITY", upstream.expected_peer_identity()});
    if (!upstream.origination().empty()) {
      lines.push_back({"TLS-ORIGINATION", upstream.origination()});
    }
  }
  const v1::PolicyTrace& trace = response.trace();
  for (int i = 0; i < trace.deciding_size(); ++i) {
    lines.push_back({i == 0 ? "DECIDED-BY" : "", trace.deciding(i)});
  }
  lines.push_back({"CONFIG-GENERATION", absl::StrCat(response.config_generation())});
  return absl::StrCat(KeyValues(lines), RenderTrace(trace));
}

}  // namespace nodeward::ctl
