// The nodeward-sds binary as deployed: one process serving the CA (--serve-ca), one node
// process getting its certificates from it and serving SDS on a Unix socket, and the agent's
// cache as the client. Processes are ended by PID when the test ends, also on failure.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sds/certificate_cache.h"
#include "sds/sds_test_util.h"

namespace nodeward::sds {
namespace {

using testing::Eventually;
using testing::FreeLoopbackPort;
using testing::Id;
using testing::Process;
using testing::TempDir;

TEST(SdsBinaryTest, CaNodeAndWorkerNodeServeAnAgent) {
  TempDir dir;
  const auto web = Id("shop", "web");
  const auto late = Id("shop", "late");
  const std::string port = std::to_string(FreeLoopbackPort());
  std::ofstream(dir.Sub("tokens")) << "node-1-token node-1\n";
  std::ofstream(dir.Sub("token")) << "node-1-token\n";
  std::ofstream(dir.Sub("allowed")) << web.ToString() << "\n";

  Process ca({NODEWARD_SDS_BINARY, "--serve-ca=127.0.0.1:" + port, "--ca-dir=" + dir.Sub("ca"),
              "--ca-tokens-file=" + dir.Sub("tokens"), "--sds-socket="});
  ASSERT_TRUE(Eventually([&] { return std::filesystem::exists(dir.Sub("ca/ca-cert.pem")); },
                         absl::Seconds(10)));
  Process node({NODEWARD_SDS_BINARY, "--sds-socket=" + dir.Sub("node/sds.sock"),
                "--ca-address=127.0.0.1:" + port, "--ca-root-file=" + dir.Sub("ca/ca-cert.pem"),
                "--ca-token-file=" + dir.Sub("token"),
                "--ca-server-identity=spiffe://cluster.local/ns/nodeward-system/sa/nodeward-ca",
                "--allowed-identities-file=" + dir.Sub("allowed"), "--cert-lifetime=2s"});

  CertificateCacheOptions options;
  options.sds.socket_path = dir.Sub("node/sds.sock");
  options.sds.reconnect = {absl::Milliseconds(50), absl::Milliseconds(300), 2.0, 0.5};
  options.refused_retry = absl::Milliseconds(300);
  CertificateCache cache(options);
  cache.Start();
  cache.Acquire(web);
  cache.Acquire(late);
  auto first = cache.WaitForCredentials(web, absl::Now() + absl::Seconds(15));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(ca.Running());
  EXPECT_TRUE(node.Running());
  EXPECT_FALSE(cache.Get(late).ok());

  // Rotation through the upstream CA: a 2 s lifetime is renewed at about 1 s.
  ASSERT_TRUE(Eventually(
      [&] {
        auto now = cache.Get(web);
        return now.ok() && now->leaf.serial_hex != first->leaf.serial_hex;
      },
      absl::Seconds(5)));

  // The node's allow-list grows; SIGHUP (or the file change itself) lets the agent have it.
  std::ofstream(dir.Sub("allowed")) << web.ToString() << "\n" << late.ToString() << "\n";
  node.Signal(SIGHUP);
  auto granted = cache.WaitForCredentials(late, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(granted.ok()) << granted.status();
  cache.Stop();

  EXPECT_EQ(node.Stop(), 0);
  EXPECT_EQ(ca.Stop(), 0);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("node/sds.sock")));
}

// Authorisation from the workload inventory: the node gets the identity of a pod scheduled on
// it, not of one on another node, and follows the directory when a pod is scheduled there.
TEST(SdsBinaryTest, AuthorisesFromTheWorkloadInventory) {
  TempDir dir;
  const auto web = Id("shop", "web");
  const auto api = Id("shop", "api");
  auto write_pods = [&](const std::string& api_node) {
    std::ofstream(dir.Sub("config/pods.yaml.tmp"))
        << "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\n"
        << "spec: {serviceAccountName: web, nodeName: node-1}\n---\n"
        << "apiVersion: v1\nkind: Pod\nmetadata: {name: api-1, namespace: shop}\n"
        << "spec: {serviceAccountName: api, nodeName: " << api_node << "}\n";
    std::filesystem::rename(dir.Sub("config/pods.yaml.tmp"), dir.Sub("config/pods.yaml"));
  };
  std::filesystem::create_directories(dir.Sub("config"));
  write_pods("node-2");
  Process node({NODEWARD_SDS_BINARY, "--sds-socket=" + dir.Sub("sds.sock"),
                "--ca-dir=" + dir.Sub("ca"), "--config-dir=" + dir.Sub("config"),
                "--node-name=node-1"});

  CertificateCacheOptions options;
  options.sds.socket_path = dir.Sub("sds.sock");
  options.sds.reconnect = {absl::Milliseconds(50), absl::Milliseconds(300), 2.0, 0.5};
  options.refused_retry = absl::Milliseconds(300);
  CertificateCache cache(options);
  cache.Start();
  cache.Acquire(web);
  cache.Acquire(api);
  auto granted = cache.WaitForCredentials(web, absl::Now() + absl::Seconds(15));
  ASSERT_TRUE(granted.ok()) << granted.status();
  absl::SleepFor(absl::Seconds(1));
  EXPECT_FALSE(cache.Get(api).ok()) << "api has no pod on node-1";

  write_pods("node-1");  // api-1 is scheduled on this node now
  auto later = cache.WaitForCredentials(api, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(later.ok()) << later.status();
  cache.Stop();
  EXPECT_EQ(node.Stop(), 0);
}

TEST(SdsBinaryTest, RefusesToStartWithBadFlags) {
  TempDir dir;
  Process bad({NODEWARD_SDS_BINARY, "--sds-socket=" + dir.Sub("sds.sock"),
               "--ca-dir=" + dir.Sub("ca"), "--allowed-identity=not-a-spiffe-id"});
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (bad.Running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(bad.Stop(SIGKILL), 1);
}

}  // namespace
}  // namespace nodeward::sds
