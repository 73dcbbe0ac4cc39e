#include "agent/io/relay.h"

#include <algorithm>

namespace nodeward::io {

std::shared_ptr<Relay> Relay::Start(std::shared_ptr<Stream> a, std::shared_ptr<Stream> b,
                                    DoneCallback done) {
  std::shared_ptr<Relay> relay(new Relay(std::move(a), std::move(b), std::move(done)));
  relay->Wire();
  return relay;
}

Relay::Relay(std::shared_ptr<Stream> a, std::shared_ptr<Stream> b, DoneCallback done)
    : a_(std::move(a)), b_(std::move(b)), done_(std::move(done)) {}

void Relay::Wire() {
  // The connections' callbacks keep the relay alive; Connection::Close drops them, which ends
  // the cycle once both sides are closed.
  auto self = shared_from_this();
  auto callbacks_for = [&self](BufferQueue* queue, std::size_t* queued, bool* eof,
                               Stream* destination) {
    Stream::Callbacks callbacks;
    // Receive no more than the destination can queue below its high-water mark, so one
    // burst from a fast sender cannot overshoot the budget. Below half the mark the
    // destination reports on_send_drained, so waiting for that avoids tiny receives.
    callbacks.receive_room = [queue, destination]() -> std::size_t {
      const std::size_t high_water = destination->send_high_water();
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
}

std::size_t Relay::buffered_bytes() const {
  return from_a_bytes_ + from_b_bytes_ + a_->queued_bytes() + b_->queued_bytes();
}

void Relay::NoteBuffered() { peak_buffered_ = std::max(peak_buffered_, buffered_bytes()); }

void Relay::Pump() {
  if (finished_ || pumping_) return;
  pumping_ = true;
  auto self = shared_from_this();
  // Handing a chunk on can deliver more to either side (a stream's send may produce a
  // readable event) or end the relay: take each chunk out before it goes, and loop until
  // both queues are empty.
  while (!finished_ && (!from_a_.empty() || !from_b_.empty())) {
    BufferQueue& queue = !from_a_.empty() ? from_a_ : from_b_;
    const bool from_a = &queue == &from_a_;
    IoBuffer chunk = std::move(queue.front());
    queue.pop_front();
    (from_a ? from_a_bytes_ : from_b_bytes_) -= chunk.size();
    (from_a ? b_ : a_)->Send(std::move(chunk));
  }
  if (!finished_ && a_eof_) b_->ShutdownWrite();
  if (!finished_ && b_eof_) a_->ShutdownWrite();
  pumping_ = false;
  if (finished_) return;
  NoteBuffered();
  UpdateReading();
  MaybeFinish();
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
  if (status.ok()) {
    a_->Close();
    b_->Close();
  } else {
    a_->Reset(status);
    b_->Reset(status);
  }
  from_a_.clear();
  from_b_.clear();
  from_a_bytes_ = from_b_bytes_ = 0;
  if (auto done = std::move(done_)) done(result);
}

}  // namespace nodeward::io
