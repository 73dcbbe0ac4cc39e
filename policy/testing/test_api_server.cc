#include "policy/testing/test_api_server.h"

#include <fstream>

#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"

namespace nodeward::policy::testing {

absl::StatusOr<TestApiServer> StartTestApiServer(const std::string& dir, const std::string& token,
                                                 FakeApiServer::Options server_options) {
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
      crypto::CertificateAuthority::LoadOrCreate(dir + "/ca");
  if (!ca.ok()) return ca.status();
  absl::StatusOr<crypto::testing::Workload> identity = crypto::testing::IssueWorkload(
      **ca, crypto::testing::Id("cluster.local", "default", "kube-apiserver"));
  if (!identity.ok()) return identity.status();
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
      crypto::TlsContext::PlainServer(identity->credentials());
  if (!context.ok()) return context.status();
  TestApiServer result;
  result.server = std::make_unique<FakeApiServer>(*context, token, server_options);
  if (result.server->port() == 0)
    return absl::UnavailableError("the fake API server cannot listen");
  std::ofstream(dir + "/ca.crt") << (*ca)->RootsPem();
  std::ofstream(dir + "/token") << token << "\n";
  KubeSourceOptions& options = result.options;
  options.host = "127.0.0.1";
  options.port = result.server->port();
  options.token_path = dir + "/token";
  options.ca_path = dir + "/ca.crt";
  options.server_names = {"spiffe://cluster.local/ns/default/sa/kube-apiserver"};
  options.debounce = absl::Milliseconds(20);
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(500);
  options.io_timeout = absl::Seconds(5);
  options.watch_timeout_seconds = 30;
  return result;
}

}  // namespace nodeward::policy::testing
