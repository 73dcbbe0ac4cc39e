#include "agent/gateway/gateway_config.h"

#include <utility>

namespace nodeward::gateway {

std::shared_ptr<const GatewayConfig> GatewayConfig::Resolve(
    std::shared_ptr<const policy::Snapshot> snapshot, policy::Pod workload,
    const policy::GatewayOptions& options) {
  auto config = std::make_shared<GatewayConfig>();
  config->snapshot = std::move(snapshot);
  config->workload = std::move(workload);
  config->listeners = policy::ResolveGatewayListeners(*config->snapshot, config->workload, options);
  return config;
}

policy::GatewayConnection ConnectionOf(const ClientHello& hello) {
  policy::GatewayConnection connection;
  if (hello.has_sni) connection.sni = hello.sni;
  connection.alpn = hello.alpn;
  return connection;
}

}  // namespace nodeward::gateway
