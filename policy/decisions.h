// Policy decisions: pure functions of a Snapshot and a question. Each answer carries a trace
// naming the resources that decided it and why, in words an operator can act on.
//
// Semantics are Istio's (PeerAuthentication, DestinationRule, auto mTLS) as this data plane
// applies them:
//  - Inbound, the effective PeerAuthentication mode of the port decides: STRICT accepts only
//    mesh mTLS (HBONE), PERMISSIVE accepts both, DISABLE accepts only plaintext. With DISABLE
//    Istio's server side stops terminating mTLS; since this data plane has no way to hand an
//    HBONE stream to the application without terminating it, an mTLS connection to a DISABLE
//    port is refused here, with that reason, rather than silently unwrapped.
//  - Outbound, an explicit DestinationRule TLS mode always wins, even when it cannot work;
//    such a decision says so in its warnings (or refuses, for ISTIO_MUTUAL to a host outside
//    the mesh) so the debug CLI can show why the connection fails.
// Pointers in results point into the snapshot and live as long as it does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {

struct Trace {
  std::vector<std::string> steps;     // what was looked at and concluded, in order
  std::vector<std::string> warnings;  // misconfigurations this connection will run into
  std::vector<std::string> deciding;  // "Kind namespace/name" of each resource that decided
  std::string ToString() const;
};

// Mode configured at each level for one workload and port; kUnset where no resource applies
// or the one that applies leaves the mode unset (inherits).
struct ModeByLevel {
  MtlsMode mesh = MtlsMode::kUnset;
  MtlsMode namespace_level = MtlsMode::kUnset;
  MtlsMode workload = MtlsMode::kUnset;
  MtlsMode port = MtlsMode::kUnset;
};

struct EffectiveMtls {
  MtlsMode mode = MtlsMode::kPermissive;  // never kUnset
  ModeByLevel levels;
  Trace trace;
};

// The PeerAuthentication mode `workload` gets on its (target) port `port`.
EffectiveMtls ResolveMtlsMode(const Snapshot& snapshot, const Pod& workload, uint32_t port);

struct Enrollment {
  bool enrolled = false;
  std::string reason;
};

// Namespace label nodeward.io/dataplane-mode=enabled (or istio.io/dataplane-mode=ambient)
// enrolls its pods; a pod labelled with either key set to "none" opts out. Host-network pods
// are never enrolled: they share the node's network namespace.
Enrollment ResolveEnrollment(const Snapshot& snapshot, const Pod& pod);

// spiffe://<trust domain>/ns/<namespace>/sa/<service account>
std::string WorkloadSpiffeId(const Snapshot& snapshot, const Pod& pod);

struct AppliedDestinationRule {
  const DestinationRule* rule = nullptr;  // null when none applies
  // TLS settings for the port; nullopt when the rule has none (auto mTLS applies).
  std::optional<ClientTlsSettings> tls;
  bool port_level = false;  // the settings came from portLevelSettings
  Trace trace;
};

// The DestinationRule a client in `client_ns` uses for `host` (an FQDN) on `port` (the
// service port): looked up in the client's namespace, then `service_ns`, then the root
// namespace, keeping only rules exported to the client's namespace.
AppliedDestinationRule ResolveDestinationRule(const Snapshot& snapshot, absl::string_view client_ns,
                                              absl::string_view host, absl::string_view service_ns,
                                              uint32_t port);

enum class OutboundAction { kHbone, kTlsOrigination, kPlaintext, kRefuse };
absl::string_view OutboundActionName(OutboundAction action);

struct OutboundDecision {
  OutboundAction action = OutboundAction::kRefuse;
  std::string reason;  // one line, for logs and the CLI
  // Where to connect: the chosen endpoint (pod IP and target port) for a service address,
  // the original destination otherwise.
  std::string address;
  uint32_t port = 0;
  const Service* service = nullptr;               // when the destination was a service address
  const Pod* destination_pod = nullptr;           // when the destination is a known pod
  std::string expected_peer_identity;             // kHbone: the SPIFFE ID the server must present
  std::optional<ClientTlsSettings> origination;   // kTlsOrigination: how to originate
  std::optional<EffectiveMtls> destination_mtls;  // when the destination is a known pod
  Trace trace;
};

// What a connection from `source` to `destination_ip`:`destination_port` becomes.
// `endpoint_hint` picks among a service's ready endpoints (hint modulo their count), so the
// caller chooses the balancing and the function stays pure.
OutboundDecision DecideOutbound(const Snapshot& snapshot, const Pod& source,
                                absl::string_view destination_ip, uint32_t destination_port,
                                uint64_t endpoint_hint = 0);

enum class InboundTransport { kMtls, kPlaintext };

struct InboundDecision {
  bool allow = false;
  std::string reason;
  EffectiveMtls mtls;
  Trace trace;
};

// Whether `destination` accepts a connection on its port `port` arriving over `transport`
// (`peer_identity` is the verified client SPIFFE ID for kMtls, shown in the trace).
InboundDecision DecideInbound(const Snapshot& snapshot, const Pod& destination, uint32_t port,
                              InboundTransport transport, absl::string_view peer_identity = {});

}  // namespace nodeward::policy
