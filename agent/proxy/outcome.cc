#include "agent/proxy/outcome.h"

namespace nodeward::proxy {

absl::string_view DirectionName(Direction direction) {
  return direction == Direction::kOutbound ? "outbound" : "inbound";
}

absl::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kUndecided:
      return "undecided";
    case Mode::kHboneMtls:
      return "hbone_mtls";
    case Mode::kSameNode:
      return "same_node";
    case Mode::kTlsOrigination:
      return "tls_origination";
    case Mode::kPlaintext:
      return "plaintext";
    case Mode::kRefused:
      return "refused";
  }
  return "undecided";
}

absl::string_view ResultName(Result result) {
  switch (result) {
    case Result::kOk:
      return "ok";
    case Result::kRefused:
      return "refused";
    case Result::kError:
      return "error";
  }
  return "error";
}

absl::string_view RefusalReasonName(RefusalReason reason) {
  switch (reason) {
    case RefusalReason::kNone:
      return "none";
    case RefusalReason::kStrictRequiresMtls:
      return "strict_requires_mtls";
    case RefusalReason::kMtlsDisabled:
      return "mtls_disabled";
    case RefusalReason::kAuthorization:
      return "authorization";
    case RefusalReason::kDestinationRule:
      return "destination_rule";
    case RefusalReason::kNoServicePort:
      return "no_service_port";
    case RefusalReason::kNoReadyEndpoint:
      return "no_ready_endpoint";
    case RefusalReason::kInvalidDestination:
      return "invalid_destination";
    case RefusalReason::kNotInMesh:
      return "not_in_mesh";
    case RefusalReason::kTlsOrigination:
      return "tls_origination";
    case RefusalReason::kRefusedByPeer:
      return "refused_by_peer";
    case RefusalReason::kNoConfiguration:
      return "no_configuration";
    case RefusalReason::kIdentity:
      return "identity";
    case RefusalReason::kConnectionLimit:
      return "connection_limit";
    case RefusalReason::kDraining:
      return "draining";
    case RefusalReason::kAgentPort:
      return "agent_port";
    case RefusalReason::kNotAPodAddress:
      return "not_a_pod_address";
    case RefusalReason::kBadRequest:
      return "bad_request";
    case RefusalReason::kGatewayRoute:
      return "gateway_route";
    case RefusalReason::kClientHello:
      return "client_hello";
    case RefusalReason::kClientHandshake:
      return "client_handshake";
  }
  return "none";
}

int HttpStatusOf(RefusalReason reason) {
  switch (reason) {
    case RefusalReason::kAgentPort:
    case RefusalReason::kNotAPodAddress:
    case RefusalReason::kBadRequest:
      return 400;
    case RefusalReason::kNoConfiguration:
    case RefusalReason::kDraining:
    case RefusalReason::kConnectionLimit:
    case RefusalReason::kIdentity:
      return 503;
    default:
      return 403;
  }
}

}  // namespace nodeward::proxy
