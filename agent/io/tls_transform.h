// Puts a crypto::TlsEngine on the wire side of a Relay: TLS toward that peer, plaintext toward
// the other connection.
#pragma once

#include <memory>

#include "agent/io/transform.h"
#include "crypto/tls.h"

namespace nodeward::io {

class TlsTransform : public Transform {
 public:
  explicit TlsTransform(std::unique_ptr<crypto::TlsEngine> engine) : engine_(std::move(engine)) {}

  std::size_t FeedWire(absl::Span<const std::uint8_t> bytes) override;
  absl::Status Advance() override;
  absl::StatusOr<std::size_t> ReadPlaintext(absl::Span<std::uint8_t> out) override;
  absl::StatusOr<std::size_t> WritePlaintext(absl::Span<const std::uint8_t> bytes) override;
  std::size_t PendingWire() const override;
  std::size_t ReadWire(absl::Span<std::uint8_t> out) override;
  void CloseWrite() override;
  bool PeerClosed() const override;
  absl::Status WireEnded() override;

  const crypto::TlsEngine& engine() const { return *engine_; }

 private:
  std::unique_ptr<crypto::TlsEngine> engine_;
};

}  // namespace nodeward::io
