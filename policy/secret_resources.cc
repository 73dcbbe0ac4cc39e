// The Secret kind, for a Gateway's credentialName: only the keys Istio's credential controller
// reads (pilot/pkg/credentials/kube/secrets.go) are kept, decoded.
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "policy/gateway_kind_parsers.h"

namespace nodeward::policy::internal {
namespace {

bool IsCredentialKey(absl::string_view key) {
  for (absl::string_view known :
       {"tls.crt", "tls.key", "ca.crt", "ca.crl", "cert", "key", "cacert", "crl"}) {
    if (key == known) return true;
  }
  return false;
}

}  // namespace

absl::Status ParseSecret(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  Secret secret;
  NW_ASSIGN_OR_RETURN(secret.meta, Metadata(ctx, object, "Secret", /*namespaced=*/true));
  NW_ASSIGN_OR_RETURN(secret.type, String(ctx, object, "type", "type"));
  if (secret.type.empty()) secret.type = "Opaque";  // the API server's default
  // data is base64; stringData (hand-written files) is plain text and wins, as the API server
  // merges it.
  for (const char* section : {"data", "stringData"}) {
    NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> map, Map(ctx, object, section, section));
    if (!map.has_value()) continue;
    const bool encoded = std::string_view(section) == "data";
    for (const auto& entry : *map) {
      if (!entry.first.IsScalar() || !(entry.second.IsScalar() || entry.second.IsNull())) {
        return ctx.Error(entry.first, section, "expected a map of strings");
      }
      const std::string& key = entry.first.Scalar();
      if (!IsCredentialKey(key)) continue;
      const std::string value = entry.second.IsNull() ? "" : entry.second.Scalar();
      const std::string field = absl::StrCat(section, "[", key, "]");
      if (!encoded) {
        secret.data[key] = value;
        continue;
      }
      std::string decoded;
      if (!absl::Base64Unescape(value, &decoded)) {
        return ctx.Error(entry.second, field, "is not base64");
      }
      secret.data[key] = std::move(decoded);
    }
  }
  out.secrets.push_back(std::move(secret));
  return absl::OkStatus();
}

}  // namespace nodeward::policy::internal
