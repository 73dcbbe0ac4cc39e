// L4 AuthorizationPolicy on inbound connections, as ztunnel enforces it (src/state.rs
// assert_rbac, src/rbac.rs) on policies as istiod converts them for ztunnel
// (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go):
//  - Order: CUSTOM, then DENY, then ALLOW. A matching DENY refuses. With no ALLOW policy in
//    scope the connection is allowed; with any, one of them must match. AUDIT policies decide
//    nothing: a match marks the connection to be logged. So do dry-run policies.
//  - CUSTOM delegates to an external authorizer, which nodeward does not have (ztunnel leaves
//    CUSTOM to waypoints, of which there are none here): a connection a CUSTOM policy's rules
//    match is refused, loudly, rather than let through unchecked.
//  - A policy matches when any rule does; a rule when each of its from, to and when clauses
//    does; a clause when any entry does; an entry when each field does; a field when a value
//    matches and no negated value does. `rules: [{}]` matches everything, no rules nothing.
//  - Principals, namespaces and service accounts come from the peer's verified SPIFFE ID, so
//    only mTLS connections have them: plaintext matches no principals and every notPrincipals.
//    Values take Istio's forms: "*" (any), "prefix*", "*suffix", exact.
//  - HTTP-only attributes (methods, paths, hosts, requestPrincipals, remoteIpBlocks, request.*
//    conditions): an ALLOW rule using any never matches; a DENY rule is applied without them,
//    which is more restrictive, as istiod's status for such policies says ztunnel does.
//    ztunnel's matcher skips an entry left with no L4 field at all (src/rbac.rs is_empty), so
//    there a DENY with only `methods` would deny nothing; nodeward applies it to everything,
//    as the documented intent is. CUSTOM and AUDIT rules are read as DENY rules are.
//  - Attributes the data plane could not supply (see inbound_connection.h) fail closed the
//    same way: they match nothing in ALLOW rules and everything in the others.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/inbound_connection.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/trace.h"

namespace nodeward::policy {

enum class AuthorizationOutcome {
  kNoPolicy,     // allowed: no ALLOW policy applies, and nothing refused
  kAllowed,      // allowed by a matching ALLOW policy
  kDenied,       // refused by a matching DENY policy
  kNotAllowed,   // refused: ALLOW policies apply and none matches
  kUnsupported,  // refused: a matching CUSTOM policy needs an external authorizer
};
// "NO_POLICY", "ALLOWED", "DENIED", "NOT_ALLOWED", "CUSTOM_UNSUPPORTED".
absl::string_view AuthorizationOutcomeName(AuthorizationOutcome outcome);

struct AuthorizationResult {
  bool allow = true;
  AuthorizationOutcome outcome = AuthorizationOutcome::kNoPolicy;
  // The policy that decided: the matching ALLOW, DENY or CUSTOM one; null otherwise.
  const AuthorizationPolicy* policy = nullptr;
  // Matching AUDIT policies and dry-run policies that would have refused or allowed: the
  // connection is to be logged under their names.
  std::vector<const AuthorizationPolicy*> audit;
  std::string reason;  // one line, for logs and the CLI; empty when no policy applies
  Trace trace;
};

// Whether `destination` admits `connection` under the AuthorizationPolicies that apply to it.
AuthorizationResult Authorize(const Snapshot& snapshot, const Pod& destination,
                              const InboundConnection& connection);

}  // namespace nodeward::policy
