// Moves bytes both ways between two connections on the same loop until both directions have
// ended, with half-close, backpressure and a memory budget. An optional Transform on side A
// turns it into a terminating proxy (e.g. TLS toward A, plaintext toward B).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "agent/io/connection.h"
#include "agent/io/io_buffer.h"
#include "agent/io/transform.h"

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

  // Both connections must belong to the same loop and not be started yet. The relay keeps
  // itself alive until both are closed; `done` runs once.
  static std::shared_ptr<Relay> Start(std::shared_ptr<Connection> a, std::shared_ptr<Connection> b,
                                      std::unique_ptr<Transform> transform_on_a, DoneCallback done);

  // Cuts both connections.
  void Abort(const absl::Status& reason);

  // Bytes the relay holds right now: received and not yet sent, on both sides.
  std::size_t buffered_bytes() const;
  std::size_t peak_buffered_bytes() const { return peak_buffered_; }

 private:
  Relay(std::shared_ptr<Connection> a, std::shared_ptr<Connection> b,
        std::unique_ptr<Transform> transform, DoneCallback done);
  void Wire();
  void Pump();
  absl::Status PumpThroughTransform();
  void UpdateReading();
  void MaybeFinish();
  void Finish(const absl::Status& status);
  void NoteBuffered();

  std::shared_ptr<Connection> a_;
  std::shared_ptr<Connection> b_;
  std::unique_ptr<Transform> transform_;
  DoneCallback done_;

  // Received but not yet handed on (only non-empty while a transform cannot take more).
  std::deque<IoBuffer> from_a_;
  std::deque<IoBuffer> from_b_;
  std::size_t from_a_bytes_ = 0;
  std::size_t from_b_bytes_ = 0;
  bool a_eof_ = false;
  bool b_eof_ = false;
  bool transform_write_closed_ = false;
  bool plaintext_drained_ = true;
  std::size_t peak_buffered_ = 0;
  bool finished_ = false;
  bool pumping_ = false;
  // Staging for transform output before it is copied into right-sized chunks.
  std::vector<std::uint8_t> scratch_;
};

}  // namespace nodeward::io
