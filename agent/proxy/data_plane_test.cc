// The data plane on its real loops, with in-pod listeners in a network namespace of the
// test's own and a fake capture dataplane saying where each outbound connection was going.
// Passthrough mode needs neither policy nor certificates, so these cover the accept path,
// admission, the relay, the agent's own ports, the flow records and drain.
#include "agent/proxy/data_plane.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "agent/capture/test_netns.h"
#include "agent/io/io_test_util.h"
#include "bpf/nodeward_maps.h"
#include "common/testing/literals.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::proxy {
namespace {

using ::testing::HasSubstr;

// Answers every original-destination question with `destination`.
class FakeDataplane : public bpf::CaptureDataplane {
 public:
  explicit FakeDataplane(SocketAddress destination) : destination_(destination) {}
  absl::Status EnrollNetns(uint64_t, uint32_t) override { return absl::OkStatus(); }
  absl::Status UnenrollNetns(uint64_t) override { return absl::OkStatus(); }
  absl::Status LinkNetns(uint64_t, int) override { return absl::OkStatus(); }
  absl::Status UnlinkNetns(uint64_t) override { return absl::OkStatus(); }
  absl::Status AddPodAddress(const IpAddress&, uint64_t) override { return absl::OkStatus(); }
  absl::Status RemovePodAddress(const IpAddress&) override { return absl::OkStatus(); }
  absl::Status SetInboundListener(const IpAddress&, bpf::ListenerSlot, int) override {
    return absl::OkStatus();
  }
  absl::Status AnnounceDelivery(const SocketAddress&, const SocketAddress&) override {
    return absl::OkStatus();
  }
  absl::Status ForgetDelivery(const SocketAddress&, const SocketAddress&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<SocketAddress> TakeOriginalDestination(const SocketAddress&, uint64_t) override {
    return destination_;
  }
  absl::StatusOr<bpf::DataplaneSnapshot> Snapshot() const override {
    return bpf::DataplaneSnapshot{};
  }
  SocketAddress destination_;
};

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override { SetUpWith(/*passthrough=*/true); }

  void SetUpWith(bool passthrough) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
    absl::StatusOr<std::unique_ptr<capture::TestNetns>> netns = capture::TestNetns::Create();
    ASSERT_TRUE(netns.ok()) << netns.status();
    netns_ = *std::move(netns);
    char pattern[] = "/tmp/nodeward-data-plane-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    auto log = AccessLog::Open(dir_ + "/access.log");
    ASSERT_TRUE(log.ok()) << log.status();
    access_log_ = *std::move(log);
    ProxyOptions options = options_;
    options.passthrough = passthrough;
    options.workers = 1;
    auto plane = passthrough
                     ? DataPlane::Create(options, nullptr, nullptr, access_log_.get())
                     : DataPlane::Create(options, &config_, credentials_.get(), access_log_.get());
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = *std::move(plane);
    int probe = -1;
    ASSERT_TRUE(
        executor_.Run(netns_->fd(), [&] { probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); })
            .ok());
    absl::StatusOr<uint64_t> cookie = capture::NetnsCookieOfSocket(probe);
    close(probe);
    ASSERT_TRUE(cookie.ok());
    capture::PodMetadata metadata;
    metadata.namespace_name = "shop";
    metadata.name = "cart";
    metadata.service_account = "cart";
    metadata.ips = {literals::IpOf("10.9.9.9")};
    pod_ = std::make_shared<const capture::CapturedPod>(metadata, dup(netns_->fd()), *cookie,
                                                        &executor_, &dataplane_);
  }

  void TearDown() override {
    for (auto& listener : listeners_) listener->Close();
    plane_.reset();
    for (std::thread& thread : threads_) thread.join();
    if (!dir_.empty()) std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
  }

  // A listener inside the pod's netns on 127.0.0.1:`port` (0: any), served by the data plane.
  uint16_t Serve(capture::InPodListener::Kind kind, uint16_t port) {
    int fd = -1;
    EXPECT_TRUE(executor_
                    .Run(netns_->fd(),
                         [&] {
                           fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                           int one = 1;
                           setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                           sockaddr_storage storage;
                           const socklen_t length =
                               SocketAddress::Loopback4(port).ToSockaddr(&storage);
                           if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
                               listen(fd, 64) != 0) {
                             close(fd);
                             fd = -1;
                           }
                         })
                    .ok());
    EXPECT_GE(fd, 0);
    absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
    auto listener =
        std::make_shared<capture::InPodListener>(fd, kind, pod_, local->ToString(), &dataplane_);
    listeners_.push_back(listener);
    plane_->ServeListener(listener);
    return local->port;
  }

  // A blocking socket inside the pod's netns connected to 127.0.0.1:`port`.
  io::testing::Fd ConnectInPod(uint16_t port) {
    absl::StatusOr<int> fd = executor_.CreateSocket(netns_->fd(), AF_INET, SOCK_STREAM);
    EXPECT_TRUE(fd.ok());
    timeval timeout{5, 0};
    setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_storage storage;
    const socklen_t length = SocketAddress::Loopback4(port).ToSockaddr(&storage);
    EXPECT_EQ(connect(*fd, reinterpret_cast<sockaddr*>(&storage), length), 0);
    return io::testing::Fd(*fd);
  }

  // An echo server inside the pod's netns; returns its port.
  uint16_t StartEcho() {
    absl::StatusOr<int> fd = executor_.CreateSocket(netns_->fd(), AF_INET, SOCK_STREAM);
    sockaddr_storage storage;
    const socklen_t length = SocketAddress::Loopback4(0).ToSockaddr(&storage);
    EXPECT_EQ(bind(*fd, reinterpret_cast<sockaddr*>(&storage), length), 0);
    EXPECT_EQ(listen(*fd, 8), 0);
    const uint16_t port = io::testing::PortOf(*fd);
    threads_.emplace_back([listen_fd = *fd] {
      io::testing::Fd server(listen_fd);
      auto accepted = io::testing::AcceptOne(server.get());
      if (!accepted.ok()) return;
      auto data = io::testing::ReadToEof(accepted->get());
      if (data.ok()) (void)io::testing::WriteAll(accepted->get(), *data);
    });
    return port;
  }

  std::string AccessLogText() {
    std::ifstream in(dir_ + "/access.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  bool WaitFor(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    return done();
  }

  ProxyOptions options_;  // what SetUpWith starts the data plane with
  policy::SnapshotPublisher config_{"test"};
  std::unique_ptr<StaticMeshCredentials> credentials_;
  std::unique_ptr<capture::TestNetns> netns_;
  capture::NetnsExecutor executor_;
  FakeDataplane dataplane_{SocketAddress::Loopback4(1)};
  std::string dir_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<DataPlane> plane_;
  std::shared_ptr<const capture::CapturedPod> pod_;
  std::vector<std::shared_ptr<capture::InPodListener>> listeners_;
  std::vector<std::thread> threads_;
};

TEST_F(DataPlaneTest, AnOutboundConnectionIsCarriedBothWaysAndLogged) {
  const uint16_t echo = StartEcho();
  dataplane_.destination_ = SocketAddress::Loopback4(echo);
  const uint16_t outbound = Serve(capture::InPodListener::Kind::kOutbound, 0);
  io::testing::Fd client = ConnectInPod(outbound);
  const std::vector<uint8_t> payload = io::testing::RandomBytes(1 << 20, 3);
  ASSERT_TRUE(io::testing::WriteAll(client.get(), payload).ok());
  io::testing::ShutdownWrite(client.get());
  auto reply = io::testing::ReadToEof(client.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, payload);
  ASSERT_TRUE(WaitFor([&] { return plane_->live_connections() == 0; }));
  const std::string log = AccessLogText();
  EXPECT_THAT(log, HasSubstr(R"("direction":"outbound","source_workload":"shop/cart")"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat(R"("destination_address":"127.0.0.1:)", echo)));
  EXPECT_THAT(log, HasSubstr(R"("mode":"plaintext")"));
  EXPECT_THAT(log, HasSubstr(R"("result":"ok")"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat(R"("sent_bytes":)", payload.size())));
}

TEST_F(DataPlaneTest, AnUnreachableDestinationResetsTheClient) {
  const uint16_t outbound = Serve(capture::InPodListener::Kind::kOutbound, 0);
  io::testing::Fd client = ConnectInPod(outbound);
  io::testing::ShutdownWrite(client.get());
  auto reply = io::testing::ReadToEof(client.get());
  EXPECT_FALSE(reply.ok() && !reply->empty());
  ASSERT_TRUE(WaitFor([&] { return AccessLogText().find("result") != std::string::npos; }));
  EXPECT_THAT(AccessLogText(), HasSubstr(R"("result":"error")"));
  // The flow gives its live slot back after its log line, so the count may lag the line.
  EXPECT_TRUE(WaitFor([&] { return plane_->live_connections() == 0; }));
}

TEST_F(DataPlaneTest, PlaintextToTheAgentsOwnPortIsRefusedAtOnce) {
  const uint16_t inbound =
      Serve(capture::InPodListener::Kind::kInboundPlaintext, NW_PORT_INBOUND_PLAINTEXT);
  for (int i = 0; i < 20; ++i) {
    io::testing::Fd client = ConnectInPod(inbound);
    char byte;
    const ssize_t n = recv(client.get(), &byte, 1, 0);
    EXPECT_LE(n, 0) << "nothing answers on the agent's own port";
  }
  ASSERT_TRUE(WaitFor([&] { return plane_->live_connections() == 0; }));
  EXPECT_THAT(AccessLogText(), HasSubstr(R"("result":"refused","refusal":"agent_port")"));
  std::string metrics;
  plane_->metrics().Render(metrics);
  EXPECT_THAT(
      metrics,
      HasSubstr(
          R"(nodeward_connections_refused_total{direction="inbound",reason="agent_port"} 20)"));
}

TEST_F(DataPlaneTest, ALiveConnectionIsListedAndCutByDrain) {
  const uint16_t echo = StartEcho();
  dataplane_.destination_ = SocketAddress::Loopback4(echo);
  const uint16_t outbound = Serve(capture::InPodListener::Kind::kOutbound, 0);
  io::testing::Fd client = ConnectInPod(outbound);
  ASSERT_TRUE(WaitFor([&] { return plane_->Connections().size() == 1; }));
  const DataPlane::ConnectionInfo info = plane_->Connections()[0];
  EXPECT_EQ(info.record.direction, Direction::kOutbound);
  EXPECT_EQ(info.record.mode, Mode::kPlaintext);
  EXPECT_EQ(plane_->Drain(absl::Milliseconds(200)), 1u) << "the open connection outlives grace";
  // New connections are refused while draining.
  io::testing::Fd late = ConnectInPod(outbound);
  char byte;
  EXPECT_LE(recv(late.get(), &byte, 1, 0), 0);
  io::testing::ShutdownWrite(client.get());
}

// The pod's HBONE side with real certificates: CONNECTs the pod must never serve are answered
// 400 with the reason, and leave the tunnel up for the next.
class HboneInboundTest : public DataPlaneTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
    ASSERT_TRUE(ca_dir_.ok());
    auto ca = crypto::CertificateAuthority::LoadOrCreate(ca_dir_.path(), crypto::CaOptions{});
    ASSERT_TRUE(ca.ok()) << ca.status();
    auto bundle = crypto::TrustBundle::FromPem((*ca)->RootsPem());
    ASSERT_TRUE(bundle.ok());
    auto server = crypto::testing::IssueWorkload(**ca, server_id_);
    auto client = crypto::testing::IssueWorkload(**ca, client_id_);
    ASSERT_TRUE(server.ok() && client.ok());
    credentials_ = std::make_unique<StaticMeshCredentials>(*bundle);
    ASSERT_TRUE(credentials_->Set(server_id_, server->credentials()).ok());
    auto client_context = crypto::TlsContext::MeshClient(client->credentials(), *bundle);
    ASSERT_TRUE(client_context.ok());
    client_context_ = *client_context;
    auto snapshot = policy::Snapshot::Build({}, {});
    ASSERT_TRUE(snapshot.ok()) << snapshot.status();
    config_.Publish(*snapshot);
    SetUpWith(/*passthrough=*/false);
    auto loop = io::testing::NewLoop();
    ASSERT_TRUE(loop.ok()) << loop.status();
    loop_ = *std::move(loop);
  }

  void TearDown() override {
    if (client_ != nullptr) client_->Close(absl::CancelledError("test over"));
    if (loop_ != nullptr) (void)loop_->RunUntil([] { return false; }, absl::Milliseconds(50));
    DataPlaneTest::TearDown();
  }

  // A client tunnel from the test's loop to the pod's HBONE listener.
  void Connect(uint16_t port) {
    absl::StatusOr<int> fd = executor_.CreateSocket(netns_->fd(), AF_INET, SOCK_STREAM);
    ASSERT_TRUE(fd.ok());
    fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    io::Connection::ConnectSocket(*loop_, *fd, SocketAddress::Loopback4(port), absl::Seconds(5), {},
                                  [this](absl::StatusOr<std::shared_ptr<io::Connection>> wire) {
                                    ASSERT_TRUE(wire.ok()) << wire.status();
                                    crypto::TlsEngine::ClientOptions options;
                                    options.expected_peer = server_id_;
                                    auto tunnel = HboneTunnel::Start(
                                        HboneTunnel::Role::kClient, *wire,
                                        crypto::TlsEngine::Client(client_context_, options), {},
                                        nullptr, nullptr);
                                    ASSERT_TRUE(tunnel.ok()) << tunnel.status();
                                    client_ = *tunnel;
                                  });
    auto up = loop_->RunUntil([&] { return client_ != nullptr; }, absl::Seconds(5));
    ASSERT_TRUE(up.ok() && *up);
  }

  // CONNECT `authority`; returns how the stream ended.
  absl::Status Call(const std::string& authority) {
    auto stream = client_->OpenStream(authority);
    if (!stream.ok()) return stream.status();
    std::optional<absl::Status> ended;
    io::Stream::Callbacks callbacks;
    callbacks.on_closed = [&ended](const absl::Status& status) { ended = status; };
    (*stream)->Start(std::move(callbacks));
    auto done = loop_->RunUntil([&] { return ended.has_value(); }, absl::Seconds(5));
    if (!done.ok() || !*done) return absl::DeadlineExceededError("no answer");
    return *ended;
  }

  crypto::testing::TempDir ca_dir_;
  SpiffeId server_id_ = crypto::testing::Id("cluster.local", "shop", "cart");
  SpiffeId client_id_ = crypto::testing::Id("cluster.local", "web", "front");
  std::shared_ptr<const crypto::TlsContext> client_context_;
  std::unique_ptr<io::EventLoop> loop_;
  std::shared_ptr<HboneTunnel> client_;
};

TEST_F(HboneInboundTest, ConnectToTheAgentsOwnPortOrAnotherAddressIsA400) {
  const uint16_t tunnel_port = Serve(capture::InPodListener::Kind::kTunnel, 0);
  Connect(tunnel_port);
  for (int port :
       {NW_PORT_OUTBOUND, NW_PORT_INBOUND_PLAINTEXT, NW_PORT_TUNNEL, 15000, 15020, 15021}) {
    absl::Status answer = Call(absl::StrCat("10.9.9.9:", port));
    EXPECT_TRUE(absl::IsInvalidArgument(answer)) << port << ": " << answer;
    EXPECT_THAT(std::string(answer.message()), HasSubstr("agent's own")) << answer;
  }
  absl::Status elsewhere = Call("10.1.1.1:8080");
  EXPECT_TRUE(absl::IsInvalidArgument(elsewhere)) << elsewhere;
  EXPECT_THAT(std::string(elsewhere.message()), HasSubstr("not an address of pod shop/cart"));
  EXPECT_FALSE(client_->closed()) << "refused streams leave the tunnel up";
  ASSERT_TRUE(WaitFor([&] {
    return AccessLogText().find(R"("refusal":"not_a_pod_address")") != std::string::npos;
  }));
  const std::string log = AccessLogText();
  EXPECT_THAT(log, HasSubstr(R"("refusal":"agent_port")"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat(R"("source_principal":")", client_id_.ToString())));
}

// Clients that connect to 15008 and never finish TLS: each is closed at the handshake timeout,
// one source cannot hold more than its share, and the drops are counted.
class HandshakeLimitTest : public HboneInboundTest {
 protected:
  void SetUp() override {
    options_.handshakes.timeout = absl::Milliseconds(600);
    options_.handshakes.max_pending = 8;
    options_.handshakes.max_pending_per_source = 3;
    HboneInboundTest::SetUp();
  }

  std::string Metrics() {
    std::string metrics;
    plane_->metrics().Render(metrics);
    return metrics;
  }
};

TEST_F(HandshakeLimitTest, StalledHandshakesAreBoundedAndTimedOut) {
  const uint16_t tunnel_port = Serve(capture::InPodListener::Kind::kTunnel, 0);
  // Five bare TCP connections from one address, sending nothing.
  std::vector<io::testing::Fd> stalled;
  for (int i = 0; i < 5; ++i) stalled.push_back(ConnectInPod(tunnel_port));
  // Beyond the per-source share of 3, two are closed at once.
  ASSERT_TRUE(WaitFor([&] {
    return Metrics().find(
               R"(nodeward_handshakes_dropped_total{reason="pending_per_source_limit"} 2)") !=
           std::string::npos;
  })) << Metrics();
  const absl::Time start = absl::Now();
  // The three admitted are closed at the timeout; a byte read returns the end.
  for (io::testing::Fd& fd : stalled) {
    char byte;
    EXPECT_LE(recv(fd.get(), &byte, 1, 0), 0);
  }
  const absl::Duration waited = absl::Now() - start;
  EXPECT_LT(waited, absl::Seconds(4)) << "a stalled handshake outlived its timeout";
  ASSERT_TRUE(WaitFor([&] {
    return Metrics().find(R"(nodeward_handshakes_dropped_total{reason="timeout"} 3)") !=
           std::string::npos;
  })) << Metrics();
  // Their places came back: a real client's tunnel is served after them.
  Connect(tunnel_port);
  absl::Status answer = Call("10.9.9.9:15001");
  EXPECT_TRUE(absl::IsInvalidArgument(answer)) << answer;  // answered, so the tunnel is up
}

}  // namespace
}  // namespace nodeward::proxy
