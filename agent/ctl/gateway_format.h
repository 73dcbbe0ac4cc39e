// nodewardctl's tables for the ingress gateway (nodeward-gateway's admin API): its listeners
// and routes, the certificate each server serves, and the decision for a port and SNI.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "agent/admin/admin.pb.h"

namespace nodeward::ctl {

std::string RenderGatewayListeners(const admin::v1::ListGatewayListenersResponse& response);
std::string RenderGatewayCertificates(const admin::v1::ListGatewayCertificatesResponse& response,
                                      absl::Time now);
std::string RenderGatewayExplain(const admin::v1::ExplainGatewayRequest& request,
                                 const admin::v1::ExplainGatewayResponse& response);

}  // namespace nodeward::ctl
