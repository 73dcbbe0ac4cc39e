#include "agent/io/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nodeward::io {
namespace {

absl::Status SocketError(absl::string_view what, int error) {
  return absl::Status(absl::ErrnoToStatusCode(error), absl::StrCat(what, ": ", strerror(error)));
}

void DisableNagle(int fd) {
  // A relay forwards whatever arrived at once; batching happens in the queue, not in TCP.
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

Connection::Connection(EventLoop& loop, int fd, const Options& options)
    : loop_(loop), fd_(fd), options_(options), last_activity_(absl::Now()) {}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
  // Dropped without Close(): observers still need to forget it.
  for (auto& observer : close_observers_) observer();
}

std::shared_ptr<Connection> Connection::Adopt(EventLoop& loop, int fd, const Options& options) {
  if (options.set_nodelay) DisableNagle(fd);
  return std::shared_ptr<Connection>(new Connection(loop, fd, options));
}

void Connection::Connect(EventLoop& loop, const SocketAddress& peer, absl::Duration timeout,
                         const Options& options, ConnectCallback done) {
  absl::StatusOr<int> fd = NewTcpSocket(peer.ip.family, options.socket_mark);
  if (!fd.ok()) {
    loop.Defer([done = std::move(done), status = fd.status()]() mutable { done(status); });
    return;
  }
  ConnectSocket(loop, *fd, peer, timeout, options, std::move(done));
}

void Connection::ConnectSocket(EventLoop& loop, int fd, const SocketAddress& peer,
                               absl::Duration timeout, const Options& options,
                               ConnectCallback done) {
  std::shared_ptr<Connection> connection(new Connection(loop, fd, options));
  connection->connect_peer_ = peer;
  connection->connect_sockaddr_length_ = peer.ToSockaddr(&connection->connect_sockaddr_);
  const absl::Time deadline = absl::Now() + timeout;
  connection->connect_op_ =
      loop.Connect(fd, reinterpret_cast<const sockaddr*>(&connection->connect_sockaddr_),
                   connection->connect_sockaddr_length_, timeout,
                   [connection, deadline, done = std::move(done)](Completion& completion) mutable {
                     connection->connect_op_ = 0;
                     connection->FinishConnect(completion.result, deadline, std::move(done));
                   });
}

// io_uring can complete a connect of a non-blocking socket while the handshake is still in
// flight (or with the failure only in SO_ERROR): the socket itself says how it really ended.
void Connection::FinishConnect(int result, absl::Time deadline, ConnectCallback done) {
  const std::string peer_text = connect_peer_.ToString();
  if (result == 0) {
    int error = 0;
    socklen_t length = sizeof(error);
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    sockaddr_storage address;
    socklen_t address_length = sizeof(address);
    if (error == 0 &&
        getpeername(fd_, reinterpret_cast<sockaddr*>(&address), &address_length) == 0) {
      if (options_.set_nodelay) DisableNagle(fd_);
      Touch();
      done(shared_from_this());
      return;
    }
    if (error == 0 && errno == ENOTCONN && absl::Now() < deadline) {
      std::shared_ptr<Connection> self = shared_from_this();
      connect_op_ =
          loop_.Poll(fd_, POLLOUT, deadline - absl::Now(),
                     [self, deadline, done = std::move(done)](Completion& completion) mutable {
                       self->connect_op_ = 0;
                       self->FinishConnect(completion.result < 0 ? completion.result : 0, deadline,
                                           std::move(done));
                     });
      return;
    }
    result = error != 0 ? -error : -ETIMEDOUT;
  }
  Close();
  if (result == -ECANCELED || result == -ETIMEDOUT) {
    done(absl::DeadlineExceededError(absl::StrCat("connect to ", peer_text, " timed out")));
  } else {
    done(absl::UnavailableError(absl::StrCat("connect to ", peer_text, ": ", strerror(-result))));
  }
}

void Connection::Start(Callbacks callbacks) {
  if (started_ || closed_) return;
  started_ = true;
  callbacks_ = std::make_shared<Callbacks>(std::move(callbacks));
  Touch();
  ArmReceive();
  if (options_.idle_timeout != absl::InfiniteDuration()) ArmIdleTimer(options_.idle_timeout);
}

void Connection::ArmReceive() {
  if (!started_ || closed_ || read_eof_ || paused_ || receive_op_ != 0 || waiting_for_buffers_) {
    return;
  }
  std::uint32_t limit = 0;
  if (callbacks_->receive_room) {
    const std::size_t room = callbacks_->receive_room();
    if (room == 0) return;
    limit = static_cast<std::uint32_t>(std::min<std::size_t>(room, UINT32_MAX));
  }
  receive_limited_ = limit > 0 && loop_.receive_limit_supported();
  receive_op_ = loop_.RecvMultishot(
      fd_, limit,
      [self = shared_from_this()](Completion& completion) { self->OnReceive(completion); });
}

void Connection::OnReceive(Completion& completion) {
  const bool final = !completion.more();
  if (final) receive_op_ = 0;
  if (closed_) return;
  if (completion.result > 0) {
    stats_.bytes_received += static_cast<std::uint64_t>(completion.result);
    Touch();
    if (auto callbacks = callbacks_; callbacks->on_data) {
      callbacks->on_data(std::move(completion.buffer));
    }
  } else if (completion.result == 0) {
    if (!read_eof_) {
      read_eof_ = true;
      if (receive_op_ != 0) loop_.Cancel(receive_op_);
      if (auto callbacks = callbacks_; callbacks->on_read_eof) callbacks->on_read_eof();
    }
    return;
  } else if (completion.result == -ENOBUFS) {
    // Every provided buffer is held somewhere; resume once one comes back.
    waiting_for_buffers_ = true;
    loop_.WhenBuffersAvailable([self = shared_from_this()] {
      self->waiting_for_buffers_ = false;
      self->ArmReceive();
    });
    return;
  } else if (completion.result == -EINVAL && receive_limited_) {
    // This kernel cannot cap a multishot receive; pausing by cancellation still works.
    loop_.DisableReceiveLimit();
  } else if (completion.result != -ECANCELED) {
    Close(SocketError("recv", -completion.result));
    return;
  }
  // A multishot receive also ends on its own (e.g. completion queue overflow): re-arm.
  if (final && !closed_) ArmReceive();
}

void Connection::PauseReading() {
  if (paused_) return;
  paused_ = true;
  if (receive_op_ != 0) loop_.Cancel(receive_op_);
}

void Connection::ResumeReading() {
  if (!paused_) return;
  paused_ = false;
  // If the cancelled receive has not reported its end yet, OnReceive re-arms.
  ArmReceive();
}

void Connection::Send(IoBuffer chunk) {
  if (closed_ || shutdown_requested_ || chunk.empty()) return;
  // A chunk that has to wait behind others must not pin a receive buffer while the ring runs
  // low, or a stalled peer could starve every other connection on this loop.
  if (chunk.from_ring() && !send_queue_.empty() &&
      loop_.buffers().available() < loop_.buffers().count() / 4) {
    chunk.DetachFromRing();
  }
  queued_bytes_ += chunk.size();
  send_queue_.push_back(std::move(chunk));
  if (queued_bytes_ >= options_.send_high_water / 2) crossed_high_water_ = true;
  MaybeSend();
}

void Connection::MaybeSend() {
  if (closed_ || send_op_ != 0) return;
  if (send_queue_.empty()) {
    if (shutdown_requested_ && shutdown_op_ == 0 && !write_closed_) {
      shutdown_op_ =
          loop_.Shutdown(fd_, SHUT_WR, [self = shared_from_this()](Completion& completion) {
            self->shutdown_op_ = 0;
            if (self->closed_) return;
            if (completion.result < 0) {
              self->Close(SocketError("shutdown", -completion.result));
              return;
            }
            self->write_closed_ = true;
            if (auto callbacks = self->callbacks_; callbacks->on_write_closed) {
              callbacks->on_write_closed();
            }
          });
    }
    return;
  }
  int count = 0;
  send_queue_.ForEach([&](const IoBuffer& chunk) {
    if (count == kMaxIovecs) return false;
    iovecs_[count].iov_base = const_cast<std::uint8_t*>(chunk.data().data());
    iovecs_[count].iov_len = chunk.size();
    ++count;
    return true;
  });
  message_ = {};
  message_.msg_iov = iovecs_;
  message_.msg_iovlen = static_cast<std::size_t>(count);
  send_op_ = loop_.SendMessage(
      fd_, &message_, 0,
      [self = shared_from_this()](Completion& completion) { self->OnSent(completion); });
}

void Connection::OnSent(Completion& completion) {
  send_op_ = 0;
  if (closed_) {
    // The kernel is done with the queued memory only now.
    send_queue_.clear();
    queued_bytes_ = 0;
    return;
  }
  if (completion.result == -EAGAIN) {
    // A non-blocking socket whose send buffer is full (a slow receiver) can hand EAGAIN back
    // through io_uring: wait until it has room, then send the same queue again.
    send_op_ =
        loop_.Poll(fd_, POLLOUT, absl::Hours(1), [self = shared_from_this()](Completion& polled) {
          self->send_op_ = 0;
          if (self->closed_) {
            self->send_queue_.clear();
            self->queued_bytes_ = 0;
            return;
          }
          if (polled.result < 0 && polled.result != -ECANCELED) {
            self->Close(SocketError("poll for send", -polled.result));
            return;
          }
          self->MaybeSend();
        });
    return;
  }
  if (completion.result < 0) {
    Close(SocketError("send", -completion.result));
    return;
  }
  auto sent = static_cast<std::size_t>(completion.result);
  stats_.bytes_sent += sent;
  queued_bytes_ -= sent;
  Touch();
  while (sent > 0) {
    IoBuffer& front = send_queue_.front();
    const std::size_t taken = std::min(sent, front.size());
    front.Consume(taken);
    sent -= taken;
    if (front.empty()) send_queue_.pop_front();
  }
  MaybeSend();
  if (crossed_high_water_ && queued_bytes_ < options_.send_high_water / 2) {
    crossed_high_water_ = false;
    if (auto callbacks = callbacks_; callbacks->on_send_drained) callbacks->on_send_drained();
  }
}

void Connection::ShutdownWrite() {
  if (closed_ || shutdown_requested_) return;
  shutdown_requested_ = true;
  MaybeSend();
}

void Connection::ArmIdleTimer(absl::Duration delay) {
  idle_timer_op_ = loop_.Timer(delay, [self = shared_from_this()](Completion& completion) {
    self->idle_timer_op_ = 0;
    if (self->closed_ || completion.result == -ECANCELED) return;
    const absl::Duration idle = absl::Now() - self->last_activity_;
    if (idle >= self->options_.idle_timeout) {
      self->Close(absl::DeadlineExceededError(
          absl::StrCat("idle for ", absl::FormatDuration(self->options_.idle_timeout))));
    } else {
      // Activity resets the deadline without touching the timer on every byte.
      self->ArmIdleTimer(self->options_.idle_timeout - idle);
    }
  });
}

void Connection::AddCloseObserver(absl::AnyInvocable<void()> observer) {
  if (closed_) {
    observer();
    return;
  }
  close_observers_.push_back(std::move(observer));
}

void Connection::Reset(const absl::Status& reason) {
  if (closed_) return;
  SetResetOnClose(fd_);
  Close(reason);
}

void Connection::Close(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  for (EventLoop::OpId op : {receive_op_, send_op_, shutdown_op_, idle_timer_op_, connect_op_}) {
    if (op != 0) loop_.Cancel(op);
  }
  if (send_op_ == 0) {
    send_queue_.clear();
    queued_bytes_ = 0;
  }
  // In-flight operations hold their own references to the socket, so close() alone would not
  // end the connection until they are cancelled; shutdown() tells the peer at once. With none
  // in flight (the usual end: both directions finished) close() alone does it.
  if (receive_op_ != 0 || send_op_ != 0 || connect_op_ != 0) shutdown(fd_, SHUT_RDWR);
  close(fd_);
  fd_ = -1;
  // Callbacks usually capture whoever owns this connection: drop them to break the cycle.
  std::shared_ptr<Callbacks> callbacks = std::exchange(callbacks_, std::make_shared<Callbacks>());
  auto observers = std::move(close_observers_);
  close_observers_.clear();
  if (callbacks->on_closed) callbacks->on_closed(reason);
  for (auto& observer : observers) observer();
}

}  // namespace nodeward::io
