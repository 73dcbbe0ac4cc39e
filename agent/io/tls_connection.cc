#include "agent/io/tls_connection.h"

#include <algorithm>
#include <utility>

namespace nodeward::io {
namespace {

// Ciphertext received per batch while the engine keeps up.
constexpr std::size_t kWireRoom = 256 * 1024;

}  // namespace

std::shared_ptr<TlsConnection> TlsConnection::Create(std::shared_ptr<Connection> wire,
                                                     std::unique_ptr<crypto::TlsEngine> engine,
                                                     const Options& options) {
  return std::shared_ptr<TlsConnection>(
      new TlsConnection(std::move(wire), std::move(engine), options));
}

TlsConnection::TlsConnection(std::shared_ptr<Connection> wire,
                             std::unique_ptr<crypto::TlsEngine> engine, const Options& options)
    : wire_(std::move(wire)), engine_(std::move(engine)), options_(options) {}

TlsConnection::~TlsConnection() = default;

void TlsConnection::Start(Callbacks callbacks) {
  if (started_ || closed_) return;
  started_ = true;
  callbacks_ = std::make_shared<Callbacks>(std::move(callbacks));
  if (!wire_started_) StartWire();
  // A client speaks first: its hello leaves now (and what arrived after a Handshake() goes on).
  Process();
}

void TlsConnection::Handshake(absl::AnyInvocable<void(const absl::Status&)> done) {
  if (wire_started_ || closed_) {
    done(absl::FailedPreconditionError("TLS connection already started or closed"));
    return;
  }
  handshake_done_ = std::move(done);
  StartWire();
  Process();
}

void TlsConnection::StartWire() {
  wire_started_ = true;
  // The wire's callbacks hold this stream: it lives while its socket does, and the cycle ends
  // when the socket closes (Connection drops its callbacks then).
  auto self = shared_from_this();
  Connection::Callbacks wire;
  wire.on_data = [self](IoBuffer buffer) {
    self->wire_in_bytes_ += buffer.size();
    self->wire_in_.push_back(std::move(buffer));
    self->Process();
  };
  wire.on_read_eof = [self] {
    self->wire_eof_ = true;
    self->Process();
  };
  wire.on_send_drained = [self] { self->Flush(); };
  wire.on_write_closed = [self] {
    self->write_closed_ = true;
    if (auto callbacks = self->callbacks_; callbacks->on_write_closed) callbacks->on_write_closed();
  };
  // Received ciphertext waits only while the engine cannot take it: then stop receiving.
  wire.receive_room = [self]() -> std::size_t { return self->wire_in_.empty() ? kWireRoom : 0; };
  wire.on_closed = [self](const absl::Status& status) {
    if (self->closed_) return;
    self->closed_ = true;
    self->wire_in_.clear();
    self->out_.clear();
    self->wire_in_bytes_ = self->out_bytes_ = 0;
    std::shared_ptr<Callbacks> callbacks =
        std::exchange(self->callbacks_, std::make_shared<Callbacks>());
    if (auto done = std::exchange(self->handshake_done_, nullptr)) {
      done(status.ok() ? absl::UnavailableError("closed during the TLS handshake") : status);
    }
    if (callbacks->on_closed) callbacks->on_closed(status);
  };
  wire_->Start(std::move(wire));
}

void TlsConnection::Process() {
  if (processing_ || closed_ || !wire_started_) return;
  processing_ = true;
  std::shared_ptr<TlsConnection> keep = shared_from_this();
  bool plaintext_exhausted = false;
  bool progress = true;
  while (progress && !closed_) {
    progress = false;
    while (!wire_in_.empty()) {
      IoBuffer& front = wire_in_.front();
      const std::size_t fed = engine_->FeedWire(front.data());
      if (fed == 0) break;
      progress = true;
      front.Consume(fed);
      wire_in_bytes_ -= fed;
      if (front.empty()) wire_in_.pop_front();
    }
    if (absl::Status status = engine_->Advance(); !status.ok()) {
      SendSealed();  // the alert that tells the peer why
      processing_ = false;
      Fail(status);
      return;
    }
    if (SendSealed()) progress = true;
    if (!was_established_ && established()) {
      was_established_ = true;
      // Writes refused during the handshake can go now.
      Flush();
    }
    if (!out_.empty() || shutdown_requested_) Flush();
    plaintext_exhausted = false;
    while (started_ && !paused_ && !closed_) {
      std::size_t room = options_.plaintext_chunk;
      if (callbacks_->receive_room) room = std::min(room, callbacks_->receive_room());
      if (room == 0) break;
      absl::Status failure;
      IoBuffer chunk = IoBuffer::Filled(room, [&](absl::Span<std::uint8_t> space) {
        absl::StatusOr<std::size_t> n = engine_->ReadPlaintext(space);
        if (!n.ok()) failure = n.status();
        return n.value_or(0);
      });
      if (!failure.ok()) {
        processing_ = false;
        Fail(failure);
        return;
      }
      if (chunk.empty()) {
        plaintext_exhausted = true;
        break;
      }
      progress = true;
      stats_.bytes_received += chunk.size();
      if (auto callbacks = callbacks_; callbacks->on_data) callbacks->on_data(std::move(chunk));
    }
  }
  processing_ = false;
  if (closed_) return;
  const bool wire_done = wire_eof_ && wire_in_.empty();
  if (!started_) {
    // Handshake() alone: it ends in failure (the peer left) or success; plaintext waits.
    if (engine_->state() == crypto::TlsEngine::State::kHandshaking && wire_done) {
      Fail(absl::UnavailableError("peer closed the connection during the TLS handshake"));
      return;
    }
    if (established()) {
      if (auto done = std::exchange(handshake_done_, nullptr)) done(absl::OkStatus());
      if (closed_) return;
    }
  } else if (plaintext_exhausted && !read_eof_delivered_ && (engine_->PeerClosed() || wire_done)) {
    // A FIN without close_notify still ends the stream once the handshake is done: the
    // application behind it decides whether what arrived was complete.
    if (engine_->state() == crypto::TlsEngine::State::kFailed) {
      Fail(engine_->error());
      return;
    }
    if (engine_->state() == crypto::TlsEngine::State::kHandshaking) {
      Fail(absl::UnavailableError("peer closed the connection during the TLS handshake"));
      return;
    }
    read_eof_delivered_ = true;
    if (auto callbacks = callbacks_; callbacks->on_read_eof) callbacks->on_read_eof();
    if (closed_) return;
  }
  // Held ciphertext must not pin receive buffers the whole loop shares.
  wire_in_.ForEach([](IoBuffer& held) {
    held.DetachFromRing();
    return true;
  });
  if (wire_in_.empty()) wire_->ReceiveRoomChanged();
}

void TlsConnection::Send(IoBuffer chunk) {
  if (closed_ || shutdown_requested_ || chunk.empty()) return;
  out_bytes_ += chunk.size();
  out_.push_back(std::move(chunk));
  if (queued_bytes() >= options_.send_high_water / 2) crossed_high_water_ = true;
  Flush();
}

absl::StatusOr<std::size_t> TlsConnection::Write(absl::Span<const std::uint8_t> bytes) {
  if (closed_) return absl::UnavailableError("TLS connection closed");
  if (bytes.empty()) return 0;
  if (!started_ || !established() || !out_.empty() || shutdown_requested_ ||
      wire_->over_high_water()) {
    // The writer hears when it can go on: on_send_drained, once the handshake is done or the
    // socket has room again.
    crossed_high_water_ = true;
    return 0;
  }
  absl::StatusOr<std::size_t> written = engine_->WritePlaintext(bytes);
  if (!written.ok()) {
    Fail(written.status());
    return written.status();
  }
  stats_.bytes_sent += *written;
  SendSealed();
  // A writer that stops at the high-water mark waits for on_send_drained, as Send()'s do.
  if (queued_bytes() >= options_.send_high_water / 2) crossed_high_water_ = true;
  return *written;
}

std::size_t TlsConnection::queued_bytes() const { return out_bytes_ + wire_->queued_bytes(); }

void TlsConnection::Flush() {
  if (flushing_ || closed_ || !wire_started_) return;
  flushing_ = true;
  std::shared_ptr<TlsConnection> keep = shared_from_this();
  // Nothing can be encrypted before the handshake is done; queued bytes wait for it.
  while (!closed_ && established() && !out_.empty() && !wire_->over_high_water()) {
    IoBuffer& front = out_.front();
    absl::StatusOr<std::size_t> written = engine_->WritePlaintext(front.data());
    if (!written.ok()) {
      flushing_ = false;
      Fail(written.status());
      return;
    }
    if (*written == 0) break;
    front.Consume(*written);
    out_bytes_ -= *written;
    stats_.bytes_sent += *written;
    if (front.empty()) out_.pop_front();
    SendSealed();
  }
  out_.ForEach([](IoBuffer& held) {
    held.DetachFromRing();
    return true;
  });
  if (!closed_ && shutdown_requested_ && out_.empty() && !close_notify_sent_ && established()) {
    close_notify_sent_ = true;
    engine_->Shutdown();
    SendSealed();
    wire_->ShutdownWrite();
  }
  flushing_ = false;
  MaybeSignalDrained();
}

bool TlsConnection::SendSealed() {
  crypto::TlsEngine::WireChunk sealed = engine_->TakeWire();
  if (sealed.size == 0) return false;
  // The engine's own block goes to the socket, not a copy of it.
  wire_->Send(IoBuffer::Adopt(std::move(sealed.storage), sealed.offset, sealed.size));
  return true;
}

void TlsConnection::MaybeSignalDrained() {
  if (closed_ || !crossed_high_water_ || queued_bytes() >= options_.send_high_water / 2) return;
  crossed_high_water_ = false;
  if (auto callbacks = callbacks_; callbacks->on_send_drained) callbacks->on_send_drained();
}

void TlsConnection::ShutdownWrite() {
  if (closed_ || shutdown_requested_) return;
  shutdown_requested_ = true;
  Flush();
}

void TlsConnection::PauseReading() {
  if (paused_) return;
  paused_ = true;
  wire_->PauseReading();
}

void TlsConnection::ResumeReading() {
  if (!paused_) return;
  paused_ = false;
  wire_->ResumeReading();
  Process();
}

void TlsConnection::Fail(const absl::Status& status) { Close(status); }

void TlsConnection::Close(const absl::Status& reason) {
  if (closed_) return;
  if (!wire_started_) closed_ = true;
  // Once started, the wire's on_closed reports it, once.
  wire_->Close(reason);
}

void TlsConnection::Reset(const absl::Status& reason) {
  if (closed_) return;
  if (!wire_started_) closed_ = true;
  wire_->Reset(reason);
}

}  // namespace nodeward::io
