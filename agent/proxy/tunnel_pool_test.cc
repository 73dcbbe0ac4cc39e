// TunnelPool on one loop with real tunnels: each dial joins a client tunnel to a server tunnel
// over a socket pair, as ztunnel's pool tests do against a real server.
#include "agent/proxy/tunnel_pool.h"

#include <sys/socket.h>

#include <memory>
#include <vector>

#include "agent/io/io_test_util.h"
#include "agent/proxy/mesh_test_util.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::proxy {
namespace {

using ::nodeward::crypto::testing::Id;
using ::nodeward::crypto::testing::TempDir;

class TunnelPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto contexts = testing::MakeMeshContexts(dir_.path(), client_id_, server_id_);
    ASSERT_TRUE(contexts.ok()) << contexts.status();
    client_context_ = contexts->client;
    server_context_ = contexts->server;
    auto loop = io::testing::NewLoop();
    if (!loop.ok()) GTEST_SKIP() << "io_uring unavailable: " << loop.status();
    loop_ = *std::move(loop);
  }

  void TearDown() override {
    for (auto& tunnel : servers_) tunnel->Close(absl::CancelledError("test over"));
    streams_.clear();
    pool_.reset();
    if (loop_ != nullptr) (void)loop_->RunUntil([] { return false; }, absl::Milliseconds(50));
  }

  TunnelKey Key(const std::string& ip = "10.0.0.2") {
    return {7, client_id_, server_id_, *SocketAddress::Parse(absl::StrCat(ip, ":15008"))};
  }

  // Dials a tunnel pair over a socket pair; the server accepts every CONNECT. `delay` holds
  // the answer back, as a real connect and handshake would.
  TunnelPool::Dial Dial(absl::Duration delay = absl::ZeroDuration()) {
    return [this, delay](HboneTunnel::ClosedHandler on_closed, TunnelPool::Waiter done) mutable {
      ++dials_started_;
      int fds[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
      auto holder = std::make_shared<std::weak_ptr<HboneTunnel>>();
      auto server = HboneTunnel::Start(
          HboneTunnel::Role::kServer, io::Connection::Adopt(*loop_, fds[1], {}),
          crypto::TlsEngine::Server(server_context_), options_,
          [this, holder](hbone::StreamId id, const std::string&) {
            if (auto tunnel = holder->lock()) {
              auto stream = tunnel->AcceptStream(id);
              if (stream.ok()) streams_.push_back(*stream);
            }
          },
          nullptr);
      ASSERT_TRUE(server.ok());
      *holder = *server;
      servers_.push_back(*server);
      crypto::TlsEngine::ClientOptions client;
      client.expected_peer = server_id_;
      auto tunnel =
          HboneTunnel::Start(HboneTunnel::Role::kClient, io::Connection::Adopt(*loop_, fds[0], {}),
                             crypto::TlsEngine::Client(client_context_, client), options_, nullptr,
                             std::move(on_closed));
      if (delay == absl::ZeroDuration()) {
        done(std::move(tunnel));
        return;
      }
      auto held = std::make_shared<TunnelPool::TunnelOrError>(std::move(tunnel));
      auto answer = std::make_shared<TunnelPool::Waiter>(std::move(done));
      loop_->Timer(delay, [held, answer](io::Completion&) { (*answer)(std::move(*held)); });
    };
  }

  // A waiter that opens one stream on what it gets and keeps it.
  TunnelPool::Waiter OpenOne(std::vector<std::shared_ptr<HboneTunnel>>* got) {
    return [this, got](TunnelPool::TunnelOrError tunnel) {
      if (!tunnel.ok()) {
        errors_.push_back(tunnel.status());
        return;
      }
      auto stream = (*tunnel)->OpenStream("10.0.0.2:8080");
      ASSERT_TRUE(stream.ok()) << stream.status();
      streams_.push_back(*stream);
      got->push_back(*tunnel);
    };
  }

  bool Run(const std::function<bool()>& done) {
    auto ran = loop_->RunUntil(done, absl::Seconds(10));
    return ran.ok() && *ran;
  }

  TempDir dir_;
  SpiffeId client_id_ = Id("cluster.local", "frontend", "web");
  SpiffeId server_id_ = Id("cluster.local", "backend", "api");
  std::shared_ptr<const crypto::TlsContext> client_context_;
  std::shared_ptr<const crypto::TlsContext> server_context_;
  std::unique_ptr<io::EventLoop> loop_;
  HboneTunnel::Options options_;
  std::unique_ptr<TunnelPool> pool_ = std::make_unique<TunnelPool>();
  std::vector<std::shared_ptr<HboneTunnel>> servers_;
  std::vector<std::shared_ptr<HboneStream>> streams_;
  std::vector<absl::Status> errors_;
  int dials_started_ = 0;
};

TEST_F(TunnelPoolTest, ConnectionsToOneDestinationReuseOneTunnel) {
  std::vector<std::shared_ptr<HboneTunnel>> got;
  for (int i = 0; i < 5; ++i) pool_->Get(Key(), Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 5u);
  for (const auto& tunnel : got) EXPECT_EQ(tunnel, got[0]);
  EXPECT_EQ(pool_->dials(), 1u);
  EXPECT_EQ(pool_->size(), 1u);
  EXPECT_EQ(got[0]->active_streams(), 5u);
}

TEST_F(TunnelPoolTest, DifferentKeysGetDifferentTunnels) {
  std::vector<std::shared_ptr<HboneTunnel>> got;
  pool_->Get(Key("10.0.0.2"), Dial(), OpenOne(&got));
  pool_->Get(Key("10.0.0.3"), Dial(), OpenOne(&got));
  TunnelKey other_source = Key();
  other_source.source_netns_cookie = 8;
  pool_->Get(other_source, Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_NE(got[0], got[1]);
  EXPECT_NE(got[0], got[2]);
  EXPECT_EQ(pool_->dials(), 3u);
}

TEST_F(TunnelPoolTest, AFullTunnelMakesTheNextStreamDialAnother) {
  options_.max_streams = 2;
  std::vector<std::shared_ptr<HboneTunnel>> got;
  for (int i = 0; i < 5; ++i) pool_->Get(Key(), Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(pool_->dials(), 3u);
  EXPECT_EQ(pool_->size(), 3u);
  EXPECT_EQ(got[0], got[1]);
  EXPECT_NE(got[1], got[2]);
  EXPECT_EQ(got[2], got[3]);
  EXPECT_NE(got[3], got[4]);
}

TEST_F(TunnelPoolTest, ADrainingTunnelTakesNoNewStreams) {
  std::vector<std::shared_ptr<HboneTunnel>> got;
  pool_->Get(Key(), Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 1u);
  // The peer's GOAWAY and our own drain both end a tunnel's new streams.
  servers_[0]->Drain("server going away");
  ASSERT_TRUE(Run([&] { return !got[0]->AcceptsNewStreams(); }));
  pool_->Get(Key(), Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(got[1], got[0]);
  EXPECT_EQ(pool_->dials(), 2u);
}

TEST_F(TunnelPoolTest, AnIdleTunnelLeavesThePool) {
  options_.idle_timeout = absl::Milliseconds(200);
  std::vector<std::shared_ptr<HboneTunnel>> got;
  pool_->Get(Key(), Dial(), OpenOne(&got));
  ASSERT_EQ(got.size(), 1u);
  for (auto& stream : streams_) stream->Close();
  streams_.clear();
  ASSERT_TRUE(Run([&] { return pool_->size() == 0; }));
  EXPECT_TRUE(got[0]->closed());
  // A later connection gets a fresh tunnel.
  pool_->Get(Key(), Dial(), OpenOne(&got));
  EXPECT_EQ(pool_->dials(), 2u);
  EXPECT_EQ(pool_->size(), 1u);
}

TEST_F(TunnelPoolTest, ConnectionsArrivingDuringADialShareIt) {
  std::vector<std::shared_ptr<HboneTunnel>> got;
  for (int i = 0; i < 4; ++i) pool_->Get(Key(), Dial(absl::Milliseconds(50)), OpenOne(&got));
  EXPECT_TRUE(got.empty()) << "nobody is served before the dial completes";
  EXPECT_EQ(dials_started_, 1);
  ASSERT_TRUE(Run([&] { return got.size() == 4; }));
  for (const auto& tunnel : got) EXPECT_EQ(tunnel, got[0]);
  EXPECT_EQ(pool_->dials(), 1u);
}

TEST_F(TunnelPoolTest, AFailedDialFailsEveryoneWaitingForIt) {
  int dials = 0;
  auto failing = [&dials](HboneTunnel::ClosedHandler, TunnelPool::Waiter done) {
    ++dials;
    done(absl::UnavailableError("connect to 10.0.0.2:15008: refused"));
  };
  std::vector<std::shared_ptr<HboneTunnel>> got;
  pool_->Get(Key(), failing, OpenOne(&got));
  EXPECT_EQ(errors_.size(), 1u);
  EXPECT_EQ(pool_->size(), 0u);
  // Nothing is cached from a failure: the next connection dials again.
  pool_->Get(Key(), failing, OpenOne(&got));
  EXPECT_EQ(dials, 2);
  EXPECT_TRUE(got.empty());
}

}  // namespace
}  // namespace nodeward::proxy
