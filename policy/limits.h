// How much configuration one source may load, so that a file or an API server answer that is
// too large is refused with a clear error (the last good configuration stays in force) instead
// of growing the agent without bound. The object counts follow Kubernetes' published
// scalability thresholds (150,000 pods, 10,000 namespaces, 10,000 services per cluster) with
// headroom; the README lists them.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "policy/resources.h"

namespace nodeward::policy {

struct ConfigLimits {
  // One configuration file, and all of a directory's files together.
  size_t max_file_bytes = 16u << 20;
  size_t max_directory_bytes = 64u << 20;
  // One object from the API server: a list item or a watch event. etcd refuses objects over
  // 1.5 MiB; JSON escaping may add to that.
  size_t max_api_object_bytes = 4u << 20;
  // Objects of each kind in one snapshot.
  size_t max_namespaces = 10'000;
  size_t max_pods = 150'000;
  size_t max_services = 20'000;
  size_t max_endpoint_slices = 100'000;
  size_t max_policies = 10'000;  // of each Istio kind
  size_t max_secrets = 10'000;   // a gateway reads those of its own namespace only
};

// The limit for objects of `kind` ("Pod", "AuthorizationPolicy", ...); 0 for unknown kinds.
size_t MaxObjectsOfKind(const ConfigLimits& limits, absl::string_view kind);

// ResourceExhausted naming the first kind over its limit; OK when every kind is within.
absl::Status CheckLimits(const ResourceSet& resources, const ConfigLimits& limits);

}  // namespace nodeward::policy
