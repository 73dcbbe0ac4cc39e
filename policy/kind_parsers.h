// Internal to policy/: the parsers of the Istio kinds, one file per concern (istio_resources.cc
// for PeerAuthentication and DestinationRule, authorization_resources.cc for
// AuthorizationPolicy); resources.cc dispatches to them by kind.
#pragma once

#include "absl/status/status.h"
#include "policy/resources.h"
#include "policy/yaml_fields.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy::internal {

absl::Status ParsePeerAuthentication(Context& ctx, const YAML::Node& object, ResourceSet& out);
absl::Status ParseDestinationRule(Context& ctx, const YAML::Node& object, ResourceSet& out);
absl::Status ParseAuthorizationPolicy(Context& ctx, const YAML::Node& object, ResourceSet& out);

}  // namespace nodeward::policy::internal
