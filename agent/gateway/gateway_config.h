// One configuration of a gateway workload: a snapshot and the listeners resolved from it for
// this workload, built once per snapshot and shared (immutable) by every loop until the next.
//
// How a data plane serves a connection accepted on `port` with it:
//   listener = config->listeners.ForPort(port)                  (null: not served, close)
//   plain text: decision = policy::DecideGateway(*config->snapshot, *listener, {}, hint)
//   TLS: feed a ClientHelloReader until kParsed (kFailed: close, counted by reader.error()),
//        decision = policy::DecideGateway(*config->snapshot, *listener,
//                                         ConnectionOf(reader.hello()), hint)
//   kRefuse: close, counted by decision.refusal
//   upstream = policy::DecideOutbound(*config->snapshot, config->workload,
//                                     decision.destination->address,
//                                     decision.destination->port, hint)
//   kPassthrough, kTcp: send reader.buffered() upstream, then relay both ways
//   kTerminate: engine = crypto::TlsEngine::Server(contexts.ForPort(port)), feed it
//        reader.buffered(); once established relay its plaintext to the upstream; a failed
//        handshake is counted by crypto::InspectGatewayHandshake(*engine).failure
#pragma once

#include <cstdint>
#include <memory>

#include "agent/gateway/client_hello.h"
#include "policy/gateway_decisions.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::gateway {

struct GatewayConfig {
  std::shared_ptr<const policy::Snapshot> snapshot;
  // The gateway workload: its namespace and labels select Gateways; it is the source of the
  // upstream connections (its service account is the identity the mesh sees).
  policy::Pod workload;
  policy::GatewayListeners listeners;  // points into `snapshot`

  static std::shared_ptr<const GatewayConfig> Resolve(
      std::shared_ptr<const policy::Snapshot> snapshot, policy::Pod workload,
      const policy::GatewayOptions& options = {});
};

// What the gateway's decisions read of a parsed ClientHello.
policy::GatewayConnection ConnectionOf(const ClientHello& hello);

}  // namespace nodeward::gateway
