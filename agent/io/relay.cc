#include "agent/io/relay.h"

#include <algorithm>

namespace nodeward::io {
namespace {

// Transform output is cut into chunks of at most this size, like the receive buffers.
constexpr std::size_t kTransformChunk = 16 * 1024;

}  // namespace

std::shared_ptr<Relay> Relay::Start(std::shared_ptr<Connection> a, std::shared_ptr<Connection> b,
                                    std::unique_ptr<Transform> transform_on_a, DoneCallback done) {
  std::shared_ptr<Relay> relay(
      new Relay(std::move(a), std::move(b), std::move(transform_on_a), std::move(done)));
  relay->Wire();
  return relay;
}

Relay::Relay(std::shared_ptr<Connection> a, std::shared_ptr<Connection> b,
             std::unique_ptr<Transform> transform, DoneCallback done)
    : a_(std::move(a)), b_(std::move(b)), transform_(std::move(transform)), done_(std::move(done)) {
  if (transform_ != nullptr) scratch_.resize(kTransformChunk);
}

void Relay::Wire() {
  // The connections' callbacks keep the relay alive; Connection::Close drops them, which ends
  // the cycle once both sides are closed.
  auto self = shared_from_this();
  auto callbacks_for = [&self](std::deque<IoBuffer>* queue, std::size_t* queued, bool* eof,
                               Connection* destination) {
    Connection::Callbacks callbacks;
    // Receive no more than the destination can queue below its high-water mark, so one
    // burst from a fast sender cannot overshoot the budget. Below half the mark the
    // destination reports on_send_drained, so waiting for that avoids tiny receives.
    callbacks.receive_room = [queue, destination]() -> std::size_t {
      const std::size_t high_water = destination->options().send_high_water;
      if (!queue->empty() || destination->queued_bytes() >= high_water / 2) return 0;
      return high_water - destination->queued_bytes();
    };
    callbacks.on_data = [self, queue, queued](IoBuffer chunk) {
      *queued += chunk.size();
      queue->push_back(std::move(chunk));
      self->NoteBuffered();
      self->Pump();
    };
    callbacks.on_read_eof = [self, eof] {
      *eof = true;
      self->Pump();
    };
    callbacks.on_send_drained = [self] { self->Pump(); };
    callbacks.on_write_closed = [self] { self->MaybeFinish(); };
    callbacks.on_closed = [self](const absl::Status& status) {
      self->Finish(status.ok() ? absl::AbortedError("peer connection closed") : status);
    };
    return callbacks;
  };
  a_->Start(callbacks_for(&from_a_, &from_a_bytes_, &a_eof_, b_.get()));
  b_->Start(callbacks_for(&from_b_, &from_b_bytes_, &b_eof_, a_.get()));
  // A transform may have bytes to send before anything arrives (a TLS client hello).
  Pump();
}

std::size_t Relay::buffered_bytes() const {
  return from_a_bytes_ + from_b_bytes_ + a_->queued_bytes() + b_->queued_bytes();
}

void Relay::NoteBuffered() { peak_buffered_ = std::max(peak_buffered_, buffered_bytes()); }

void Relay::Pump() {
  if (finished_ || pumping_) return;
  pumping_ = true;
  absl::Status status;
  if (transform_ != nullptr) {
    status = PumpThroughTransform();
  } else {
    // Plain bytes: hand the received buffers over as they are, no copy.
    for (; !from_a_.empty(); from_a_.pop_front()) b_->Send(std::move(from_a_.front()));
    for (; !from_b_.empty(); from_b_.pop_front()) a_->Send(std::move(from_b_.front()));
    from_a_bytes_ = from_b_bytes_ = 0;
    if (a_eof_) b_->ShutdownWrite();
    if (b_eof_) a_->ShutdownWrite();
  }
  pumping_ = false;
  if (!status.ok()) {
    Finish(status);
    return;
  }
  NoteBuffered();
  UpdateReading();
  MaybeFinish();
}

absl::Status Relay::PumpThroughTransform() {
  bool progress = true;
  while (progress && !finished_) {
    progress = false;
    while (!from_a_.empty()) {
      IoBuffer& front = from_a_.front();
      const std::size_t taken = transform_->FeedWire(front.data());
      if (taken == 0) break;
      progress = true;
      front.Consume(taken);
      from_a_bytes_ -= taken;
      if (front.empty()) from_a_.pop_front();
    }
    if (absl::Status status = transform_->Advance(); !status.ok()) return status;

    // Plaintext toward B only while B keeps up; what stays inside the transform is bounded by
    // what it accepted from FeedWire.
    plaintext_drained_ = false;
    while (!b_->over_high_water()) {
      absl::StatusOr<std::size_t> read = transform_->ReadPlaintext(absl::MakeSpan(scratch_));
      if (!read.ok()) return read.status();
      if (*read == 0) {
        plaintext_drained_ = true;
        break;
      }
      progress = true;
      b_->Send(IoBuffer::Copy(absl::MakeConstSpan(scratch_.data(), *read)));
    }

    while (!from_b_.empty() && !a_->over_high_water()) {
      IoBuffer& front = from_b_.front();
      absl::StatusOr<std::size_t> written = transform_->WritePlaintext(front.data());
      if (!written.ok()) return written.status();
      if (*written == 0) break;
      progress = true;
      front.Consume(*written);
      from_b_bytes_ -= *written;
      if (front.empty()) from_b_.pop_front();
    }
    if (b_eof_ && from_b_.empty() && !transform_write_closed_) {
      transform_->CloseWrite();
      transform_write_closed_ = true;
    }

    while (const std::size_t pending = transform_->PendingWire()) {
      // Encoded bytes go straight into the chunk A sends, not through scratch_ and a copy.
      IoBuffer chunk = IoBuffer::Filled(
          std::min(pending, kTransformChunk),
          [&](absl::Span<std::uint8_t> space) { return transform_->ReadWire(space); });
      if (chunk.empty()) break;
      a_->Send(std::move(chunk));
    }
  }
  if (a_eof_ && from_a_.empty()) {
    if (absl::Status status = transform_->WireEnded(); !status.ok()) return status;
  }
  if (transform_write_closed_ && transform_->PendingWire() == 0) a_->ShutdownWrite();
  // A TCP FIN without a clean end of the encoded stream still ends that direction: B sees EOF
  // either way, and the application decides whether the data was complete.
  if (plaintext_drained_ && ((a_eof_ && from_a_.empty()) || transform_->PeerClosed())) {
    b_->ShutdownWrite();
  }
  return absl::OkStatus();
}

void Relay::UpdateReading() {
  if (finished_) return;
  const bool a_may_read = from_a_.empty() && !b_->over_high_water();
  const bool b_may_read = from_b_.empty() && !a_->over_high_water();
  a_may_read ? a_->ResumeReading() : a_->PauseReading();
  b_may_read ? b_->ResumeReading() : b_->PauseReading();
  if (a_may_read) a_->ReceiveRoomChanged();
  if (b_may_read) b_->ReceiveRoomChanged();
}

void Relay::MaybeFinish() {
  if (finished_) return;
  if (a_->write_closed() && b_->write_closed() && a_eof_ && b_eof_) Finish(absl::OkStatus());
}

void Relay::Abort(const absl::Status& reason) { Finish(reason); }

void Relay::Finish(const absl::Status& status) {
  if (finished_) return;
  finished_ = true;
  Result result;
  result.status = status;
  result.a_to_b_bytes = b_->stats().bytes_sent;
  result.b_to_a_bytes = a_->stats().bytes_sent;
  result.peak_buffered_bytes = peak_buffered_;
  // Keep ourselves alive: closing drops the callbacks that own us.
  auto self = shared_from_this();
  a_->Close(status);
  b_->Close(status);
  from_a_.clear();
  from_b_.clear();
  from_a_bytes_ = from_b_bytes_ = 0;
  if (auto done = std::move(done_)) done(result);
}

}  // namespace nodeward::io
