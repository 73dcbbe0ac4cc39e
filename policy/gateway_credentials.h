// Where a Gateway server's credentialName is read from, by Istio's rules
// (pilot/pkg/credentials/kube/secrets.go): the Secret of that name in the namespace of the
// gateway workload (never the Gateway's), with the certificate chain and key under the generic
// "cert"/"key" or the kubernetes.io/tls "tls.crt"/"tls.key"; for MUTUAL and OPTIONAL_MUTUAL the
// client CA from the Secret "<name>-cacert" when it exists, else the same Secret, under
// "cacert" or "ca.crt", and its CRL under "crl" or "ca.crl" when there is one. Pure: the Secrets
// come from the snapshot.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {

struct ResolvedCredential {
  std::string cert_chain_pem;
  std::string private_key_pem;
  std::string ca_certificates_pem;  // MUTUAL and OPTIONAL_MUTUAL only
  std::string ca_crl_pem;           // from the CA's Secret ("crl", else "ca.crl"), when present
  // "Secret ns/name" of each Secret read, with the keys used, for traces and the CLI.
  std::vector<std::string> sources;
  // The resourceVersions of those Secrets, so a rebuild happens only when they change.
  std::vector<std::string> versions;
};

// NotFound when a Secret is missing; InvalidArgument naming the keys found when it lacks the
// ones needed.
absl::StatusOr<ResolvedCredential> ResolveCredentialName(const Snapshot& snapshot,
                                                         absl::string_view gateway_namespace,
                                                         const ServerTlsSettings& tls);

}  // namespace nodeward::policy
