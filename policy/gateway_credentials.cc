#include "policy/gateway_credentials.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {
namespace {

const std::string* NonEmpty(const Secret& secret, const char* key) {
  auto it = secret.data.find(key);
  return it == secret.data.end() || it->second.empty() ? nullptr : &it->second;
}

std::string KeysFound(const Secret& secret) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : secret.data) keys.push_back(key);
  return keys.empty() ? std::string("no credential keys") : absl::StrJoin(keys, ", ");
}

void Record(const Secret& secret, absl::string_view keys, ResolvedCredential& out) {
  out.sources.push_back(absl::StrCat(DescribeObject("Secret", secret.meta), " (", keys, ")"));
  out.versions.push_back(secret.meta.resource_version);
}

}  // namespace

absl::StatusOr<ResolvedCredential> ResolveCredentialName(const Snapshot& snapshot,
                                                         absl::string_view gateway_namespace,
                                                         const ServerTlsSettings& tls) {
  const std::string& name = tls.credential_name;
  if (name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("credentialName \"", name,
                     "\" names another namespace: a Gateway's credential is a "
                     "Secret in the namespace of the gateway workload (",
                     gateway_namespace, ")"));
  }
  const Secret* secret = snapshot.FindSecret(gateway_namespace, name);
  if (secret == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("credentialName: Secret ", gateway_namespace, "/", name, " not found"));
  }
  ResolvedCredential out;
  const std::string* cert = NonEmpty(*secret, "cert");
  const std::string* key = NonEmpty(*secret, "key");
  const char* keys = "cert, key";
  if (cert == nullptr || key == nullptr) {
    cert = NonEmpty(*secret, "tls.crt");
    key = NonEmpty(*secret, "tls.key");
    keys = "tls.crt, tls.key";
  }
  if (cert == nullptr || key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        DescribeObject("Secret", secret->meta),
        " has no certificate and key: expected non-empty (cert and key) or (tls.crt and "
        "tls.key); found: ",
        KeysFound(*secret)));
  }
  out.cert_chain_pem = *cert;
  out.private_key_pem = *key;
  Record(*secret, keys, out);
  if (tls.mode != ServerTlsMode::kMutual && tls.mode != ServerTlsMode::kOptionalMutual) return out;

  const Secret* ca_secret = snapshot.FindSecret(gateway_namespace, absl::StrCat(name, "-cacert"));
  if (ca_secret == nullptr) ca_secret = secret;
  const char* ca_key = "cacert";
  const std::string* ca = NonEmpty(*ca_secret, "cacert");
  if (ca == nullptr) {
    ca = NonEmpty(*ca_secret, "ca.crt");
    ca_key = "ca.crt";
  }
  if (ca == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        ServerTlsModeName(tls.mode),
        " needs the client CA: ", DescribeObject("Secret", ca_secret->meta),
        " has no non-empty cacert or ca.crt (found: ", KeysFound(*ca_secret), ")",
        ca_secret == secret
            ? absl::StrCat(", and there is no Secret ", gateway_namespace, "/", name, "-cacert")
            : std::string()));
  }
  out.ca_certificates_pem = *ca;
  const std::string* crl = NonEmpty(*ca_secret, "crl");
  const char* crl_key = "crl";
  if (crl == nullptr) {
    crl = NonEmpty(*ca_secret, "ca.crl");
    crl_key = "ca.crl";
  }
  if (crl != nullptr) out.ca_crl_pem = *crl;
  Record(*ca_secret, crl != nullptr ? absl::StrCat(ca_key, ", ", crl_key) : ca_key, out);
  return out;
}

}  // namespace nodeward::policy
