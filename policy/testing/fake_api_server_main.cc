// nodeward-fake-apiserver: the fake Kubernetes API server as a process, for end-to-end tests
// that run the agent and nodeward-sds as they run in a cluster (in-cluster service account,
// HTTPS to KUBERNETES_SERVICE_HOST). Namespaces, Pods, Services, EndpointSlices, DaemonSets and
// Events are stored resources: a test creates, replaces and deletes them with POST, PUT and
// DELETE, and compacts the history or drops the watches with POST /fake/compact and
// /fake/drop-watches. Test-only: not part of the image.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/dashed_flags.h"
#include "common/files.h"
#include "crypto/tls.h"
#include "policy/testing/fake_api_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:6443", "IPv4 address:port to serve on");
ABSL_FLAG(std::string, cert, "", "PEM certificate chain of the server (required)");
ABSL_FLAG(std::string, key, "", "PEM private key of the server (required)");
ABSL_FLAG(std::string, token_file, "", "the bearer token every request must carry (required)");
ABSL_FLAG(absl::Duration, bookmark_interval, absl::Seconds(1),
          "how often watches that allow bookmarks get one");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "nodeward-fake-apiserver --listen=IP:PORT --cert=PEM --key=PEM --token-file=FILE");
  std::vector<std::string> arguments;
  std::vector<char*> normalized = nodeward::DashedFlagsToUnderscores(argc, argv, arguments);
  absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  auto fail = [](const std::string& message) {
    std::cerr << "nodeward-fake-apiserver: " << message << "\n";
    return 2;
  };
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const std::size_t colon = listen.rfind(':');
  nodeward::policy::testing::FakeApiServer::Options options;
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return fail(absl::StrCat("--listen=", listen, " is not IPv4:port"));
  }
  options.address = listen.substr(0, colon);
  options.port = static_cast<uint16_t>(port);
  options.bookmark_interval = absl::GetFlag(FLAGS_bookmark_interval);
  absl::StatusOr<std::string> cert = nodeward::ReadFile(absl::GetFlag(FLAGS_cert));
  absl::StatusOr<std::string> key = nodeward::ReadFile(absl::GetFlag(FLAGS_key));
  absl::StatusOr<std::string> token = nodeward::ReadFile(absl::GetFlag(FLAGS_token_file));
  for (const auto* status : {&cert.status(), &key.status(), &token.status()}) {
    if (!status->ok()) return fail(std::string(status->message()));
  }
  while (!token->empty() && (token->back() == '\n' || token->back() == ' ')) token->pop_back();
  absl::StatusOr<std::shared_ptr<const nodeward::crypto::TlsContext>> context =
      nodeward::crypto::TlsContext::PlainServer({*cert, *key});
  if (!context.ok()) return fail(absl::StrCat("server credentials: ", context.status().message()));

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  nodeward::policy::testing::FakeApiServer server(*context, *token, options);
  if (server.port() == 0) return fail(absl::StrCat("cannot listen on ", listen));
  server.ServeResource("/api/v1/namespaces", "Namespace", /*namespaced=*/false);
  server.ServeResource("/api/v1/pods", "Pod", true);
  server.ServeResource("/api/v1/services", "Service", true);
  server.ServeResource("/api/v1/events", "Event", true);
  server.ServeResource("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", true);
  server.ServeResource("/apis/apps/v1/daemonsets", "DaemonSet", true);
  std::cout << "nodeward-fake-apiserver: serving https://" << listen << std::endl;
  int received = 0;
  sigwait(&signals, &received);
  return 0;
}
