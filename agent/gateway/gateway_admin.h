// The gateway's side of the admin API (agent/admin/admin.proto), what `nodewardctl gateway
// listeners`, `gateway certs`, `policy explain --gateway` and `connections` show: the
// listeners resolved for this workload, the certificate each SNI gets, the decision for a
// port and SNI with the upstream decision behind it, and the live connections.
#pragma once

#include "agent/admin/admin.grpc.pb.h"
#include "agent/gateway/gateway_server.h"

namespace nodeward::gateway {

class GatewayAdminService final : public admin::v1::Admin::Service {
 public:
  explicit GatewayAdminService(GatewayServer* server) : server_(server) {}

  grpc::Status ListGatewayListeners(grpc::ServerContext*,
                                    const admin::v1::ListGatewayListenersRequest*,
                                    admin::v1::ListGatewayListenersResponse* response) override;
  grpc::Status ListGatewayCertificates(
      grpc::ServerContext*, const admin::v1::ListGatewayCertificatesRequest*,
      admin::v1::ListGatewayCertificatesResponse* response) override;
  grpc::Status ExplainGateway(grpc::ServerContext*, const admin::v1::ExplainGatewayRequest* request,
                              admin::v1::ExplainGatewayResponse* response) override;
  grpc::Status ListConnections(grpc::ServerContext*, const admin::v1::ListConnectionsRequest*,
                               admin::v1::ListConnectionsResponse* response) override;
  grpc::Status SetLogLevel(grpc::ServerContext*, const admin::v1::SetLogLevelRequest* request,
                           admin::v1::SetLogLevelResponse* response) override;
  grpc::Status Drain(grpc::ServerContext*, const admin::v1::DrainRequest* request,
                     admin::v1::DrainResponse* response) override;

 private:
  GatewayServer* const server_;
};

// The listeners of `config` (and which ports are bound, from `ports`) as the admin API says.
void FillListeners(const GatewayConfig& config, const std::vector<ServedPort>& ports,
                   admin::v1::ListGatewayListenersResponse* response);

}  // namespace nodeward::gateway
