// Test support: a CA of the test's own and mesh TLS contexts for a client and a server
// identity, as the pods at both ends of a tunnel hold them.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/spiffe_id.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"

namespace nodeward::proxy::testing {

struct MeshContexts {
  std::shared_ptr<const crypto::TlsContext> client;
  std::shared_ptr<const crypto::TlsContext> server;
};

inline absl::StatusOr<MeshContexts> MakeMeshContexts(const std::string& ca_dir,
                                                     const SpiffeId& client_id,
                                                     const SpiffeId& server_id) {
  auto ca = crypto::CertificateAuthority::LoadOrCreate(ca_dir, crypto::CaOptions{});
  if (!ca.ok()) return ca.status();
  auto bundle = crypto::TrustBundle::FromPem((*ca)->RootsPem());
  if (!bundle.ok()) return bundle.status();
  auto client = crypto::testing::IssueWorkload(**ca, client_id);
  if (!client.ok()) return client.status();
  auto server = crypto::testing::IssueWorkload(**ca, server_id);
  if (!server.ok()) return server.status();
  auto client_context = crypto::TlsContext::MeshClient(client->credentials(), *bundle);
  if (!client_context.ok()) return client_context.status();
  auto server_context = crypto::TlsContext::MeshServer(server->credentials(), *bundle);
  if (!server_context.ok()) return server_context.status();
  return MeshContexts{*std::move(client_context), *std::move(server_context)};
}

}  // namespace nodeward::proxy::testing
