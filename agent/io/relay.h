// Moves bytes both ways between two streams on the same loop until both directions have ended,
// with half-close, backpressure and a memory budget: the one copy loop of the data plane,
// whatever carries each side (TCP, TLS inside TCP, an HBONE stream). Received buffers are
// handed on as they are, never copied.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "agent/io/buffer_queue.h"
#include "agent/io/io_buffer.h"
#include "agent/io/stream.h"

namespace nodeward::io {

class Relay : public std::enable_shared_from_this<Relay> {
 public:
  struct Result {
    // OK when both directions ended with a clean EOF; otherwise why the relay was cut.
    absl::Status status;
    std::uint64_t a_to_b_bytes = 0;  // bytes delivered to B
    std::uint64_t b_to_a_bytes = 0;  // bytes delivered to A
    std::size_t peak_buffered_bytes = 0;
  };
  using DoneCallback = absl::AnyInvocable<void(const Result&)>;

  // Both streams must belong to the same loop and not be started yet. The relay keeps itself
  // alive until both are closed; `done` runs once. When the relay ends with an error, both
  // sides are reset (RST), so neither peer mistakes the failure for a clean end.
  static std::shared_ptr<Relay> Start(std::shared_ptr<Stream> a, std::shared_ptr<Stream> b,
                                      DoneCallback done);

  // Cuts both streams.
  void Abort(const absl::Status& reason);

  // Bytes the relay holds right now: received and not yet sent, on both sides.
  std::size_t buffered_bytes() const;
  std::size_t peak_buffered_bytes() const { return peak_buffered_; }

 private:
  Relay(std::shared_ptr<Stream> a, std::shared_ptr<Stream> b, DoneCallback done);
  void Wire();
  void Pump();
  void UpdateReading();
  void MaybeFinish();
  void Finish(const absl::Status& status);
  void NoteBuffered();

  std::shared_ptr<Stream> a_;
  std::shared_ptr<Stream> b_;
  DoneCallback done_;

  // Received and not yet handed on (handed on at once; kept as queues for the accounting).
  BufferQueue from_a_;
  BufferQueue from_b_;
  std::size_t from_a_bytes_ = 0;
  std::size_t from_b_bytes_ = 0;
  bool a_eof_ = false;
  bool b_eof_ = false;
  std::size_t peak_buffered_ = 0;
  bool finished_ = false;
  bool pumping_ = false;
};

}  // namespace nodeward::io
