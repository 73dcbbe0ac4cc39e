#include "agent/io/relay.h"

#include <sys/socket.h>

#include <atomic>
#include <deque>
#include <functional>
#include <thread>

#include "agent/io/io_test_util.h"
#include "agent/io/listener.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::io {
namespace {

using ::nodeward::io::testing::AcceptOne;
using ::nodeward::io::testing::ConnectLoopback;
using ::nodeward::io::testing::Fd;
using ::nodeward::io::testing::ListenLoopback;
using ::nodeward::io::testing::PortOf;
using ::nodeward::io::testing::RandomBytes;
using ::nodeward::io::testing::ReadToEof;
using ::nodeward::io::testing::WriteAll;

// A proxy under test: accepts on a loopback port and relays each connection to `backend_port`.
class RelayProxy {
 public:
  RelayProxy(EventLoop& loop, std::uint16_t backend_port, Connection::Options options)
      : loop_(loop), backend_port_(backend_port), options_(options) {
    Listener::Options listener_options;
    listener_options.connection = options;
    auto listener = Listener::Bind(
        loop, SocketAddress::Loopback4(0), listener_options,
        [this](std::shared_ptr<Connection> accepted) { OnAccepted(std::move(accepted)); });
    status_ = listener.status();
    if (listener.ok()) listener_ = std::move(*listener);
  }

  const absl::Status& status() const { return status_; }
  std::uint16_t port() const { return listener_->local_address().port; }
  const std::vector<Relay::Result>& results() const { return results_; }
  std::vector<std::shared_ptr<Relay>>& relays() { return relays_; }

 private:
  void OnAccepted(std::shared_ptr<Connection> accepted) {
    Connection::Connect(loop_, SocketAddress::Loopback4(backend_port_), absl::Seconds(5), options_,
                        [this, accepted](absl::StatusOr<std::shared_ptr<Connection>> upstream) {
                          if (!upstream.ok()) {
                            accepted->Close(upstream.status());
                            results_.push_back({upstream.status()});
                            return;
                          }
                          relays_.push_back(Relay::Start(
                              accepted, *upstream,
                              [this](const Relay::Result& result) { results_.push_back(result); }));
                        });
  }

  EventLoop& loop_;
  std::uint16_t backend_port_;
  Connection::Options options_;
  absl::Status status_;
  std::unique_ptr<Listener> listener_;
  std::vector<Relay::Result> results_;
  std::vector<std::shared_ptr<Relay>> relays_;
};

// One side of a two-way exchange: writes `out` then half-closes while reading to EOF.
struct Endpoint {
  explicit Endpoint(std::vector<std::uint8_t> out, std::size_t read_pause_every = 0,
                    absl::Duration read_pause = absl::ZeroDuration())
      : out(std::move(out)), read_pause_every(read_pause_every), read_pause(read_pause) {}

  std::vector<std::uint8_t> out;
  absl::StatusOr<std::vector<std::uint8_t>> in = absl::UnknownError("exchange did not run");
  absl::Status write_status;
  std::size_t read_pause_every;
  absl::Duration read_pause;

  void Exchange(int fd) {
    std::thread writer([&] {
      write_status = WriteAll(fd, out);
      testing::ShutdownWrite(fd);
    });
    in = ReadToEof(fd, read_pause_every, read_pause);
    writer.join();
  }
};

TEST(RelayTest, RelaysEightMebibytesBothWaysWithHalfClose) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  RelayProxy proxy(*loop, PortOf(backend->get()), {});
  ASSERT_TRUE(proxy.status().ok()) << proxy.status();

  Endpoint client(RandomBytes(8 << 20, 7));
  Endpoint server(RandomBytes(8 << 20, 8));
  std::atomic<int> finished{0};
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    if (fd.ok())
      client.Exchange(fd->get());
    else
      client.in = fd.status();
    ++finished;
  });
  std::thread server_thread([&] {
    auto fd = AcceptOne(backend->get());
    if (fd.ok())
      server.Exchange(fd->get());
    else
      server.in = fd.status();
    ++finished;
  });
  auto done = loop->RunUntil([&] { return finished == 2 && proxy.results().size() == 1; },
                             absl::Seconds(60));
  client_thread.join();
  server_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  ASSERT_TRUE(client.in.ok()) << client.in.status();
  ASSERT_TRUE(server.in.ok()) << server.in.status();
  EXPECT_TRUE(client.write_status.ok()) << client.write_status;
  EXPECT_TRUE(server.write_status.ok()) << server.write_status;
  EXPECT_EQ(client.in->size(), server.out.size());
  EXPECT_TRUE(*client.in == server.out);
  EXPECT_EQ(server.in->size(), client.out.size());
  EXPECT_TRUE(*server.in == client.out);
  const Relay::Result& result = proxy.results()[0];
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.a_to_b_bytes, client.out.size());
  EXPECT_EQ(result.b_to_a_bytes, server.out.size());
}

// One client through `proxy` to the backend listening on `backend_fd`: `size` random bytes
// each way, checked on both ends, the relay's result recorded.
void ExchangeThrough(EventLoop& loop, RelayProxy& proxy, int backend_fd, std::size_t size,
                     std::uint32_t seed) {
  Endpoint client(RandomBytes(size, seed));
  Endpoint server(RandomBytes(size, seed + 100));
  const std::size_t results_before = proxy.results().size();
  std::atomic<int> finished{0};
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    if (fd.ok()) client.Exchange(fd->get());
    ++finished;
  });
  std::thread server_thread([&] {
    auto fd = AcceptOne(backend_fd);
    if (fd.ok()) server.Exchange(fd->get());
    ++finished;
  });
  auto done = loop.RunUntil(
      [&] { return finished == 2 && proxy.results().size() > results_before; }, absl::Seconds(60));
  client_thread.join();
  server_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  ASSERT_TRUE(client.in.ok() && server.in.ok());
  EXPECT_TRUE(*server.in == client.out);
  EXPECT_TRUE(*client.in == server.out);
}

TEST(RelayTest, TinyBufferRingStillRelaysEverything) {
  // Four 4 KiB receive buffers shared by both directions: receives run out of buffers
  // (-ENOBUFS) all the time and must resume when one is handed back.
  EventLoop::Options loop_options;
  loop_options.buffer_count = 4;
  loop_options.buffer_size = 4096;
  NODEWARD_LOOP_OR_SKIP(loop, loop_options);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  RelayProxy proxy(*loop, PortOf(backend->get()), {});
  ASSERT_TRUE(proxy.status().ok());

  ExchangeThrough(*loop, proxy, backend->get(), 2 << 20, 31);
  ASSERT_EQ(proxy.results().size(), 1u);
  EXPECT_TRUE(proxy.results()[0].status.ok()) << proxy.results()[0].status;
  EXPECT_EQ(loop->buffers().available(), loop->buffers().count());
}

// Receive buffers whose pages were dropped while idle fill again like fresh ones.
TEST(RelayTest, RelaysAfterAnIdleTrimAsBefore) {
  EventLoop::Options loop_options;
  loop_options.idle_trim_interval = absl::Milliseconds(20);
  NODEWARD_LOOP_OR_SKIP(loop, loop_options);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  RelayProxy proxy(*loop, PortOf(backend->get()), {});
  ASSERT_TRUE(proxy.status().ok());
  std::uint64_t trims_before_last_exchange = 0;
  for (int round = 0; round < 2; ++round) {
    // A quiet spell since the last exchange began has dropped the buffers' pages.
    auto trimmed = loop->RunUntil([&] { return loop->idle_trims() > trims_before_last_exchange; },
                                  absl::Seconds(5));
    ASSERT_TRUE(trimmed.ok() && *trimmed);
    trims_before_last_exchange = loop->idle_trims();
    ExchangeThrough(*loop, proxy, backend->get(), 1 << 20, 41 + round);
  }
}

TEST(RelayTest, HalfCloseInEachDirectionIsForwarded) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  RelayProxy proxy(*loop, PortOf(backend->get()), {});
  ASSERT_TRUE(proxy.status().ok());

  // Request/response: the server answers only after it saw the client's EOF, and the client
  // keeps reading after its own half-close.
  absl::StatusOr<std::vector<std::uint8_t>> request;
  absl::StatusOr<std::vector<std::uint8_t>> response;
  std::atomic<int> finished{0};
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    if (fd.ok()) {
      (void)WriteAll(fd->get(), {'p', 'i', 'n', 'g'});
      testing::ShutdownWrite(fd->get());
      response = ReadToEof(fd->get());
    } else {
      response = fd.status();
    }
    ++finished;
  });
  std::thread server_thread([&] {
    auto fd = AcceptOne(backend->get());
    if (fd.ok()) {
      request = ReadToEof(fd->get());
      (void)WriteAll(fd->get(), {'p', 'o', 'n', 'g'});
      testing::ShutdownWrite(fd->get());
      // Wait for the relay to close its side before closing ours.
      (void)ReadToEof(fd->get());
    } else {
      request = fd.status();
    }
    ++finished;
  });
  auto done =
      loop->RunUntil([&] { return finished == 2 && !proxy.results().empty(); }, absl::Seconds(20));
  client_thread.join();
  server_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(std::string(request->begin(), request->end()), "ping");
  EXPECT_EQ(std::string(response->begin(), response->end()), "pong");
  EXPECT_TRUE(proxy.results()[0].status.ok()) << proxy.results()[0].status;
}

TEST(RelayTest, SlowReaderKeepsRelayMemoryWithinBudget) {
  EventLoop::Options loop_options;
  loop_options.buffer_count = 256;
  loop_options.buffer_size = 16 * 1024;
  NODEWARD_LOOP_OR_SKIP(loop, loop_options);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  Connection::Options options;
  options.send_high_water = 128 * 1024;
  RelayProxy proxy(*loop, PortOf(backend->get()), options);
  ASSERT_TRUE(proxy.status().ok());

  // Budget: the high-water mark plus one receive buffer, since each receive is capped by the
  // room left under the mark. Kernels without capped multishot receives can overshoot by
  // whatever one receive burst takes from the shared ring.
  const std::size_t budget =
      options.send_high_water + (loop->receive_limit_supported()
                                     ? loop_options.buffer_size
                                     : loop_options.buffer_count * loop_options.buffer_size);
  Endpoint client(RandomBytes(24 << 20, 3));
  Endpoint server({}, /*read_pause_every=*/256 * 1024, /*read_pause=*/absl::Milliseconds(5));
  std::atomic<int> finished{0};
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    if (fd.ok()) client.Exchange(fd->get());
    ++finished;
  });
  std::thread server_thread([&] {
    auto fd = AcceptOne(backend->get());
    if (fd.ok()) {
      // A small receive buffer so the slow reader pushes back on the relay quickly.
      const int small = 64 * 1024;
      setsockopt(fd->get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
      server.Exchange(fd->get());
    }
    ++finished;
  });
  std::size_t max_seen = 0;
  auto done = loop->RunUntil(
      [&] {
        for (auto& relay : proxy.relays()) max_seen = std::max(max_seen, relay->buffered_bytes());
        return finished == 2 && proxy.results().size() == 1;
      },
      absl::Seconds(90));
  client_thread.join();
  server_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  ASSERT_TRUE(server.in.ok()) << server.in.status();
  EXPECT_TRUE(*server.in == client.out);
  const Relay::Result& result = proxy.results()[0];
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_LE(result.peak_buffered_bytes, budget);
  EXPECT_LE(max_seen, result.peak_buffered_bytes);
  // The reader was slow enough that the relay must have reached its high-water mark.
  EXPECT_GE(result.peak_buffered_bytes, options.send_high_water);
  RecordProperty("peak_buffered_bytes", static_cast<int>(result.peak_buffered_bytes));
  RecordProperty("receive_limit_supported", loop->receive_limit_supported());
}

TEST(RelayTest, UnreachableBackendClosesTheClient) {
  NODEWARD_LOOP_OR_SKIP(loop);
  std::uint16_t dead_port;
  {
    auto closed = ListenLoopback();
    ASSERT_TRUE(closed.ok());
    dead_port = PortOf(closed->get());
  }
  RelayProxy proxy(*loop, dead_port, {});
  ASSERT_TRUE(proxy.status().ok());
  absl::StatusOr<std::vector<std::uint8_t>> response;
  std::atomic<bool> finished{false};
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    response = fd.ok() ? ReadToEof(fd->get()) : fd.status();
    finished = true;
  });
  auto done = loop->RunUntil([&] { return finished.load(); }, absl::Seconds(20));
  client_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(response->empty());
  ASSERT_EQ(proxy.results().size(), 1u);
  EXPECT_EQ(proxy.results()[0].status.code(), absl::StatusCode::kUnavailable);
}

TEST(RelayTest, ResetByOnePeerCutsTheOther) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  RelayProxy proxy(*loop, PortOf(backend->get()), {});
  ASSERT_TRUE(proxy.status().ok());
  absl::StatusOr<std::vector<std::uint8_t>> client_saw;
  std::atomic<int> finished{0};
  std::thread server_thread([&] {
    auto fd = AcceptOne(backend->get());
    if (fd.ok()) {
      // SO_LINGER 0: close sends a reset instead of a FIN.
      linger hard{.l_onoff = 1, .l_linger = 0};
      setsockopt(fd->get(), SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    }
    ++finished;
  });
  std::thread client_thread([&] {
    auto fd = ConnectLoopback(proxy.port());
    client_saw = fd.ok() ? ReadToEof(fd->get()) : fd.status();
    ++finished;
  });
  auto done =
      loop->RunUntil([&] { return finished == 2 && !proxy.results().empty(); }, absl::Seconds(20));
  client_thread.join();
  server_thread.join();
  ASSERT_TRUE(done.ok() && *done);
  EXPECT_FALSE(proxy.results()[0].status.ok());
}

}  // namespace
}  // namespace nodeward::io
