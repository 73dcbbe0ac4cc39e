// A FakeApiServer with a CA of its own, and the KubeSourceOptions that reach it (quick to retry
// and reconnect): where tests of anything that lists and watches the API start.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "policy/kube_source.h"
#include "policy/testing/fake_api_server.h"

namespace nodeward::policy::testing {

struct TestApiServer {
  std::unique_ptr<FakeApiServer> server;
  KubeSourceOptions options;
};

// Writes `dir`/ca (the CA), `dir`/ca.crt and `dir`/token; `dir` outlives the server.
absl::StatusOr<TestApiServer> StartTestApiServer(const std::string& dir, const std::string& token,
                                                 FakeApiServer::Options server_options = {});

}  // namespace nodeward::policy::testing
