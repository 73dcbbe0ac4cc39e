// HboneTunnel end to end on one loop: a client tunnel and a server tunnel joined by a socket
// pair, application connections on socket pairs whose far ends are driven by blocking threads,
// each carried over its HboneStream by a relay, as the data plane does.
#include "agent/proxy/hbone_tunnel.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "agent/io/io_test_util.h"
#include "agent/io/relay.h"
#include "agent/proxy/mesh_test_util.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::proxy {
namespace {

using ::nodeward::crypto::testing::Id;
using ::nodeward::crypto::testing::TempDir;
using ::nodeward::io::testing::Fd;
using ::nodeward::io::testing::RandomBytes;
using ::nodeward::io::testing::ReadToEof;
using ::nodeward::io::testing::WriteAll;
using ::testing::HasSubstr;

struct SocketPair {
  Fd loop_side;  // adopted by a Connection
  Fd test_side;  // driven by a blocking thread
};

// How one relayed stream ended, seen from its application connection.
struct StreamResult {
  absl::Status status;
  std::uint64_t to_app_bytes = 0;
  std::uint64_t from_app_bytes = 0;
};

// Relays `app` over `stream` and records how it ended.
void Bridge(std::shared_ptr<io::Connection> app, std::shared_ptr<HboneStream> stream,
            std::vector<StreamResult>* results) {
  io::Relay::Start(std::move(app), std::move(stream), [results](const io::Relay::Result& r) {
    results->push_back({r.status, r.b_to_a_bytes, r.a_to_b_bytes});
  });
}

SocketPair MakePair() {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  timeval timeout{10, 0};
  setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fds[1], SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  return {Fd(fds[0]), Fd(fds[1])};
}

class HboneTunnelTest : public ::testing::Test {
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
    if (client_ != nullptr) client_->Close(absl::CancelledError("test over"));
    if (server_ != nullptr) server_->Close(absl::CancelledError("test over"));
    if (loop_ != nullptr) (void)loop_->RunUntil([] { return false; }, absl::Milliseconds(50));
    for (std::thread& thread : threads_) thread.join();
  }

  // Joins a client and a server tunnel. The server answers each CONNECT with `answer`.
  void Connect(SpiffeId expected_server,
               absl::AnyInvocable<void(hbone::StreamId, const std::string&)> answer) {
    SocketPair wire = MakePair();
    HboneTunnel::Options options;
    crypto::TlsEngine::ClientOptions client_options;
    client_options.expected_peer = expected_server;
    auto client = HboneTunnel::Start(
        HboneTunnel::Role::kClient, io::Connection::Adopt(*loop_, wire.loop_side.release(), {}),
        crypto::TlsEngine::Client(client_context_, client_options), options, nullptr,
        [this](const absl::Status& status) { client_closed_ = status; });
    ASSERT_TRUE(client.ok()) << client.status();
    auto server = HboneTunnel::Start(
        HboneTunnel::Role::kServer, io::Connection::Adopt(*loop_, wire.test_side.release(), {}),
        crypto::TlsEngine::Server(server_context_), options, std::move(answer),
        [this](const absl::Status& status) { server_closed_ = status; });
    ASSERT_TRUE(server.ok()) << server.status();
    client_ = *client;
    server_ = *server;
  }

  // Accepts every CONNECT and runs an echo application on the far end of its socket pair.
  absl::AnyInvocable<void(hbone::StreamId, const std::string&)> EchoServer() {
    return [this](hbone::StreamId id, const std::string& authority) {
      authorities_.push_back(authority);
      SocketPair app = MakePair();
      int far = app.test_side.release();
      threads_.emplace_back([far] {
        Fd fd(far);
        auto data = ReadToEof(fd.get());
        if (data.ok()) (void)WriteAll(fd.get(), *data);
        shutdown(fd.get(), SHUT_WR);
      });
      absl::StatusOr<std::shared_ptr<HboneStream>> stream = server_->AcceptStream(id);
      ASSERT_TRUE(stream.ok()) << stream.status();
      Bridge(io::Connection::Adopt(*loop_, app.loop_side.release(), {}), *stream, &server_results_);
    };
  }

  // Opens a stream whose application sends `payload`, half-closes and collects the reply.
  void OpenEchoStream(const std::vector<std::uint8_t>& payload, std::vector<std::uint8_t>* reply) {
    SocketPair app = MakePair();
    int far = app.test_side.release();
    threads_.emplace_back([far, payload, reply, this] {
      Fd fd(far);
      std::thread writer([&] {
        (void)WriteAll(fd.get(), payload);
        shutdown(fd.get(), SHUT_WR);
      });
      auto data = ReadToEof(fd.get());
      writer.join();
      if (data.ok()) *reply = *std::move(data);
      replies_done_.fetch_add(1);
    });
    absl::StatusOr<std::shared_ptr<HboneStream>> stream = client_->OpenStream("10.0.0.2:8080");
    ASSERT_TRUE(stream.ok()) << stream.status();
    Bridge(io::Connection::Adopt(*loop_, app.loop_side.release(), {}), *stream, &client_results_);
  }

  TempDir dir_;
  SpiffeId client_id_ = Id("cluster.local", "frontend", "web");
  SpiffeId server_id_ = Id("cluster.local", "backend", "api");
  std::shared_ptr<const crypto::TlsContext> client_context_;
  std::shared_ptr<const crypto::TlsContext> server_context_;
  std::unique_ptr<io::EventLoop> loop_;
  std::shared_ptr<HboneTunnel> client_;
  std::shared_ptr<HboneTunnel> server_;
  std::optional<absl::Status> client_closed_;
  std::optional<absl::Status> server_closed_;
  std::vector<std::string> authorities_;
  std::vector<StreamResult> client_results_;
  std::vector<StreamResult> server_results_;
  std::vector<std::thread> threads_;
  std::atomic<int> replies_done_{0};
};

TEST_F(HboneTunnelTest, CarriesOneStreamBothWaysWithVerifiedIdentities) {
  Connect(server_id_, EchoServer());
  const std::vector<std::uint8_t> payload = RandomBytes(3 << 20, 7);
  std::vector<std::uint8_t> reply;
  OpenEchoStream(payload, &reply);
  auto done =
      loop_->RunUntil([&] { return client_results_.size() == 1 && server_results_.size() == 1; },
                      absl::Seconds(20));
  ASSERT_TRUE(done.ok() && *done) << "stream did not finish";
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_EQ(reply, payload);
  EXPECT_TRUE(client_results_[0].status.ok()) << client_results_[0].status;
  EXPECT_EQ(client_results_[0].from_app_bytes, payload.size());
  EXPECT_EQ(client_results_[0].to_app_bytes, payload.size());
  EXPECT_TRUE(server_results_[0].status.ok()) << server_results_[0].status;
  EXPECT_THAT(authorities_, ::testing::ElementsAre("10.0.0.2:8080"));
  ASSERT_TRUE(client_->peer_identity().has_value());
  EXPECT_EQ(*client_->peer_identity(), server_id_);
  ASSERT_TRUE(server_->peer_identity().has_value());
  EXPECT_EQ(*server_->peer_identity(), client_id_);
}

TEST_F(HboneTunnelTest, ManyConcurrentStreamsShareOneTunnel) {
  Connect(server_id_, EchoServer());
  constexpr int kStreams = 24;
  std::vector<std::vector<std::uint8_t>> payloads;
  std::vector<std::vector<std::uint8_t>> replies(kStreams);
  for (int i = 0; i < kStreams; ++i) payloads.push_back(RandomBytes(64 * 1024 + i * 977, i));
  for (int i = 0; i < kStreams; ++i) OpenEchoStream(payloads[i], &replies[i]);
  auto done =
      loop_->RunUntil([&] { return client_results_.size() == kStreams; }, absl::Seconds(30));
  ASSERT_TRUE(done.ok() && *done) << client_results_.size() << " of " << kStreams << " finished";
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  for (int i = 0; i < kStreams; ++i) EXPECT_EQ(replies[i], payloads[i]) << "stream " << i;
  EXPECT_EQ(client_->streams_opened(), static_cast<std::uint64_t>(kStreams));
  EXPECT_EQ(client_->active_streams(), 0u);
  EXPECT_FALSE(client_->closed());
}

TEST_F(HboneTunnelTest, RefusedConnectResetsTheApplicationWithTheReason) {
  Connect(server_id_, [this](hbone::StreamId id, const std::string&) {
    ASSERT_TRUE(server_->RefuseStream(id, 403, "STRICT mTLS on port 8080").ok());
  });
  std::vector<std::uint8_t> reply = {1};
  OpenEchoStream(RandomBytes(1000, 1), &reply);
  auto done = loop_->RunUntil([&] { return client_results_.size() == 1; }, absl::Seconds(10));
  ASSERT_TRUE(done.ok() && *done);
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_TRUE(absl::IsPermissionDenied(client_results_[0].status)) << client_results_[0].status;
  EXPECT_THAT(std::string(client_results_[0].status.message()), HasSubstr("STRICT mTLS"));
  EXPECT_TRUE(reply.empty() || reply == std::vector<std::uint8_t>{1});
  EXPECT_FALSE(client_->closed()) << "one refused stream must not end the tunnel";
}

TEST_F(HboneTunnelTest, WrongServerIdentityFailsTheTunnelAndItsStreams) {
  Connect(Id("cluster.local", "backend", "someone-else"), EchoServer());
  std::vector<std::uint8_t> reply;
  OpenEchoStream(RandomBytes(1000, 2), &reply);
  auto done = loop_->RunUntil([&] { return client_results_.size() == 1; }, absl::Seconds(10));
  ASSERT_TRUE(done.ok() && *done);
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_FALSE(client_results_[0].status.ok());
  EXPECT_TRUE(reply.empty());
  EXPECT_TRUE(authorities_.empty()) << "no CONNECT may reach a server with the wrong identity";
  EXPECT_TRUE(client_->closed());
  ASSERT_TRUE(client_closed_.has_value());
  EXPECT_THAT(client_closed_->ToString(), HasSubstr("someone-else"));
}

TEST_F(HboneTunnelTest, HalfCloseWorksInBothDirections) {
  const std::vector<std::uint8_t> greeting = {'h', 'e', 'l', 'l', 'o'};
  const std::vector<std::uint8_t> payload = RandomBytes(256 * 1024, 3);
  std::vector<std::uint8_t> server_got;
  Connect(server_id_, [&](hbone::StreamId id, const std::string&) {
    SocketPair app = MakePair();
    int far = app.test_side.release();
    // The server speaks first and closes its side, then keeps reading.
    threads_.emplace_back([far, &greeting, &server_got] {
      Fd fd(far);
      (void)WriteAll(fd.get(), greeting);
      shutdown(fd.get(), SHUT_WR);
      auto data = ReadToEof(fd.get());
      if (data.ok()) server_got = *std::move(data);
    });
    absl::StatusOr<std::shared_ptr<HboneStream>> stream = server_->AcceptStream(id);
    ASSERT_TRUE(stream.ok()) << stream.status();
    Bridge(io::Connection::Adopt(*loop_, app.loop_side.release(), {}), *stream, &server_results_);
  });
  SocketPair app = MakePair();
  int far = app.test_side.release();
  std::vector<std::uint8_t> client_got;
  // The client reads the server's whole (half-closed) side before it sends anything.
  threads_.emplace_back([far, &payload, &client_got] {
    Fd fd(far);
    auto data = ReadToEof(fd.get());
    if (data.ok()) client_got = *std::move(data);
    (void)WriteAll(fd.get(), payload);
    shutdown(fd.get(), SHUT_WR);
  });
  absl::StatusOr<std::shared_ptr<HboneStream>> stream = client_->OpenStream("10.0.0.2:8080");
  ASSERT_TRUE(stream.ok()) << stream.status();
  Bridge(io::Connection::Adopt(*loop_, app.loop_side.release(), {}), *stream, &client_results_);
  auto done =
      loop_->RunUntil([&] { return client_results_.size() == 1 && server_results_.size() == 1; },
                      absl::Seconds(20));
  ASSERT_TRUE(done.ok() && *done);
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_EQ(client_got, greeting);
  EXPECT_EQ(server_got, payload);
  EXPECT_TRUE(client_results_[0].status.ok()) << client_results_[0].status;
  EXPECT_TRUE(server_results_[0].status.ok()) << server_results_[0].status;
}

TEST_F(HboneTunnelTest, SlowReaderBoundsWhatTheTunnelsHold) {
  constexpr std::size_t kTotal = 24 << 20;
  std::atomic<std::size_t> received{0};
  Connect(server_id_, [&](hbone::StreamId id, const std::string&) {
    SocketPair app = MakePair();
    int far = app.test_side.release();
    threads_.emplace_back([far, &received] {
      Fd fd(far);
      // 5 ms pause every 256 KiB: about 50 MB/s, far slower than the tunnel.
      auto data = ReadToEof(fd.get(), 256 * 1024, absl::Milliseconds(5));
      if (data.ok()) received = data->size();
    });
    absl::StatusOr<std::shared_ptr<HboneStream>> stream = server_->AcceptStream(id);
    ASSERT_TRUE(stream.ok()) << stream.status();
    Bridge(io::Connection::Adopt(*loop_, app.loop_side.release(), {}), *stream, &server_results_);
  });
  std::vector<std::uint8_t> reply;
  OpenEchoStream(RandomBytes(kTotal, 5), &reply);
  std::size_t peak = 0;
  auto done = loop_->RunUntil(
      [&] {
        peak = std::max(peak, client_->buffered_bytes() + server_->buffered_bytes());
        return client_results_.size() == 1 && server_results_.size() == 1;
      },
      absl::Seconds(60));
  ASSERT_TRUE(done.ok() && *done);
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_EQ(received.load(), kTotal);
  // One stream window (4 MiB) on the receiving side plus the sender's small budgets: the rest
  // of the 24 MiB waited in the sender's socket, not in the tunnels.
  EXPECT_LT(peak, std::size_t{6} << 20) << "peak buffered " << peak;
  EXPECT_GT(peak, 0u);
}

TEST_F(HboneTunnelTest, DrainLetsOpenStreamsFinishThenCloses) {
  Connect(server_id_, EchoServer());
  const std::vector<std::uint8_t> payload = RandomBytes(512 * 1024, 9);
  std::vector<std::uint8_t> reply;
  OpenEchoStream(payload, &reply);
  client_->Drain("test drain");
  EXPECT_FALSE(client_->AcceptsNewStreams());
  auto done = loop_->RunUntil([&] { return client_results_.size() == 1 && client_->closed(); },
                              absl::Seconds(20));
  ASSERT_TRUE(done.ok() && *done);
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  EXPECT_EQ(reply, payload);
  EXPECT_TRUE(client_results_[0].status.ok()) << client_results_[0].status;
  ASSERT_TRUE(client_closed_.has_value());
  EXPECT_TRUE(client_closed_->ok()) << *client_closed_;
}

}  // namespace
}  // namespace nodeward::proxy
