#include "agent/gateway/gateway_admin.h"

#include "absl/strings/str_cat.h"
#include "agent/admin/admin_service.h"
#include "common/log.h"

namespace nodeward::gateway {
namespace {

namespace v1 = admin::v1;

void FillChain(const policy::GatewayFilterChain& chain, v1::GatewayFilterChain* out) {
  out->set_server(chain.Describe());
  for (const std::string& sni : chain.sni_patterns) out->add_sni(sni);
  const policy::GatewayServer& server = chain.server();
  if (server.tls.has_value()) {
    out->set_tls_mode(std::string(policy::ServerTlsModeName(server.tls->mode)));
  }
  if (chain.virtual_service != nullptr) {
    out->set_route(
        absl::StrCat(policy::DescribeObject("VirtualService", chain.virtual_service->meta), " ",
                     chain.route_name));
  }
  if (chain.route != nullptr) {
    // A single destination takes every connection whatever its weight says (Istio's too).
    const bool weighted = chain.route->route.size() > 1;
    for (const policy::RouteDestination& destination : chain.route->route) {
      out->add_destinations(absl::StrCat(
          destination.host, ":", destination.port, destination.subset.empty() ? "" : " subset=",
          destination.subset, weighted ? absl::StrCat(" weight=", destination.weight) : ""));
    }
  }
}

}  // namespace

void FillListeners(const GatewayConfig& config, const std::vector<ServedPort>& ports,
                   v1::ListGatewayListenersResponse* response) {
  response->set_workload(absl::StrCat(config.workload.meta.ns, "/", config.workload.meta.name));
  response->set_config_generation(config.snapshot->generation());
  for (const policy::Gateway* gateway : config.listeners.gateways) {
    response->add_gateways(policy::DescribeObject("Gateway", gateway->meta));
  }
  for (const policy::GatewayListener& listener : config.listeners.listeners) {
    v1::GatewayListener* out = response->add_listeners();
    out->set_port(listener.port);
    out->set_kind(listener.kind == policy::ListenerKind::kTls ? "TLS" : "TCP");
    out->set_bound("ok");
    for (const ServedPort& port : ports) {
      if (port.port == listener.port && !port.bound.ok()) {
        out->set_bound(std::string(port.bound.message()));
      }
    }
    for (const policy::GatewayFilterChain& chain : listener.chains) {
      FillChain(chain, out->add_chains());
    }
    for (const policy::GatewayFilterChain& chain : listener.unrouted) {
      FillChain(chain, out->add_unrouted());
    }
  }
  admin::FillTrace(config.listeners.trace, response->mutable_trace());
}

grpc::Status GatewayAdminService::ListGatewayListeners(grpc::ServerContext*,
                                                       const v1::ListGatewayListenersRequest*,
                                                       v1::ListGatewayListenersResponse* response) {
  std::shared_ptr<const GatewayConfig> config = server_->config();
  if (config == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no configuration loaded yet");
  }
  FillListeners(*config, server_->Ports(), response);
  response->set_identity(server_->identity().ToString());
  return grpc::Status::OK;
}

grpc::Status GatewayAdminService::ListGatewayCertificates(
    grpc::ServerContext*, const v1::ListGatewayCertificatesRequest*,
    v1::ListGatewayCertificatesResponse* response) {
  for (const ServerCredentialStatus& status : server_->contexts().Status()) {
    v1::GatewayServerCredential* out = response->add_servers();
    out->set_port(status.port);
    out->set_server(status.server);
    for (const std::string& host : status.hosts) out->add_hosts(host);
    out->set_mode(status.mode);
    for (const std::string& source : status.sources) out->add_sources(source);
    out->set_state(std::string(CredentialStateName(status.state)));
    if (!status.last_error.ok()) out->set_last_error(std::string(status.last_error.message()));
    if (status.certificate.has_value()) {
      out->set_subject(status.certificate->info.subject);
      for (const std::string& san : status.certificate->subject_alt_names) {
        out->add_subject_alt_names(san);
      }
      out->set_serial(status.certificate->info.serial_hex);
      out->set_not_after(admin::Rfc3339(status.certificate->info.not_after));
      out->set_built(admin::Rfc3339(status.built));
    }
  }
  return grpc::Status::OK;
}

grpc::Status GatewayAdminService::ExplainGateway(grpc::ServerContext*,
                                                 const v1::ExplainGatewayRequest* request,
                                                 v1::ExplainGatewayResponse* response) {
  std::shared_ptr<const GatewayConfig> config = server_->config();
  if (config == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no configuration loaded yet");
  }
  if (request->port() == 0 || request->port() > 65535) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "port must be 1-65535");
  }
  policy::GatewayConnection connection;
  if (request->has_sni()) connection.sni = request->sni();
  connection.alpn.assign(request->alpn().begin(), request->alpn().end());
  policy::GatewayExplanation explanation =
      policy::ExplainGateway(*config->snapshot, config->workload, request->port(), connection,
                             /*hint=*/0, server_->options().policy);
  const policy::GatewayDecision& decision = explanation.decision;
  response->set_config_generation(config->snapshot->generation());
  response->set_action(std::string(policy::GatewayActionName(decision.action)));
  if (decision.refusal != policy::GatewayRefusal::kNone) {
    response->set_refusal(std::string(policy::GatewayRefusalName(decision.refusal)));
  }
  response->set_reason(decision.reason);
  if (decision.gateway != nullptr) {
    response->set_server(absl::StrCat(policy::DescribeObject("Gateway", decision.gateway->meta),
                                      " servers[", decision.server_index, "]"));
  }
  if (decision.tls_mode.has_value()) {
    response->set_tls_mode(std::string(policy::ServerTlsModeName(*decision.tls_mode)));
  }
  if (decision.virtual_service != nullptr) {
    response->set_route(
        absl::StrCat(policy::DescribeObject("VirtualService", decision.virtual_service->meta), " ",
                     decision.route_name));
  }
  if (decision.destination.has_value()) {
    response->set_destination(
        absl::StrCat(decision.destination->host, ":", decision.destination->port));
  }
  if (explanation.upstream.has_value()) {
    admin::FillOutboundExplanation(*config->snapshot, *explanation.upstream,
                                   response->mutable_upstream());
  }
  admin::FillTrace(explanation.trace, response->mutable_trace());
  return grpc::Status::OK;
}

grpc::Status GatewayAdminService::ListConnections(grpc::ServerContext*,
                                                  const v1::ListConnectionsRequest*,
                                                  v1::ListConnectionsResponse* response) {
  admin::FillConnections(server_->Connections(), response);
  return grpc::Status::OK;
}

grpc::Status GatewayAdminService::SetLogLevel(grpc::ServerContext*,
                                              const v1::SetLogLevelRequest* request,
                                              v1::SetLogLevelResponse* response) {
  return admin::ApplyLogLevel(*request, response);
}

grpc::Status GatewayAdminService::Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                                        v1::DrainResponse* response) {
  const absl::Duration grace = admin::DrainGrace(*request);
  Log(LogLevel::kWarning, "gateway draining through the admin API, grace ",
      absl::FormatDuration(grace));
  response->set_connections_cut(server_->Drain(grace));
  return grpc::Status::OK;
}

}  // namespace nodeward::gateway
