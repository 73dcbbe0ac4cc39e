// Policy decisions: pure functions of a Snapshot and a question. Each answer carries a typed
// reason, a line for people and a trace naming the resources that decided it and why.
//
// Semantics are Istio's (PeerAuthentication, DestinationRule, auto mTLS, L4
// AuthorizationPolicy) as this data plane applies them:
//  - Inbound, the effective PeerAuthentication mode of the port decides first: STRICT accepts
//    only mesh mTLS (HBONE), PERMISSIVE accepts both, DISABLE accepts only plaintext. With
//    DISABLE Istio's server side stops terminating mTLS; since this data plane has no way to
//    hand an HBONE stream to the application without terminating it, an mTLS connection to a
//    DISABLE port is refused here, with that reason, rather than silently unwrapped. Then the
//    AuthorizationPolicies of the pod decide (authorization.h).
//  - Outbound, an explicit DestinationRule TLS mode always wins, even when it cannot work;
//    such a decision says so in its warnings (or refuses, for ISTIO_MUTUAL to a host outside
//    the mesh, or settings this data plane cannot apply) so the debug CLI shows the outcome
//    the data plane will have.
// Pointers in results point into the snapshot and live as long as it does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/net_address.h"
#include "common/spiffe_id.h"
#include "policy/authorization.h"
#include "policy/destination_rules.h"
#include "policy/inbound_connection.h"
#include "policy/peer_authentication.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/trace.h"

namespace nodeward::policy {

// What decided, for metric labels and the access log; `reason` stays the sentence for people.
enum class DecisionReason {
  kPeerAuthentication,  // the effective PeerAuthentication mode (STRICT, PERMISSIVE, DISABLE)
  kAuthorization,       // AuthorizationPolicies: one allowed or denied, or none allowed
  kDestinationRule,     // an explicit DestinationRule TLS mode
  kAutoMtls,            // no DestinationRule TLS: the destination's enrollment and mode
  kNotInMesh,           // inbound: the destination pod is not enrolled
  kNoServicePort,       // outbound: the service has no such TCP port
  kNoReadyEndpoint,     // outbound: the service has no ready endpoint on that port
};
// "peer_authentication", "authorization", "destination_rule", "auto_mtls", "not_in_mesh",
// "no_service_port", "no_ready_endpoint".
absl::string_view DecisionReasonName(DecisionReason reason);

struct Enrollment {
  bool enrolled = false;
  std::string reason;
};

// Namespace label nodeward.io/dataplane-mode=enabled (or istio.io/dataplane-mode=ambient)
// enrolls its pods; a pod labelled with either key set to "none" opts out. Host-network pods
// are never enrolled: they share the node's network namespace.
Enrollment ResolveEnrollment(const Snapshot& snapshot, const Pod& pod);

// spiffe://<trust domain>/ns/<namespace>/sa/<service account>: the identity a workload's
// certificate carries. An error when the pod's namespace or service account cannot be part of
// a SPIFFE ID (then the pod has no mesh identity).
absl::StatusOr<SpiffeId> WorkloadIdentity(const Snapshot& snapshot, const Pod& pod);
// The same as text, for traces and the names a server must present.
std::string WorkloadSpiffeId(const Snapshot& snapshot, const Pod& pod);

enum class OutboundAction { kHbone, kSameNode, kTlsOrigination, kPlaintext, kRefuse };
absl::string_view OutboundActionName(OutboundAction action);

// Whether a connection is allowed in, and by what (DecideInbound).
struct InboundDecision {
  bool allow = false;
  DecisionReason reason_code = DecisionReason::kNotInMesh;
  std::string reason;
  EffectiveMtls mtls;
  // Reached when PeerAuthentication admits the connection.
  std::optional<AuthorizationResult> authorization;
  // An AUDIT or dry-run AuthorizationPolicy matched: log the connection under its name.
  bool audit = false;
  Trace trace;
};

struct OutboundDecision {
  OutboundAction action = OutboundAction::kRefuse;
  DecisionReason reason_code = DecisionReason::kAutoMtls;
  std::string reason;  // one line, for logs and the CLI
  // Where to connect: the chosen endpoint (pod IP and target port) for a service address,
  // the original destination otherwise.
  IpAddress address;
  uint32_t port = 0;
  const Service* service = nullptr;      // when the destination was a service address
  const Pod* destination_pod = nullptr;  // when the destination is a known pod
  // kHbone: the server names accepted, any one of which the server's certificate must carry.
  // The destination pod's SPIFFE ID, or, for ISTIO_MUTUAL with subjectAltNames, those names
  // instead, as Istio's cluster builder verifies them (pilot/pkg/networking/core
  // cluster_builder.go buildAutoMtlsSettings: the rule's names replace the service accounts).
  // Names, not identities: a subjectAltName may be a DNS name, which no mesh server carries
  // (the trace warns), so they stay text here and the data plane keeps the SPIFFE IDs.
  std::vector<std::string> expected_peer_identities;
  // The first of expected_peer_identities, for data planes that check a single identity.
  std::string expected_peer_identity;
  std::optional<ClientTlsSettings> origination;   // kTlsOrigination: how to originate
  std::optional<EffectiveMtls> destination_mtls;  // when the destination is a known pod
  // DecideOutboundOnNode: the destination pod is served by this data plane, and this is what
  // its inbound policy said of the connection (kSameNode when it allowed it, kRefuse not).
  std::optional<InboundDecision> same_node_inbound;
  std::optional<InboundConnection> same_node_connection;  // as that policy saw it
  Trace trace;
};

// What a connection from `source` to `destination_ip`:`destination_port` becomes.
// `endpoint_hint` picks among a service's ready endpoints (hint modulo their count), so the
// caller chooses the balancing and the function stays pure.
OutboundDecision DecideOutbound(const Snapshot& snapshot, const Pod& source,
                                const IpAddress& destination_ip, uint32_t destination_port,
                                uint64_t endpoint_hint = 0);

// Whether `ip` is a pod this data plane serves itself (an enrolled pod of its node).
using LocalPodQuery = absl::FunctionRef<bool(const IpAddress& ip)>;

// DecideOutbound as a node's data plane takes it: an HBONE decision whose destination pod is
// served by this data plane (`is_local`) is carried on the node instead (kSameNode), because
// the agent authenticated both ends; the destination's inbound policy still decides, for the
// source's identity and address, as ztunnel's same-node path keeps the destination's
// authorization (src/proxy/outbound.rs). A refusal there makes the decision kRefuse.
OutboundDecision DecideOutboundOnNode(const Snapshot& snapshot, const Pod& source,
                                      const IpAddress& destination_ip, uint32_t destination_port,
                                      uint64_t endpoint_hint, LocalPodQuery is_local);

// Whether `destination` accepts `connection`.
InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination,
                              const InboundConnection& connection);

// The same without the connection's addresses and SNI, which AuthorizationPolicy conditions
// then treat as unknown (failing closed).
InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination, uint32_t port,
                              InboundTransport transport,
                              std::optional<SpiffeId> peer_identity = std::nullopt);

}  // namespace nodeward::policy
