// A byte stream driven by an EventLoop, whatever carries it: a TCP connection
// (io::Connection), TLS inside one (io::TlsConnection) or one CONNECT stream of an HBONE
// tunnel (proxy::HboneStream). The relay moves bytes between any two, so every way of
// carrying a connection shares one copy loop. Loop-thread only; held by shared_ptr.
//
// The contract is that of a TCP socket: bytes in order both ways, half-close (ShutdownWrite,
// then on_read_eof at the other end), a bounded send queue with a high-water mark, and a close
// that says why.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "agent/io/io_buffer.h"

namespace nodeward::io {

class EventLoop;

class Stream {
 public:
  struct Callbacks {
    // Received bytes; the receiver may keep the buffer (it returns to the ring when released).
    absl::AnyInvocable<void(IoBuffer)> on_data;
    // The peer ended its sending side; no more on_data.
    absl::AnyInvocable<void()> on_read_eof;
    // The send queue fell back under half the high-water mark after having reached it.
    absl::AnyInvocable<void()> on_send_drained;
    // Our ShutdownWrite has taken effect after everything queued was sent.
    absl::AnyInvocable<void()> on_write_closed;
    // How many more bytes the receiver can take now; 0 stops receiving until
    // ReceiveRoomChanged(). Unset means unbounded.
    absl::AnyInvocable<std::size_t()> receive_room;
    // The stream is closed: OK when Close() was called without a reason, else why.
    absl::AnyInvocable<void(const absl::Status&)> on_closed;
  };

  struct Stats {
    std::uint64_t bytes_received = 0;  // delivered through on_data
    std::uint64_t bytes_sent = 0;      // handed on by the transport
  };

  virtual ~Stream() = default;

  // Starts receiving (and whatever the transport needs to start: a TLS client's hello).
  virtual void Start(Callbacks callbacks) = 0;
  // Stops delivering on_data soon (what the transport already holds waits). Idempotent.
  virtual void PauseReading() = 0;
  virtual void ResumeReading() = 0;
  virtual bool reading_paused() const = 0;
  // The receiver made room: deliver again if receiving had stopped for lack of it.
  virtual void ReceiveRoomChanged() = 0;

  // Queues bytes; they are sent in order.
  virtual void Send(IoBuffer chunk) = 0;
  virtual std::size_t queued_bytes() const = 0;
  virtual std::size_t send_high_water() const = 0;
  bool over_high_water() const { return queued_bytes() >= send_high_water(); }
  // Ends our sending side once the queue is sent.
  virtual void ShutdownWrite() = 0;
  virtual bool write_closed() const = 0;

  // Cancels everything in flight and closes; on_closed runs with `reason`.
  virtual void Close(const absl::Status& reason = absl::OkStatus()) = 0;
  // Closes so that the peer sees a failure at once (TCP RST, RST_STREAM), not an EOF.
  virtual void Reset(const absl::Status& reason) = 0;
  virtual bool closed() const = 0;

  virtual const Stats& stats() const = 0;
  virtual EventLoop& loop() = 0;
};

}  // namespace nodeward::io
