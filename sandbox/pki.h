// Certificates for TLS servers outside the mesh in a sandbox (DestinationRule SIMPLE/MUTUAL
// origination): a CA and a server certificate for some DNS names, signed by it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace nodeward::sandbox {

// Writes into `out` (created if missing): ca/ (the CA's own files), ca.pem (the root to put in
// a DestinationRule's caCertificates), server-cert.pem and server-key.pem (mode 0600) for
// `dns_names`, and for a DestinationRule's caCrl crl.pem (revokes nothing) and
// crl-server-revoked.pem (revokes that server certificate). A CA already in `out/ca` is reused.
absl::Status MakeServerPki(const std::string& out, const std::vector<std::string>& dns_names);

}  // namespace nodeward::sandbox
