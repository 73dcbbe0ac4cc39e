// Internal to policy/: turns one decoded Kubernetes object into a resource. Shared by the YAML
// loader and the Kubernetes API source (whose list items carry no kind of their own).
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::policy::internal {

// Appends `object` to `out` when its kind is known; ignores unknown kinds. `kind` and
// `api_version` override the object's own fields when the object lacks them (API list items).
// `source_name` is the file name, with errors at ":line" counted from `first_line` (the
// object's document's first line, from 0); with a negative `first_line` it is a label such
// as "api" used as is.
absl::Status AppendObject(const YAML::Node& object, absl::string_view kind,
                          absl::string_view api_version, absl::string_view source_name,
                          int first_line, ResourceSet& out);

// The kind and apiVersion an object declares ("" when absent or not text).
std::string ScalarField(const YAML::Node& map, const char* key);

// An AuthorizationPolicy standing in for an API object that does not parse, so that a broken
// policy fails closed instead of vanishing: an ALLOW one allows nothing, any other denies
// every connection to the workloads it selects (all of its namespace, or of the mesh in the
// root namespace, when even the selector is unreadable). `why` is the parse error.
AuthorizationPolicy RejectedAuthorizationPolicy(const YAML::Node& object, std::string why);

}  // namespace nodeward::policy::internal
