// Internal to policy/: what the gateway's listener building and its decisions share.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy::gateway_internal {

// Istio's gateway.IsTLSServer: TLS settings on a server that does not route by HTTP.
bool IsTlsServer(const GatewayServer& server);
// Istio's gateway.IsHTTPServer: HTTP protocols, or HTTPS that terminates TLS.
bool IsHttpServer(const GatewayServer& server);

// A VirtualService host or destination as an FQDN: a name without dots is a Service of
// `ns` (Istio's ResolveShortnameToFQDN); "*" wildcards and FQDNs stay as written.
std::string Fqdn(const Snapshot& snapshot, absl::string_view host, absl::string_view ns);

// The SNI an Istio client sends to an AUTO_PASSTHROUGH server: outbound_.PORT_.SUBSET_.HOST
// (model.BuildDNSSrvSubsetKey; SUBSET is empty for none).
struct AutoPassthroughName {
  uint32_t port = 0;
  std::string subset;
  std::string host;
};
std::optional<AutoPassthroughName> ParseAutoPassthroughSni(absl::string_view sni);

}  // namespace nodeward::policy::gateway_internal
