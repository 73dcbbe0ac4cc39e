// Internal to crypto/: what tls.cc (contexts and the verification of peers) and tls_engine.cc
// (the memory-BIO engine that runs connections on them) share: the two Impl structs and the
// engine's byte queues.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/spiffe_id.h"
#include "crypto/tls.h"

namespace nodeward::crypto {
namespace internal {

// Ciphertext accepted from the wire before the engine pushes back: eight full records, so a
// reader can drain several records per call without the buffer ever growing further.
constexpr std::size_t kMaxBufferedWireIn = std::size_t{8} * (16384 + 256);
// Ciphertext waiting for the wire before WritePlaintext stops accepting plaintext.
constexpr std::size_t kMaxPendingWireOut = std::size_t{8} * 16384;
// Resumable sessions kept per origination context; beyond this the cache starts over.
constexpr std::size_t kMaxCachedSessions = 1024;

// A contiguous byte queue: appends at the end, consumes from the front, compacts only when
// the free tail runs out, so reading a record costs one copy and no memmove.
class ByteQueue {
 public:
  std::size_t Size() const { return end_ - begin_; }
  const std::uint8_t* Data() const { return buffer_.get() + begin_; }

  void Consume(std::size_t n) {
    begin_ += std::min(n, Size());
    if (begin_ == end_) begin_ = end_ = 0;
  }

  // Makes room for at least `n` more bytes and returns all of the free tail.
  absl::Span<std::uint8_t> Reserve(std::size_t n) {
    if (capacity_ - end_ < n) {
      const std::size_t used = Size();
      if (capacity_ - used >= n && begin_ > 0) {
        std::memmove(buffer_.get(), buffer_.get() + begin_, used);
      } else {
        // After Take() gave the block away, start at its size again rather than regrow it.
        const std::size_t capacity = std::max({capacity_ * 2, used + n, given_away_capacity_});
        given_away_capacity_ = 0;
        auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(capacity);
        if (used > 0) std::memcpy(bigger.get(), buffer_.get() + begin_, used);
        buffer_ = std::move(bigger);
        capacity_ = capacity;
      }
      begin_ = 0;
      end_ = used;
    }
    return absl::Span<std::uint8_t>(buffer_.get() + end_, capacity_ - end_);
  }

  void Commit(std::size_t n) { end_ += std::min(n, capacity_ - end_); }

  void Append(const std::uint8_t* data, std::size_t n) {
    if (n == 0) return;
    std::memcpy(Reserve(n).data(), data, n);
    end_ += n;
  }

  // Everything queued, moved out. The storage itself goes when the bytes fill at least a
  // quarter of it (no copy); otherwise they are copied into a block of their own size, so a
  // queue that once grew large does not hand out mostly empty blocks.
  TlsEngine::WireChunk Take() {
    TlsEngine::WireChunk chunk;
    chunk.size = Size();
    if (chunk.size == 0) return chunk;
    if (chunk.size * 4 >= capacity_) {
      chunk.storage = std::move(buffer_);
      chunk.offset = begin_;
      given_away_capacity_ = capacity_;
      capacity_ = 0;
    } else {
      chunk.storage = std::make_unique_for_overwrite<std::uint8_t[]>(chunk.size);
      std::memcpy(chunk.storage.get(), Data(), chunk.size);
    }
    begin_ = end_ = 0;
    return chunk;
  }

 private:
  std::unique_ptr<std::uint8_t[]> buffer_;
  std::size_t capacity_ = 0;
  std::size_t given_away_capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

struct WireInput {
  ByteQueue queue;
  bool eof = false;
};

// The SSL ex_data slot that leads from a connection to its engine (the verify callback's way
// back).
int EngineIndex();
// Whether `name` is an IPv4 or IPv6 literal (never sent as SNI, matched as an IP SAN).
bool IsIpLiteral(const std::string& name);

}  // namespace internal

using internal::ByteQueue;
using internal::EngineIndex;
using internal::IsIpLiteral;
using internal::kMaxBufferedWireIn;
using internal::kMaxCachedSessions;
using internal::kMaxPendingWireOut;
using internal::WireInput;

struct TlsContext::Impl {
  enum class Profile { kMeshServer, kMeshClient, kOrigination, kPlainServer, kGatewayServer };
  Profile profile;
  bool is_client = false;
  bssl::UniquePtr<SSL_CTX> ctx;
  // Roots the peer chain must verify to; null only with insecure_skip_verify.
  bssl::UniquePtr<X509_STORE> verify_store;
  int verify_purpose = 0;
  // Mesh: the local trust domain, which peers must share.
  std::string trust_domain;
  // Origination.
  std::vector<std::string> subject_alt_names;
  std::string sni;
  bool insecure_skip_verify = false;
  bool cache_sessions = false;
  // Server: protocols we accept, in our preference order; mesh servers refuse anything else.
  std::vector<std::string> server_alpn;
  bool alpn_required = false;
  // kGatewayServer: what its callbacks reach through the SSL_CTX (gateway_tls.cc).
  std::shared_ptr<const void> owner;

  // Sessions to resume, keyed by SNI. The context is otherwise immutable; this cache is the
  // one thing engines on any thread write to, hence the lock.
  mutable absl::Mutex sessions_mu;
  mutable absl::flat_hash_map<std::string, bssl::UniquePtr<SSL_SESSION>> sessions
      ABSL_GUARDED_BY(sessions_mu);

  bool IsMesh() const { return profile == Profile::kMeshServer || profile == Profile::kMeshClient; }
};

struct TlsEngine::Impl {
  std::shared_ptr<const TlsContext> context;
  bool is_client = false;
  std::optional<SpiffeId> expected_peer;
  std::vector<SpiffeId> also_accepted;
  std::string sni;  // client: the name sent and, without subjectAltNames, checked

  WireInput wire_in;
  ByteQueue wire_out;
  State state = State::kHandshaking;
  absl::Status error;
  std::optional<SpiffeId> peer_identity;
  // Set by the verify callback so the handshake failure names the real reason.
  std::optional<absl::Status> verify_failure;
  bool peer_closed = false;
  bool shutdown_sent = false;
  bssl::UniquePtr<SSL> ssl;  // last: freed before the buffers its BIOs point into

  void Fail(absl::Status status) {
    // An identity seen during a handshake that then failed was never authenticated.
    if (state == State::kHandshaking) peer_identity.reset();
    state = State::kFailed;
    error = std::move(status);
  }
  absl::Status DescribeFailure(int ssl_error, bool during_handshake);
  ssl_verify_result_t VerifyPeer(std::uint8_t* out_alert);
  absl::Status Handshake();
  void OnEstablished();
};

}  // namespace nodeward::crypto
