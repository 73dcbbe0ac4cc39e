// What every policy decision answers with besides its verdict: the steps that led to it, the
// misconfigurations the connection will run into, and the resources that decided, in words an
// operator can act on. `nodewardctl policy explain` and the access log show it as is.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/resources.h"

namespace nodeward::policy {

struct Trace {
  std::vector<std::string> steps;     // what was looked at and concluded, in order
  std::vector<std::string> warnings;  // misconfigurations this connection will run into
  std::vector<std::string> deciding;  // "Kind namespace/name" of each resource that decided
  std::string ToString() const;
};

// Appends `from` to `into`, each step prefixed with `prefix`.
void AppendTrace(Trace& into, const Trace& from, absl::string_view prefix);

// How traces name things: "PeerAuthentication ns/name", "pod ns/name".
std::string Describe(const PeerAuthentication& policy);
std::string Describe(const DestinationRule& rule);
std::string Describe(const AuthorizationPolicy& policy);
std::string Describe(const Pod& pod);

}  // namespace nodeward::policy
