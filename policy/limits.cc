#include "policy/limits.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nodeward::policy {

size_t MaxObjectsOfKind(const ConfigLimits& limits, absl::string_view kind) {
  if (kind == "Namespace") return limits.max_namespaces;
  if (kind == "Pod") return limits.max_pods;
  if (kind == "Service") return limits.max_services;
  if (kind == "EndpointSlice") return limits.max_endpoint_slices;
  if (kind == "PeerAuthentication" || kind == "DestinationRule" || kind == "AuthorizationPolicy" ||
      kind == "Gateway" || kind == "VirtualService") {
    return limits.max_policies;
  }
  if (kind == "Secret") return limits.max_secrets;
  return 0;
}

absl::Status CheckLimits(const ResourceSet& resources, const ConfigLimits& limits) {
  struct Count {
    absl::string_view kind;
    size_t count;
  };
  for (const Count& c : {
           Count{"Namespace", resources.namespaces.size()},
           Count{"Pod", resources.pods.size()},
           Count{"Service", resources.services.size()},
           Count{"EndpointSlice", resources.endpoint_slices.size()},
           Count{"PeerAuthentication", resources.peer_authentications.size()},
           Count{"DestinationRule", resources.destination_rules.size()},
           Count{"AuthorizationPolicy", resources.authorization_policies.size()},
           Count{"Gateway", resources.gateways.size()},
           Count{"VirtualService", resources.virtual_services.size()},
           Count{"Secret", resources.secrets.size()},
       }) {
    const size_t limit = MaxObjectsOfKind(limits, c.kind);
    if (c.count > limit) {
      // "Policy" -> "Policies", "Pod" -> "Pods".
      std::string plural = absl::EndsWith(c.kind, "y")
                               ? absl::StrCat(c.kind.substr(0, c.kind.size() - 1), "ies")
                               : absl::StrCat(c.kind, "s");
      return absl::ResourceExhaustedError(
          absl::StrCat("too many ", plural, ": ", c.count, " (at most ", limit, " are loaded)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace nodeward::policy
