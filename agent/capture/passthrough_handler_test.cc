#include "agent/capture/passthrough_handler.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/capture/test_netns.h"
#include "bpf/nodeward_maps.h"
#include "gtest/gtest.h"

namespace nodeward::capture {
namespace {

SocketAddress Loopback(uint16_t port) { return {IpAddress::V4(htonl(INADDR_LOOPBACK)), port}; }

// Reads until end of stream (or an error, or 5 s of silence); returns what arrived.
std::string ReadAll(int fd) {
  std::string data;
  char buffer[65536];
  while (true) {
    pollfd entry{fd, POLLIN, 0};
    if (poll(&entry, 1, 5000) <= 0) break;
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    data.append(buffer, n);
  }
  return data;
}

void WriteAll(int fd, const std::string& data) {
  size_t offset = 0;
  while (offset < data.size()) {
    ssize_t n = send(fd, data.data() + offset, data.size() - offset, MSG_NOSIGNAL);
    if (n <= 0) return;
    offset += n;
  }
}

// A server inside the test netns that, per connection, reads to end of stream and only then
// answers "<bytes received>:<first bytes>", which proves half-close is passed on.
class CountingServer {
 public:
  explicit CountingServer(NetnsExecutor& executor, int netns_fd) {
    absl::StatusOr<int> fd = executor.CreateSocket(netns_fd, AF_INET, SOCK_STREAM);
    listen_fd_ = fd.ok() ? *fd : -1;
    sockaddr_storage storage;
    socklen_t length = Loopback(0).ToSockaddr(&storage);
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
        listen(listen_fd_, 16) != 0) {
      return;
    }
    port_ = SocketAddress::LocalOf(listen_fd_)->port;
    thread_ = std::thread([this] {
      while (true) {
        int connection = accept(listen_fd_, nullptr, nullptr);
        if (connection < 0) return;
        std::string data = ReadAll(connection);
        WriteAll(connection, absl::StrCat(data.size(), ":", data.substr(0, 16)));
        close(connection);
      }
    });
  }
  ~CountingServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    close(listen_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

class PassthroughHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces and SO_MARK";
    absl::StatusOr<std::unique_ptr<TestNetns>> netns = TestNetns::Create();
    ASSERT_TRUE(netns.ok()) << netns.status();
    netns_ = std::move(*netns);
    int pod_netns = open(netns_->path().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(pod_netns, 0);
    PodMetadata metadata;
    metadata.namespace_name = "shop";
    metadata.name = "cart-1";
    pod_ = std::make_shared<CapturedPod>(metadata, pod_netns, 1, &executor_);
    absl::StatusOr<std::unique_ptr<PassthroughHandler>> handler =
        PassthroughHandler::Create({.buffer_bytes = 4096, .connect_timeout = absl::Seconds(2)});
    ASSERT_TRUE(handler.ok());
    handler_ = std::move(*handler);
  }

  // A connected TCP pair inside the pod netns: {client, accepted}.
  std::pair<int, int> TcpPair() {
    absl::StatusOr<int> listener = executor_.CreateSocket(netns_->fd(), AF_INET, SOCK_STREAM);
    absl::StatusOr<int> client = executor_.CreateSocket(netns_->fd(), AF_INET, SOCK_STREAM);
    if (!listener.ok() || !client.ok()) return {-1, -1};
    sockaddr_storage storage;
    socklen_t length = Loopback(0).ToSockaddr(&storage);
    bind(*listener, reinterpret_cast<sockaddr*>(&storage), length);
    listen(*listener, 1);
    length = Loopback(SocketAddress::LocalOf(*listener)->port).ToSockaddr(&storage);
    connect(*client, reinterpret_cast<sockaddr*>(&storage), length);
    int accepted = accept4(*listener, nullptr, nullptr, SOCK_NONBLOCK);
    close(*listener);
    return {*client, accepted};
  }

  NetnsExecutor executor_;
  std::unique_ptr<TestNetns> netns_;
  std::shared_ptr<const CapturedPod> pod_;
  std::unique_ptr<PassthroughHandler> handler_;
};

TEST_F(PassthroughHandlerTest, OutboundRelaysBothWaysAndPassesOnHalfClose) {
  CountingServer server(executor_, netns_->fd());
  ASSERT_NE(server.port(), 0);
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  handler_->OnOutbound(pod_, pair[1], Loopback(server.port()));
  int app = pair[0];
  int flags = fcntl(app, F_GETFL);
  fcntl(app, F_SETFL, flags & ~O_NONBLOCK);
  WriteAll(app, "hello");
  shutdown(app, SHUT_WR);
  EXPECT_EQ(ReadAll(app), "5:hello");
  close(app);
}

TEST_F(PassthroughHandlerTest, MovesMoreThanTheBufferWithBoundedMemory) {
  CountingServer server(executor_, netns_->fd());
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  int flags = fcntl(pair[1], F_GETFL);
  fcntl(pair[1], F_SETFL, flags | O_NONBLOCK);
  handler_->OnOutbound(pod_, pair[1], Loopback(server.port()));
  std::string payload(3 * 1024 * 1024, 'x');
  payload.replace(0, 6, "begin:");
  std::thread writer([&] {
    WriteAll(pair[0], payload);
    shutdown(pair[0], SHUT_WR);
  });
  std::string reply = ReadAll(pair[0]);
  writer.join();
  EXPECT_EQ(reply, absl::StrCat(payload.size(), ":", payload.substr(0, 16)));
  close(pair[0]);
}

TEST_F(PassthroughHandlerTest, InboundIsDeliveredToLoopbackInThePod) {
  CountingServer server(executor_, netns_->fd());
  auto [peer, accepted] = TcpPair();
  ASSERT_GE(accepted, 0);
  handler_->OnInbound(pod_, accepted, server.port(), false);
  WriteAll(peer, "inbound");
  shutdown(peer, SHUT_WR);
  EXPECT_EQ(ReadAll(peer), "7:inbound");
  close(peer);
}

TEST_F(PassthroughHandlerTest, RefusedUpstreamClosesTheClient) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  // Nothing listens on this port in the fresh netns.
  handler_->OnOutbound(pod_, pair[1], Loopback(9));
  EXPECT_EQ(ReadAll(pair[0]), "");
  close(pair[0]);
  for (int i = 0; i < 100 && handler_->active_connections() > 0; ++i) usleep(10000);
  EXPECT_EQ(handler_->active_connections(), 0u);
}

TEST_F(PassthroughHandlerTest, TunnelPortAndAgentPortsAreRefused) {
  for (auto [port, tunnel] : {std::pair<uint16_t, bool>{NW_PORT_TUNNEL, true},
                              {NW_PORT_INBOUND_PLAINTEXT, false},
                              {NW_PORT_OUTBOUND, false}}) {
    auto [peer, accepted] = TcpPair();
    ASSERT_GE(accepted, 0);
    handler_->OnInbound(pod_, accepted, port, tunnel);
    EXPECT_EQ(ReadAll(peer), "") << port;
    close(peer);
  }
  EXPECT_EQ(handler_->active_connections(), 0u);
}

}  // namespace
}  // namespace nodeward::capture
