// TLS over memory buffers: contexts (shared, immutable) and a per-connection engine that any
// event loop drives. No sockets here: the caller moves bytes between the wire and the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/spiffe_id.h"
#include "crypto/certificate.h"

namespace nodeward::crypto {

namespace internal {
struct TlsContextFactory;  // contexts built elsewhere in crypto/ (tls_internal.h)
}  // namespace internal

// A certificate chain (leaf first) with its private key, both PEM.
struct TlsCredentials {
  std::string cert_chain_pem;
  std::string private_key_pem;
};

// DestinationRule ClientTLSSettings for SIMPLE and MUTUAL origination.
struct OriginationSettings {
  enum class Mode { kSimple, kMutual };
  Mode mode = Mode::kSimple;
  std::string ca_certificates_pem;  // required unless insecure_skip_verify
  // CRLs (PEM, one or more). When set, every certificate of the server's chain must be covered
  // by a CRL of its issuer, and one listed there is refused (Envoy's rule for caCrl).
  std::string ca_crl_pem;
  std::vector<std::string> subject_alt_names;  // any one must match a DNS/URI/IP SAN
  std::string sni;
  bool insecure_skip_verify = false;
  std::optional<TlsCredentials> client_credentials;  // required for kMutual
  std::vector<std::string> alpn;
  // Resume sessions with the server (the default). Off, every handshake is a full one: for
  // clients that measure what a server's handshakes cost.
  bool resume_sessions = true;
};

// Immutable once built and shared by every connection made from it. Rotating a certificate
// means building a new context: live engines keep the one they started with.
class TlsContext {
 public:
  // Mesh mTLS (HBONE): TLS 1.3 only, client certificate required both ways, ALPN "h2",
  // peer chain verified to `bundle` and its SPIFFE ID extracted. The peer's SPIFFE ID must be
  // in the trust domain of the local certificate (which must carry a SPIFFE ID).
  static absl::StatusOr<std::shared_ptr<const TlsContext>> MeshServer(
      const TlsCredentials& credentials, const TrustBundle& bundle);
  static absl::StatusOr<std::shared_ptr<const TlsContext>> MeshClient(
      const TlsCredentials& credentials, const TrustBundle& bundle);
  // TLS origination toward a server outside the mesh.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> OriginationClient(
      const OriginationSettings& settings);
  // A plain TLS server (no client certificate unless `client_ca_pem` is set); used for
  // servers outside the mesh in tests and the sandbox.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> PlainServer(
      const TlsCredentials& credentials, std::string_view client_ca_pem = {});

  ~TlsContext();
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  friend struct internal::TlsContextFactory;
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class TlsEngine {
 public:
  enum class State { kHandshaking, kEstablished, kClosed, kFailed };

  struct ClientOptions {
    // Mesh: the peer must present exactly this SPIFFE ID (secure naming)...
    std::optional<SpiffeId> expected_peer;
    std::string sni;  // overrides the context's SNI when set
    // ... or one of these (a DestinationRule's subjectAltNames under ISTIO_MUTUAL).
    std::vector<SpiffeId> also_accepted;
  };
  struct ServerOptions {
    // Mesh: when set, only these peers are accepted; otherwise any chain to the bundle.
    std::optional<SpiffeId> expected_peer;
  };

  static std::unique_ptr<TlsEngine> Client(std::shared_ptr<const TlsContext> context,
                                           ClientOptions options = {});
  static std::unique_ptr<TlsEngine> Server(std::shared_ptr<const TlsContext> context,
                                           ServerOptions options = {});
  ~TlsEngine();

  // Wire side. FeedWire takes ciphertext from the peer and returns how much it consumed
  // (less than offered when its input buffer is full: feed the rest later).
  // ReadWire copies pending ciphertext for the peer into `out`.
  std::size_t FeedWire(absl::Span<const std::uint8_t> in);
  std::size_t PendingWire() const;
  std::size_t ReadWire(absl::Span<std::uint8_t> out);
  // The transport reached end of stream: nothing more will be fed. A peer that stops without
  // close_notify then shows as a truncation failure in Advance or ReadPlaintext.
  void FeedWireEof();

  // Copy-free variants of FeedWire/ReadWire for loops that receive or send straight from the
  // engine's buffers: fill up to WireInputSpace().size() bytes and CommitWire(n); send from
  // PeekWire() and ConsumeWire(n). The spans are valid until the next call on the engine.
  absl::Span<std::uint8_t> WireInputSpace();
  void CommitWire(std::size_t n);
  absl::Span<const std::uint8_t> PeekWire() const;
  void ConsumeWire(std::size_t n);
  // All pending ciphertext, moved out (usually without a copy) for a transport that queues
  // it: the bytes are storage[offset, offset + size). size == 0 when nothing is pending.
  struct WireChunk {
    std::unique_ptr<std::uint8_t[]> storage;
    std::size_t offset = 0;
    std::size_t size = 0;
  };
  WireChunk TakeWire();

  // Drives the handshake and decryption with what was fed. Returns the failure, with its
  // reason, when the connection failed; OK otherwise (also while still handshaking).
  absl::Status Advance();

  // Plaintext side. WritePlaintext encrypts and returns the bytes accepted (0 until the
  // handshake is done); ReadPlaintext returns decrypted bytes, 0 when none are ready.
  absl::StatusOr<std::size_t> WritePlaintext(absl::Span<const std::uint8_t> in);
  absl::StatusOr<std::size_t> ReadPlaintext(absl::Span<std::uint8_t> out);

  // Sends close_notify. The peer's close_notify shows as PeerClosed(); state() is kClosed once
  // both directions are closed.
  void Shutdown();
  bool PeerClosed() const;

  State state() const;
  // The peer's SPIFFE ID once established (mesh profiles), else nullopt.
  const std::optional<SpiffeId>& peer_identity() const;
  std::string negotiated_alpn() const;
  // True when the handshake resumed an earlier session (origination only).
  bool session_resumed() const;
  // The reason of the failure when state() == kFailed.
  const absl::Status& error() const;

  struct Impl;

 private:
  friend struct internal::TlsContextFactory;
  explicit TlsEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nodeward::crypto
