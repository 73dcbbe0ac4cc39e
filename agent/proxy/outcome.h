// What happened to a connection, as types: the access log, the metrics and the debug CLI label
// from these, never from the prose reason (which stays, for people).
#pragma once

#include "absl/strings/string_view.h"

namespace nodeward::proxy {

enum class Direction { kOutbound, kInbound };

// How the connection was carried.
enum class Mode {
  kUndecided,       // no decision yet (still being set up)
  kHboneMtls,       // HBONE mTLS tunnel between nodes
  kSameNode,        // both pods on this agent: the bytes never leave the node
  kTlsOrigination,  // DestinationRule SIMPLE/MUTUAL toward a server outside the mesh
  kPlaintext,
  kRefused,
};

enum class Result { kOk, kRefused, kError };

// Why a connection was refused; kNone for the others. Stable: these are metric labels.
enum class RefusalReason {
  kNone,
  kStrictRequiresMtls,  // PeerAuthentication STRICT and a plaintext client
  kMtlsDisabled,        // PeerAuthentication DISABLE and an mTLS client
  kAuthorization,       // an AuthorizationPolicy denies it
  kDestinationRule,     // an explicit DestinationRule that cannot work (ISTIO_MUTUAL to a
                        // host outside the mesh, credentialName)
  kNoServicePort,       // the service has no such TCP port
  kNoReadyEndpoint,     // the service has no ready endpoint on the port
  kInvalidDestination,  // the destination is not an address policy can decide about
  kNotInMesh,           // the destination pod is not enrolled
  kTlsOrigination,      // the DestinationRule's TLS settings do not load
  kRefusedByPeer,       // the destination's agent refused the CONNECT (its policy)
  kNoConfiguration,     // no policy loaded yet
  kIdentity,            // no valid identity or certificate for a side
  kConnectionLimit,     // the agent's connection limit
  kDraining,            // the agent is shutting down
  kAgentPort,           // the agent's own ports are never delivered to
  kNotAPodAddress,      // a CONNECT to an address the pod does not have
  kBadRequest,          // a malformed CONNECT or an unreadable original destination
  // The ingress gateway's own (the typed detail is its metrics' reason label):
  kGatewayRoute,     // no server, route or destination for the connection (GatewayRefusal)
  kClientHello,      // the client's first bytes are no usable ClientHello (ClientHelloError)
  kClientHandshake,  // the client's TLS handshake failed (crypto::GatewayHandshakeFailure)
};

absl::string_view DirectionName(Direction direction);
absl::string_view ModeName(Mode mode);
absl::string_view ResultName(Result result);
absl::string_view RefusalReasonName(RefusalReason reason);

// What HBONE answers for a refused CONNECT.
int HttpStatusOf(RefusalReason reason);

}  // namespace nodeward::proxy
