// The effective PeerAuthentication mode of a workload's port, composed as Istio composes it
// (pilot/pkg/security/authn ComposePeerAuthentication; for ambient,
// pilot/pkg/serviceregistry/kube/controller/ambient convertedSelectorPeerAuthentications):
// mesh-wide (root namespace, no selector), then namespace-wide, then the workload's selector
// policy and its portLevelMtls; the oldest policy of a level wins (then the name); UNSET
// inherits; nothing at all is PERMISSIVE. Selector policies of the root namespace never apply.
#pragma once

#include <cstdint>

#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/trace.h"

namespace nodeward::policy {

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

}  // namespace nodeward::policy
