#include "agent/io/connection.h"

#include <fcntl.h>
#include <sys/socket.h>

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
using ::testing::HasSubstr;

// Echoes every byte back and half-closes after the client does.
void Echo(std::shared_ptr<Connection> connection) {
  Connection* raw = connection.get();
  Connection::Callbacks callbacks;
  callbacks.on_data = [raw](IoBuffer chunk) { raw->Send(std::move(chunk)); };
  callbacks.on_read_eof = [raw] { raw->ShutdownWrite(); };
  callbacks.on_write_closed = [raw] { raw->Close(); };
  connection->Start(std::move(callbacks));
}

TEST(ConnectionTest, EchoesThroughAcceptedConnection) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto listener = Listener::Bind(*loop, SocketAddress::Loopback4(0), {}, Echo);
  ASSERT_TRUE(listener.ok()) << listener.status();
  const std::uint16_t port = (*listener)->local_address().port;

  const std::vector<std::uint8_t> sent = RandomBytes(1 << 20, 1);
  absl::StatusOr<std::vector<std::uint8_t>> echoed;
  std::atomic<bool> done{false};
  std::thread client([&] {
    auto fd = ConnectLoopback(port);
    if (!fd.ok()) {
      echoed = fd.status();
    } else {
      std::thread writer([&] {
        (void)WriteAll(fd->get(), sent);
        testing::ShutdownWrite(fd->get());
      });
      echoed = ReadToEof(fd->get());
      writer.join();
    }
    done = true;
  });
  auto finished = loop->RunUntil([&] { return done.load(); }, absl::Seconds(30));
  client.join();
  ASSERT_TRUE(finished.ok() && *finished);
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_TRUE(*echoed == sent);
  ASSERT_TRUE(
      loop->RunUntil([&] { return (*listener)->active_connections() == 0; }, absl::Seconds(5))
          .value_or(false));
  EXPECT_EQ((*listener)->stats().accepted, 1u);
}

TEST(ConnectionTest, ConnectRefusedIsUnavailable) {
  NODEWARD_LOOP_OR_SKIP(loop);
  std::uint16_t port;
  {
    auto closed = ListenLoopback();
    ASSERT_TRUE(closed.ok());
    port = PortOf(closed->get());
  }
  std::optional<absl::Status> result;
  Connection::Connect(*loop, SocketAddress::Loopback4(port), absl::Seconds(5), {},
                      [&](absl::StatusOr<std::shared_ptr<Connection>> connection) {
                        result = connection.status();
                      });
  ASSERT_TRUE(
      loop->RunUntil([&] { return result.has_value(); }, absl::Seconds(10)).value_or(false));
  EXPECT_EQ(result->code(), absl::StatusCode::kUnavailable) << *result;
  EXPECT_THAT(result->message(), HasSubstr("refused"));
}

TEST(ConnectionTest, ConnectTimesOutWhenThePeerNeverAnswers) {
  NODEWARD_LOOP_OR_SKIP(loop);
  // A listener whose accept queue is full drops further SYNs, so the next connect hangs.
  auto listener = ListenLoopback(/*backlog=*/0);
  ASSERT_TRUE(listener.ok());
  const std::uint16_t port = PortOf(listener->get());
  std::vector<Fd> fillers;
  for (int i = 0; i < 4; ++i) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const SocketAddress address = SocketAddress::Loopback4(port);
    sockaddr_storage storage;
    const socklen_t length = address.ToSockaddr(&storage);
    connect(fd.get(), reinterpret_cast<const sockaddr*>(&storage), length);
    fillers.push_back(std::move(fd));
  }
  absl::SleepFor(absl::Milliseconds(50));

  std::optional<absl::Status> result;
  const absl::Time start = absl::Now();
  Connection::Connect(*loop, SocketAddress::Loopback4(port), absl::Milliseconds(200), {},
                      [&](absl::StatusOr<std::shared_ptr<Connection>> connection) {
                        result = connection.status();
                      });
  ASSERT_TRUE(
      loop->RunUntil([&] { return result.has_value(); }, absl::Seconds(10)).value_or(false));
  EXPECT_EQ(result->code(), absl::StatusCode::kDeadlineExceeded) << *result;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(ConnectionTest, IdleConnectionIsClosedWithDeadlineExceeded) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  Connection::Options options;
  options.idle_timeout = absl::Milliseconds(100);
  std::shared_ptr<Connection> connection;
  std::optional<absl::Status> closed;
  Connection::Connect(*loop, SocketAddress::Loopback4(PortOf(backend->get())), absl::Seconds(5),
                      options, [&](absl::StatusOr<std::shared_ptr<Connection>> result) {
                        ASSERT_TRUE(result.ok()) << result.status();
                        connection = *result;
                        Connection::Callbacks callbacks;
                        callbacks.on_closed = [&](const absl::Status& status) { closed = status; };
                        connection->Start(std::move(callbacks));
                      });
  ASSERT_TRUE(
      loop->RunUntil([&] { return connection != nullptr; }, absl::Seconds(5)).value_or(false));
  auto peer = AcceptOne(backend->get());
  ASSERT_TRUE(peer.ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(loop->RunUntil([&] { return closed.has_value(); }, absl::Seconds(5)).value_or(false));
  EXPECT_EQ(closed->code(), absl::StatusCode::kDeadlineExceeded) << *closed;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  // The peer sees the close.
  auto rest = ReadToEof(peer->get());
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->empty());
  connection.reset();
}

TEST(ConnectionTest, ActivityPostponesTheIdleTimeout) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto backend = ListenLoopback();
  ASSERT_TRUE(backend.ok());
  Connection::Options options;
  options.idle_timeout = absl::Milliseconds(150);
  std::shared_ptr<Connection> connection;
  std::optional<absl::Status> closed;
  Connection::Connect(*loop, SocketAddress::Loopback4(PortOf(backend->get())), absl::Seconds(5),
                      options, [&](absl::StatusOr<std::shared_ptr<Connection>> result) {
                        ASSERT_TRUE(result.ok());
                        connection = *result;
                        Connection::Callbacks callbacks;
                        callbacks.on_closed = [&](const absl::Status& status) { closed = status; };
                        connection->Start(std::move(callbacks));
                      });
  ASSERT_TRUE(
      loop->RunUntil([&] { return connection != nullptr; }, absl::Seconds(5)).value_or(false));
  auto peer = AcceptOne(backend->get());
  ASSERT_TRUE(peer.ok());
  // Keep it busy for 4 timeouts' worth of time.
  const absl::Time busy_until = absl::Now() + absl::Milliseconds(600);
  while (absl::Now() < busy_until) {
    ASSERT_EQ(send(peer->get(), "x", 1, MSG_NOSIGNAL), 1);
    ASSERT_TRUE(loop->RunUntil([] { return false; }, absl::Milliseconds(50)).ok());
    ASSERT_FALSE(closed.has_value()) << *closed;
  }
  ASSERT_TRUE(loop->RunUntil([&] { return closed.has_value(); }, absl::Seconds(5)).value_or(false));
  EXPECT_EQ(closed->code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GT(connection->stats().bytes_received, 5u);
  connection.reset();
}

// A non-blocking socket whose send buffer stays full for a while: everything still arrives, in
// order. io_uring honours O_NONBLOCK and may complete such a send with EAGAIN (seen end to end
// with a slow application reader); whether it does here depends on timing, so this checks the
// outcome the agent needs either way: no error, every byte, in order.
TEST(ConnectionTest, NonBlockingSocketToASlowReaderDeliversEverything) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto listener = ListenLoopback();
  ASSERT_TRUE(listener.ok());
  auto client = ConnectLoopback(PortOf(listener->get()));
  ASSERT_TRUE(client.ok());
  auto server = AcceptOne(listener->get());
  ASSERT_TRUE(server.ok());
  const int small = 16 * 1024;
  ASSERT_EQ(setsockopt(client->get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(setsockopt(server->get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(fcntl(client->get(), F_SETFL, fcntl(client->get(), F_GETFL) | O_NONBLOCK), 0);
  std::shared_ptr<Connection> connection = Connection::Adopt(*loop, client->release(), {});
  std::optional<absl::Status> closed;
  Connection::Callbacks callbacks;
  callbacks.on_closed = [&](const absl::Status& status) { closed = status; };
  connection->Start(std::move(callbacks));
  const std::vector<std::uint8_t> sent = RandomBytes(4 << 20, 5);
  connection->Send(IoBuffer::Copy(absl::MakeConstSpan(sent)));
  connection->ShutdownWrite();
  // Nobody reads for a while: both kernel buffers fill up.
  ASSERT_TRUE(loop->RunUntil([] { return false; }, absl::Milliseconds(300)).ok());
  ASSERT_FALSE(closed.has_value()) << *closed;
  absl::StatusOr<std::vector<std::uint8_t>> received;
  std::thread reader(
      [&] { received = ReadToEof(server->get(), 64 * 1024, absl::Milliseconds(1)); });
  const bool done = loop->RunUntil([&] { return connection->write_closed() || closed.has_value(); },
                                   absl::Seconds(30))
                        .value_or(false);
  reader.join();
  ASSERT_TRUE(done);
  ASSERT_FALSE(closed.has_value()) << *closed;
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_TRUE(*received == sent);
  EXPECT_EQ(connection->stats().bytes_sent, sent.size());
  connection->Close();
}

TEST(ListenerTest, ConnectionsBeyondTheCapAreClosedAtOnce) {
  NODEWARD_LOOP_OR_SKIP(loop);
  Listener::Options options;
  options.max_connections = 2;
  std::vector<std::shared_ptr<Connection>> held;
  auto listener = Listener::Bind(*loop, SocketAddress::Loopback4(0), options,
                                 [&](std::shared_ptr<Connection> connection) {
                                   connection->Start({});
                                   held.push_back(std::move(connection));
                                 });
  ASSERT_TRUE(listener.ok()) << listener.status();
  const std::uint16_t port = (*listener)->local_address().port;
  std::vector<Fd> clients;
  for (int i = 0; i < 3; ++i) {
    auto fd = ConnectLoopback(port);
    ASSERT_TRUE(fd.ok());
    clients.push_back(std::move(*fd));
  }
  ASSERT_TRUE(
      loop->RunUntil([&] { return (*listener)->stats().rejected_over_cap == 1; }, absl::Seconds(5))
          .value_or(false));
  EXPECT_EQ((*listener)->stats().accepted, 2u);
  EXPECT_EQ((*listener)->active_connections(), 2u);
  // The third client is the one turned away: it reads EOF.
  auto rest = ReadToEof(clients[2].get());
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_TRUE(rest->empty());

  // Closing one frees a slot.
  held[0]->Close();
  auto fourth = ConnectLoopback(port);
  ASSERT_TRUE(fourth.ok());
  ASSERT_TRUE(loop->RunUntil([&] { return (*listener)->stats().accepted == 3; }, absl::Seconds(5))
                  .value_or(false));
  for (auto& connection : held) connection->Close();
  held.clear();
}

TEST(ListenerTest, DrainWaitsForConnectionsThatFinishInTime) {
  NODEWARD_LOOP_OR_SKIP(loop);
  auto listener = Listener::Bind(*loop, SocketAddress::Loopback4(0), {}, Echo);
  ASSERT_TRUE(listener.ok());
  const std::uint16_t port = (*listener)->local_address().port;
  auto client = ConnectLoopback(port);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(
      loop->RunUntil([&] { return (*listener)->active_connections() == 1; }, absl::Seconds(5))
          .value_or(false));

  bool drained = false;
  const absl::Time start = absl::Now();
  (*listener)->Drain(absl::Seconds(20), [&] { drained = true; });
  // New connections are refused once draining.
  EXPECT_FALSE(ConnectLoopback(port).ok());
  ASSERT_TRUE(loop->RunUntil([] { return false; }, absl::Milliseconds(100)).ok());
  EXPECT_FALSE(drained);
  // The in-flight exchange completes normally, then the drain ends well before its deadline.
  ASSERT_EQ(send(client->get(), "bye", 3, MSG_NOSIGNAL), 3);
  testing::ShutdownWrite(client->get());
  ASSERT_TRUE(loop->RunUntil([&] { return drained; }, absl::Seconds(5)).value_or(false));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  auto echoed = ReadToEof(client->get());
  ASSERT_TRUE(echoed.ok());
  EXPECT_EQ(std::string(echoed->begin(), echoed->end()), "bye");
}

TEST(ListenerTest, DrainClosesWhatIsLeftAtTheDeadline) {
  NODEWARD_LOOP_OR_SKIP(loop);
  std::optional<absl::Status> closed;
  auto listener = Listener::Bind(
      *loop, SocketAddress::Loopback4(0), {}, [&](std::shared_ptr<Connection> connection) {
        Connection::Callbacks callbacks;
        callbacks.on_closed = [&](const absl::Status& status) { closed = status; };
        connection->Start(std::move(callbacks));
      });
  ASSERT_TRUE(listener.ok());
  auto client = ConnectLoopback((*listener)->local_address().port);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(
      loop->RunUntil([&] { return (*listener)->active_connections() == 1; }, absl::Seconds(5))
          .value_or(false));
  bool drained = false;
  const absl::Time start = absl::Now();
  (*listener)->Drain(absl::Milliseconds(150), [&] { drained = true; });
  ASSERT_TRUE(loop->RunUntil([&] { return drained; }, absl::Seconds(5)).value_or(false));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(140));
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->code(), absl::StatusCode::kAborted);
  EXPECT_EQ((*listener)->active_connections(), 0u);
  auto rest = ReadToEof(client->get());
  ASSERT_TRUE(rest.ok());
  EXPECT_TRUE(rest->empty());
}

}  // namespace
}  // namespace nodeward::io
