// Internal to policy/: the parsers of Gateway, VirtualService and Secret, which resources.cc
// dispatches to by kind. Each applies Istio's validation and names the field that fails it.
#pragma once

#include "absl/status/status.h"
#include "policy/resources.h"
#include "policy/yaml_fields.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy::internal {

absl::Status ParseGateway(Context& ctx, const YAML::Node& object, ResourceSet& out);
absl::Status ParseVirtualService(Context& ctx, const YAML::Node& object, ResourceSet& out);
absl::Status ParseSecret(Context& ctx, const YAML::Node& object, ResourceSet& out);

}  // namespace nodeward::policy::internal
