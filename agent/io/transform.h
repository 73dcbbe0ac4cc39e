// A byte transform that sits on one side of a Relay. The "wire" side carries the transformed
// stream (e.g. TLS records); the other side plain bytes. Sans-IO: the relay moves the bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace nodeward::io {

class Transform {
 public:
  virtual ~Transform() = default;

  // Bytes received on the wire side; returns how many were taken (fewer when the transform's
  // input is full: offer the rest after reading plaintext).
  virtual std::size_t FeedWire(absl::Span<const std::uint8_t> bytes) = 0;
  // Makes progress on what was fed (handshake, decryption). An error ends the relay.
  virtual absl::Status Advance() = 0;
  // Decoded bytes for the plain side; 0 when none are ready.
  virtual absl::StatusOr<std::size_t> ReadPlaintext(absl::Span<std::uint8_t> out) = 0;
  // Plain bytes to encode; returns how many were taken (0 until the transform is ready).
  virtual absl::StatusOr<std::size_t> WritePlaintext(absl::Span<const std::uint8_t> bytes) = 0;
  // Encoded bytes waiting to go out on the wire side.
  virtual std::size_t PendingWire() const = 0;
  virtual std::size_t ReadWire(absl::Span<std::uint8_t> out) = 0;
  // The plain side has ended: finish the encoded stream (e.g. TLS close_notify).
  virtual void CloseWrite() = 0;
  // The wire peer has ended its encoded stream cleanly.
  virtual bool PeerClosed() const = 0;
  // The wire connection reached EOF. An error when the stream cannot be complete (e.g. the
  // peer left in the middle of a TLS handshake), which ends the relay.
  virtual absl::Status WireEnded() = 0;
};

}  // namespace nodeward::io
