#include "agent/io/tls_transform.h"

namespace nodeward::io {

std::size_t TlsTransform::FeedWire(absl::Span<const std::uint8_t> bytes) {
  return engine_->FeedWire(bytes);
}

absl::Status TlsTransform::Advance() { return engine_->Advance(); }

absl::StatusOr<std::size_t> TlsTransform::ReadPlaintext(absl::Span<std::uint8_t> out) {
  return engine_->ReadPlaintext(out);
}

absl::StatusOr<std::size_t> TlsTransform::WritePlaintext(absl::Span<const std::uint8_t> bytes) {
  return engine_->WritePlaintext(bytes);
}

std::size_t TlsTransform::PendingWire() const { return engine_->PendingWire(); }

std::size_t TlsTransform::ReadWire(absl::Span<std::uint8_t> out) { return engine_->ReadWire(out); }

void TlsTransform::CloseWrite() { engine_->Shutdown(); }

bool TlsTransform::PeerClosed() const { return engine_->PeerClosed(); }

absl::Status TlsTransform::WireEnded() {
  switch (engine_->state()) {
    case crypto::TlsEngine::State::kFailed:
      return engine_->error();
    case crypto::TlsEngine::State::kHandshaking:
      return absl::UnavailableError("peer closed the connection during the TLS handshake");
    default:
      return absl::OkStatus();
  }
}

}  // namespace nodeward::io
