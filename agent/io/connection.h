// A TCP connection driven by an EventLoop: multishot receive into provided buffers, a bounded
// send queue with a high-water mark, half-close, idle timeout and byte counters. Loop-thread
// only. Held by shared_ptr: in-flight operations keep it alive until their final completion.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/io/buffer_queue.h"
#include "agent/io/event_loop.h"
#include "agent/io/io_buffer.h"
#include "agent/io/socket.h"
#include "agent/io/stream.h"

namespace nodeward::io {

class Connection : public Stream, public std::enable_shared_from_this<Connection> {
 public:
  struct Options {
    // Above this many queued bytes, producers should stop feeding Send() (see over_high_water()
    // and Callbacks::on_send_drained).
    std::size_t send_high_water = 256 * 1024;
    // Closed with DEADLINE_EXCEEDED after this long without any byte moving either way.
    absl::Duration idle_timeout = absl::InfiniteDuration();
    // SO_MARK for outgoing connections (0: unset).
    std::uint32_t socket_mark = 0;
    // False when the socket already has TCP_NODELAY (made with it, or accepted from a listener
    // that has it), which saves a system call per connection.
    bool set_nodelay = true;
  };

  using Callbacks = Stream::Callbacks;
  using Stats = Stream::Stats;

  // Takes ownership of a connected socket.
  static std::shared_ptr<Connection> Adopt(EventLoop& loop, int fd, const Options& options);

  using ConnectCallback = absl::AnyInvocable<void(absl::StatusOr<std::shared_ptr<Connection>>)>;
  // Connects asynchronously; fails with DEADLINE_EXCEEDED past `timeout`, UNAVAILABLE when
  // refused or unreachable.
  static void Connect(EventLoop& loop, const SocketAddress& peer, absl::Duration timeout,
                      const Options& options, ConnectCallback done);
  // As Connect, on a TCP socket the caller created (e.g. inside another network namespace);
  // takes ownership of `fd` whatever the outcome.
  static void ConnectSocket(EventLoop& loop, int fd, const SocketAddress& peer,
                            absl::Duration timeout, const Options& options, ConnectCallback done);

  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts receiving and the idle timer.
  void Start(Callbacks callbacks) override;
  // Stops delivering on_data as soon as the kernel acknowledges (buffers already received are
  // still delivered). Idempotent.
  void PauseReading() override;
  void ResumeReading() override;
  bool reading_paused() const override { return paused_; }
  // The receiver made room: start receiving again if it had stopped for lack of it.
  void ReceiveRoomChanged() override { ArmReceive(); }

  // Queues bytes; they are sent in order, several chunks per sendmsg.
  void Send(IoBuffer chunk) override;
  std::size_t queued_bytes() const override { return queued_bytes_; }
  std::size_t send_high_water() const override { return options_.send_high_water; }
  // shutdown(SHUT_WR) once the queue is empty.
  void ShutdownWrite() override;
  bool write_closed() const override { return write_closed_; }
  bool read_eof() const { return read_eof_; }

  // Cancels everything in flight and closes the socket; on_closed runs with `reason`.
  void Close(const absl::Status& reason = absl::OkStatus()) override;
  // Closes with RST rather than FIN (SO_LINGER 0), so the peer sees the failure at once.
  void Reset(const absl::Status& reason) override;
  bool closed() const override { return closed_; }

  // Observers that outlive the user callbacks (e.g. a listener counting live connections).
  void AddCloseObserver(absl::AnyInvocable<void()> observer);

  int fd() const { return fd_; }
  const Stats& stats() const override { return stats_; }
  const Options& options() const { return options_; }
  EventLoop& loop() override { return loop_; }

 private:
  Connection(EventLoop& loop, int fd, const Options& options);
  void FinishConnect(int result, absl::Time deadline, ConnectCallback done);
  void ArmReceive();
  void OnReceive(Completion& completion);
  void MaybeSend();
  void OnSent(Completion& completion);
  void ArmIdleTimer(absl::Duration delay);
  void Touch() { last_activity_ = absl::Now(); }

  static constexpr int kMaxIovecs = 32;

  EventLoop& loop_;
  int fd_;
  Options options_;
  // Shared so that a callback that ends up closing this connection (which drops the
  // callbacks) keeps its own closure alive until it returns.
  std::shared_ptr<Callbacks> callbacks_ = std::make_shared<Callbacks>();
  std::vector<absl::AnyInvocable<void()>> close_observers_;
  Stats stats_;
  bool started_ = false;
  bool closed_ = false;

  EventLoop::OpId receive_op_ = 0;
  bool receive_limited_ = false;
  bool paused_ = false;
  bool read_eof_ = false;
  bool waiting_for_buffers_ = false;

  BufferQueue send_queue_;
  std::size_t queued_bytes_ = 0;
  bool crossed_high_water_ = false;
  EventLoop::OpId send_op_ = 0;
  iovec iovecs_[kMaxIovecs];
  msghdr message_{};
  bool shutdown_requested_ = false;
  EventLoop::OpId shutdown_op_ = 0;
  bool write_closed_ = false;

  EventLoop::OpId idle_timer_op_ = 0;
  absl::Time last_activity_;

  SocketAddress connect_peer_;
  // What the ring reads while the connect is in flight.
  sockaddr_storage connect_sockaddr_{};
  socklen_t connect_sockaddr_length_ = 0;
  EventLoop::OpId connect_op_ = 0;
};

}  // namespace nodeward::io
