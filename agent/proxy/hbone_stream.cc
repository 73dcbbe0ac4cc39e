#include "agent/proxy/hbone_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/io/event_loop.h"
#include "agent/proxy/hbone_tunnel.h"

namespace nodeward::proxy {
namespace {

// Most stream bytes delivered in one chunk.
constexpr std::size_t kDeliverChunk = 64 * 1024;
constexpr std::uint32_t kHttp2Cancel = 0x8;

}  // namespace

HboneStream::HboneStream(std::weak_ptr<HboneTunnel> tunnel, hbone::StreamId id,
                         std::size_t send_budget, io::EventLoop& loop)
    : tunnel_(std::move(tunnel)), id_(id), send_budget_(send_budget), loop_(loop) {}

HboneStream::~HboneStream() = default;

void HboneStream::Start(Callbacks callbacks) {
  if (started_ || closed_) return;
  started_ = true;
  callbacks_ = std::make_shared<Callbacks>(std::move(callbacks));
  // Data may have arrived with the CONNECT, before anyone read the stream.
  Deliver();
  PumpToSession();
}

void HboneStream::ResumeReading() {
  if (!paused_) return;
  paused_ = false;
  Deliver();
}

void HboneStream::Deliver() {
  if (!started_ || closed_) return;
  std::shared_ptr<HboneTunnel> tunnel = tunnel_.lock();
  if (tunnel == nullptr) return;
  std::shared_ptr<HboneStream> keep = shared_from_this();
  hbone::Session& session = *tunnel->session_;
  bool read = false;
  while (!closed_ && !paused_) {
    std::size_t room = kDeliverChunk;
    if (callbacks_->receive_room) room = std::min(room, callbacks_->receive_room());
    const std::size_t readable = std::min(room, session.Readable(id_));
    if (readable == 0) break;
    // Read straight into the chunk the application connection will send.
    bool failed = false;
    io::IoBuffer chunk = io::IoBuffer::Filled(readable, [&](absl::Span<std::uint8_t> space) {
      absl::StatusOr<std::size_t> n = session.Read(id_, space);
      failed = !n.ok();
      return n.value_or(0);
    });
    if (failed || chunk.empty()) break;
    read = true;
    stats_.bytes_received += chunk.size();
    if (auto callbacks = callbacks_; callbacks->on_data) callbacks->on_data(std::move(chunk));
  }
  if (!closed_ && !read_eof_delivered_ && session.Readable(id_) == 0 && session.ReadEof(id_)) {
    read_eof_delivered_ = true;
    if (auto callbacks = callbacks_; callbacks->on_read_eof) callbacks->on_read_eof();
  }
  // What was read is credited back to the peer now.
  if (read) tunnel->FlushSoon();
}

void HboneStream::Send(io::IoBuffer chunk) {
  if (closed_ || shutdown_requested_ || chunk.empty()) return;
  to_session_bytes_ += chunk.size();
  to_session_.push_back(std::move(chunk));
  if (to_session_bytes_ >= send_budget_ / 2) crossed_high_water_ = true;
  PumpToSession();
}

void HboneStream::ShutdownWrite() {
  if (closed_ || shutdown_requested_) return;
  shutdown_requested_ = true;
  PumpToSession();
}

void HboneStream::PumpToSession() {
  if (!started_ || closed_ || session_closed_) return;
  std::shared_ptr<HboneTunnel> tunnel = tunnel_.lock();
  if (tunnel == nullptr) return;
  std::shared_ptr<HboneStream> keep = shared_from_this();
  hbone::Session& session = *tunnel->session_;
  while (!to_session_.empty()) {
    io::IoBuffer& front = to_session_.front();
    absl::StatusOr<std::size_t> taken = session.Write(id_, front.data());
    if (!taken.ok()) {
      Close(taken.status());
      return;
    }
    if (*taken == 0) break;
    stats_.bytes_sent += *taken;
    front.Consume(*taken);
    to_session_bytes_ -= *taken;
    if (front.empty()) to_session_.pop_front();
  }
  // Held chunks would otherwise pin receive buffers the whole loop shares.
  to_session_.ForEach([](io::IoBuffer& held) {
    held.DetachFromRing();
    return true;
  });
  if (to_session_.empty() && shutdown_requested_ && !end_stream_submitted_) {
    end_stream_submitted_ = true;
    if (absl::Status status = session.CloseWrite(id_); !status.ok()) {
      Close(status);
      return;
    }
  }
  tunnel->Flush();
  if (!closed_ && crossed_high_water_ && to_session_bytes_ < send_budget_ / 2) {
    crossed_high_water_ = false;
    if (auto callbacks = callbacks_; callbacks->on_send_drained) callbacks->on_send_drained();
  }
}

void HboneStream::OnResponse(const absl::Status& status) {
  if (!status.ok()) response_status_ = status;
}

void HboneStream::OnSessionClosed(const absl::Status& status) {
  if (closed_) return;
  session_closed_ = true;
  const absl::Status outcome = response_status_.ok() ? status : response_status_;
  if (!outcome.ok()) {
    Close(outcome);
    return;
  }
  // Both END_STREAMs are through the session: ours is on its way, the peer's data is here.
  std::shared_ptr<HboneStream> keep = shared_from_this();
  Deliver();
  if (closed_ || write_closed_) return;
  write_closed_ = true;
  if (auto callbacks = callbacks_; callbacks->on_write_closed) callbacks->on_write_closed();
}

void HboneStream::Close(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  std::shared_ptr<HboneStream> keep = shared_from_this();
  if (std::shared_ptr<HboneTunnel> tunnel = tunnel_.lock()) {
    if (!session_closed_) tunnel->session_->Reset(id_, kHttp2Cancel).IgnoreError();
    tunnel->Forget(id_);
    tunnel->Flush();
  }
  to_session_.clear();
  to_session_bytes_ = 0;
  std::shared_ptr<Callbacks> callbacks = std::exchange(callbacks_, std::make_shared<Callbacks>());
  if (callbacks->on_closed) callbacks->on_closed(reason);
}

}  // namespace nodeward::proxy
