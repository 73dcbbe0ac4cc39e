// TlsConnection under the relay: two relays on one loop form a mutual-TLS tunnel, plain client
// -> outbound relay (a TLS client stream toward the tunnel) -> inbound relay (a TLS server
// stream) -> plain backend.
#include "agent/io/tls_connection.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "agent/io/io_test_util.h"
#include "agent/io/listener.h"
#include "agent/io/relay.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::io {
namespace {

using ::nodeward::SpiffeId;
using ::nodeward::crypto::CertificateAuthority;
using ::nodeward::crypto::TlsContext;
using ::nodeward::crypto::TlsEngine;
using ::nodeward::crypto::TrustBundle;
using ::nodeward::crypto::testing::IssueWorkload;
using ::nodeward::crypto::testing::TempDir;
using ::nodeward::crypto::testing::Workload;
using ::nodeward::io::testing::AcceptOne;
using ::nodeward::io::testing::ConnectLoopback;
using ::nodeward::io::testing::ListenLoopback;
using ::nodeward::io::testing::PortOf;
using ::nodeward::io::testing::RandomBytes;
using ::nodeward::io::testing::ReadToEof;
using ::nodeward::io::testing::WriteAll;

class TlsRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto ca = CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    auto bundle = TrustBundle::FromPem((*ca)->RootsPem());
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    auto server = IssueWorkload(**ca, server_id_);
    ASSERT_TRUE(server.ok()) << server.status();
    auto client = IssueWorkload(**ca, client_id_);
    ASSERT_TRUE(client.ok()) << client.status();
    auto server_context = TlsContext::MeshServer(server->credentials(), *bundle);
    ASSERT_TRUE(server_context.ok()) << server_context.status();
    auto client_context = TlsContext::MeshClient(client->credentials(), *bundle);
    ASSERT_TRUE(client_context.ok()) << client_context.status();
    server_context_ = *server_context;
    client_context_ = *client_context;
  }

  struct Outcome {
    absl::StatusOr<std::vector<std::uint8_t>> client_received = absl::UnknownError("not run");
    absl::StatusOr<std::vector<std::uint8_t>> backend_received = absl::UnknownError("not run");
    std::vector<Relay::Result> inbound;
    std::vector<Relay::Result> outbound;
  };

  // Runs one exchange through the tunnel, the outbound side expecting `expected_server`.
  void RunTunnel(const SpiffeId& expected_server, const std::vector<std::uint8_t>& request,
                 const std::vector<std::uint8_t>& response, Outcome& outcome,
                 std::size_t backend_pause_every = 0) {
    NODEWARD_LOOP_OR_SKIP(loop);
    auto backend = ListenLoopback();
    ASSERT_TRUE(backend.ok());
    const std::uint16_t backend_port = PortOf(backend->get());

    auto inbound = Listener::Bind(
        *loop, SocketAddress::Loopback4(0), {}, [&](std::shared_ptr<Connection> tunnel) {
          Connection::Connect(*loop, SocketAddress::Loopback4(backend_port), absl::Seconds(5), {},
                              [&, tunnel](absl::StatusOr<std::shared_ptr<Connection>> app) {
                                ASSERT_TRUE(app.ok()) << app.status();
                                std::shared_ptr<TlsConnection> tls = TlsConnection::Create(
                                    tunnel, TlsEngine::Server(server_context_));
                                inbound_tls_.push_back(tls);
                                Relay::Start(tls, *app, [&](const Relay::Result& result) {
                                  outcome.inbound.push_back(result);
                                });
                              });
        });
    ASSERT_TRUE(inbound.ok()) << inbound.status();
    const std::uint16_t tunnel_port = (*inbound)->local_address().port;

    auto outbound = Listener::Bind(
        *loop, SocketAddress::Loopback4(0), {}, [&](std::shared_ptr<Connection> app) {
          Connection::Connect(
              *loop, SocketAddress::Loopback4(tunnel_port), absl::Seconds(5), {},
              [&, app](absl::StatusOr<std::shared_ptr<Connection>> tunnel) {
                ASSERT_TRUE(tunnel.ok()) << tunnel.status();
                Relay::Start(
                    TlsConnection::Create(
                        *tunnel, TlsEngine::Client(client_context_,
                                                   {.expected_peer = expected_server, .sni = ""})),
                    app, [&](const Relay::Result& result) { outcome.outbound.push_back(result); });
              });
        });
    ASSERT_TRUE(outbound.ok()) << outbound.status();
    const std::uint16_t entry_port = (*outbound)->local_address().port;

    std::atomic<int> finished{0};
    std::thread client_thread([&] {
      auto fd = ConnectLoopback(entry_port);
      if (fd.ok()) {
        std::thread writer([&] {
          (void)WriteAll(fd->get(), request);
          testing::ShutdownWrite(fd->get());
        });
        outcome.client_received = ReadToEof(fd->get());
        writer.join();
      } else {
        outcome.client_received = fd.status();
      }
      ++finished;
    });
    // The backend only sees a connection when the tunnel came up.
    std::thread backend_thread([&] {
      auto fd = AcceptOne(backend->get());
      if (fd.ok()) {
        std::thread writer([&] {
          (void)WriteAll(fd->get(), response);
          testing::ShutdownWrite(fd->get());
        });
        outcome.backend_received = ReadToEof(fd->get(), backend_pause_every, absl::Milliseconds(5));
        writer.join();
      } else {
        outcome.backend_received = fd.status();
      }
      ++finished;
    });
    auto done = loop->RunUntil(
        [&] {
          for (const auto& tls : inbound_tls_) {
            peak_inbound_tls_ = std::max(peak_inbound_tls_, tls->buffered_bytes());
          }
          return finished >= 1 && !outcome.outbound.empty();
        },
        absl::Seconds(60));
    client_thread.join();
    if (outcome.inbound.empty() && !outcome.backend_received.ok()) {
      // Unblock the backend accept when the tunnel never reached it.
      shutdown(backend->get(), SHUT_RDWR);
    }
    (void)loop->RunUntil([&] { return finished == 2 || !outcome.inbound.empty(); },
                         absl::Seconds(10));
    shutdown(backend->get(), SHUT_RDWR);
    backend_thread.join();
    (void)loop->RunUntil([&] { return !outcome.inbound.empty(); }, absl::Seconds(10));
    ASSERT_TRUE(done.ok());
  }

  TempDir dir_;
  SpiffeId server_id_ = crypto::testing::Id("cluster.local", "backend", "api");
  SpiffeId client_id_ = crypto::testing::Id("cluster.local", "frontend", "web");
  std::shared_ptr<const TlsContext> server_context_;
  std::shared_ptr<const TlsContext> client_context_;
  std::vector<std::shared_ptr<TlsConnection>> inbound_tls_;
  std::size_t peak_inbound_tls_ = 0;
};

TEST_F(TlsRelayTest, CarriesBytesBothWaysThroughMutualTls) {
  const std::vector<std::uint8_t> request = RandomBytes(4 << 20, 21);
  const std::vector<std::uint8_t> response = RandomBytes(3 << 20, 22);
  Outcome outcome;
  RunTunnel(server_id_, request, response, outcome);
  if (HasFatalFailure() || IsSkipped()) return;
  ASSERT_TRUE(outcome.client_received.ok()) << outcome.client_received.status();
  ASSERT_TRUE(outcome.backend_received.ok()) << outcome.backend_received.status();
  EXPECT_TRUE(*outcome.backend_received == request);
  EXPECT_TRUE(*outcome.client_received == response);
  ASSERT_EQ(outcome.outbound.size(), 1u);
  EXPECT_TRUE(outcome.outbound[0].status.ok()) << outcome.outbound[0].status;
  ASSERT_EQ(outcome.inbound.size(), 1u);
  EXPECT_TRUE(outcome.inbound[0].status.ok()) << outcome.inbound[0].status;
  // Ciphertext on the tunnel is larger than the plaintext it carries.
  EXPECT_GT(outcome.outbound[0].a_to_b_bytes, 0u);
}

// A backend reading at about 50 MB/s: the TLS layer holds at most one batch of ciphertext and
// the relay's budget, the rest waits in the sender's socket.
TEST_F(TlsRelayTest, SlowBackendBoundsWhatTheTlsStreamHolds) {
  const std::vector<std::uint8_t> request = RandomBytes(16 << 20, 23);
  Outcome outcome;
  RunTunnel(server_id_, request, RandomBytes(1000, 24), outcome, 256 * 1024);
  if (HasFatalFailure() || IsSkipped()) return;
  ASSERT_TRUE(outcome.backend_received.ok()) << outcome.backend_received.status();
  EXPECT_TRUE(*outcome.backend_received == request);
  ASSERT_EQ(outcome.inbound.size(), 1u);
  EXPECT_TRUE(outcome.inbound[0].status.ok()) << outcome.inbound[0].status;
  EXPECT_LT(peak_inbound_tls_, std::size_t{1} << 20) << "peak held " << peak_inbound_tls_;
  EXPECT_LT(outcome.inbound[0].peak_buffered_bytes, std::size_t{2} << 20);
}

TEST_F(TlsRelayTest, WrongServerIdentityCutsTheTunnelBeforeAnyData) {
  const SpiffeId impostor_expected = crypto::testing::Id("cluster.local", "backend", "other");
  Outcome outcome;
  RunTunnel(impostor_expected, RandomBytes(1000, 1), RandomBytes(1000, 2), outcome);
  if (HasFatalFailure() || IsSkipped()) return;
  ASSERT_EQ(outcome.outbound.size(), 1u);
  // Secure naming: the tunnel fails with the verification reason, not a generic close.
  EXPECT_EQ(outcome.outbound[0].status.code(), absl::StatusCode::kPermissionDenied)
      << outcome.outbound[0].status;
  // The application client gets nothing back.
  if (outcome.client_received.ok()) {
    EXPECT_TRUE(outcome.client_received->empty());
  }
  // The backend never received application bytes.
  if (outcome.backend_received.ok()) {
    EXPECT_TRUE(outcome.backend_received->empty());
  }
}

// Two TLS streams over one loopback TCP connection, the server side under test.
class TlsHandshakeTest : public TlsRelayTest {
 protected:
  struct Pair {
    std::shared_ptr<TlsConnection> client;
    std::shared_ptr<TlsConnection> server;
  };
  Pair Connect(EventLoop& loop, const SpiffeId& expected_server) {
    auto listener = ListenLoopback();
    EXPECT_TRUE(listener.ok());
    auto client_fd = ConnectLoopback(PortOf(listener->get()));
    EXPECT_TRUE(client_fd.ok());
    auto server_fd = AcceptOne(listener->get());
    EXPECT_TRUE(server_fd.ok());
    for (int fd : {client_fd->get(), server_fd->get()}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    return {TlsConnection::Create(
                Connection::Adopt(loop, client_fd->release(), {}),
                TlsEngine::Client(client_context_, {.expected_peer = expected_server, .sni = ""})),
            TlsConnection::Create(Connection::Adopt(loop, server_fd->release(), {}),
                                  TlsEngine::Server(server_context_))};
  }
};

TEST_F(TlsHandshakeTest, HandshakeAloneHoldsPlaintextUntilStart) {
  NODEWARD_LOOP_OR_SKIP(loop);
  Pair pair = Connect(*loop, server_id_);
  std::vector<absl::Status> handshakes;
  std::string received;
  bool server_closed = false;
  pair.server->Handshake([&](const absl::Status& status) { handshakes.push_back(status); });
  Stream::Callbacks client;
  client.on_closed = [](const absl::Status&) {};
  pair.client->Start(std::move(client));
  const std::string hello = "sent before the server started";
  pair.client->Send(IoBuffer::Copy(
      absl::MakeConstSpan(reinterpret_cast<const std::uint8_t*>(hello.data()), hello.size())));
  ASSERT_TRUE(
      loop->RunUntil([&] { return !handshakes.empty(); }, absl::Seconds(10)).value_or(false));
  ASSERT_EQ(handshakes.size(), 1u);
  EXPECT_TRUE(handshakes[0].ok()) << handshakes[0];
  EXPECT_TRUE(pair.server->established());
  // Nothing is delivered before Start(); everything after it, in order.
  (void)loop->RunUntil([] { return false; }, absl::Milliseconds(100));
  Stream::Callbacks server;
  server.on_data = [&](IoBuffer chunk) {
    received.append(reinterpret_cast<const char*>(chunk.data().data()), chunk.size());
  };
  server.on_closed = [&](const absl::Status&) { server_closed = true; };
  pair.server->Start(std::move(server));
  ASSERT_TRUE(loop->RunUntil([&] { return received.size() >= hello.size(); }, absl::Seconds(10))
                  .value_or(false));
  EXPECT_EQ(received, hello);
  EXPECT_EQ(handshakes.size(), 1u);
  pair.client->Close();
  pair.server->Close();
  (void)loop->RunUntil([&] { return server_closed; }, absl::Seconds(5));
}

TEST_F(TlsHandshakeTest, HandshakeAloneReportsAClientThatGivesUp) {
  NODEWARD_LOOP_OR_SKIP(loop);
  // The client refuses the server's identity: it aborts with an alert during the handshake.
  Pair pair = Connect(*loop, crypto::testing::Id("cluster.local", "backend", "other"));
  std::vector<absl::Status> handshakes;
  pair.server->Handshake([&](const absl::Status& status) { handshakes.push_back(status); });
  Stream::Callbacks client;
  client.on_closed = [](const absl::Status&) {};
  pair.client->Start(std::move(client));
  ASSERT_TRUE(
      loop->RunUntil([&] { return !handshakes.empty(); }, absl::Seconds(10)).value_or(false));
  ASSERT_EQ(handshakes.size(), 1u);
  EXPECT_FALSE(handshakes[0].ok());
  EXPECT_FALSE(pair.server->established());
  EXPECT_TRUE(pair.server->closed());
}

}  // namespace
}  // namespace nodeward::io
