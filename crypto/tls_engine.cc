// The memory-BIO TLS engine: ciphertext in and out through byte queues, the handshake, reads,
// writes and shutdown, on a context of tls.cc (which also verifies the peer).
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "crypto/internal.h"
#include "crypto/tls.h"
#include "crypto/tls_impl.h"
#include "crypto/tls_internal.h"

namespace nodeward::crypto {
namespace {

int WireRead(BIO* bio, char* out, int len) {
  auto* input = static_cast<WireInput*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (input->queue.Size() == 0) {
    if (input->eof) return 0;
    BIO_set_retry_read(bio);
    return -1;
  }
  const std::size_t n = std::min<std::size_t>(input->queue.Size(), static_cast<std::size_t>(len));
  std::memcpy(out, input->queue.Data(), n);
  input->queue.Consume(n);
  return static_cast<int>(n);
}

int WireWrite(BIO* bio, const char* data, int len) {
  auto* output = static_cast<ByteQueue*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  output->Append(reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(len));
  return len;
}

// The BIO interface fixes these parameter types.
long WireCtrl(BIO* bio, int cmd, long larg, void* parg) {  // NOLINT(google-runtime-int)
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

const BIO_METHOD* WireBioMethod() {
  static const BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "nodeward-wire");
    if (m == nullptr) return m;  // engines then fail to start with a reason
    BIO_meth_set_read(m, WireRead);
    BIO_meth_set_write(m, WireWrite);
    BIO_meth_set_ctrl(m, WireCtrl);
    return m;
  }();
  return method;
}

bool IsCertificateAlert(int alert) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_ACCESS_DENIED:
    case SSL_AD_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status TlsEngine::Impl::DescribeFailure(int ssl_error, bool during_handshake) {
  if (verify_failure.has_value()) {
    ERR_clear_error();
    return *verify_failure;
  }
  const std::uint32_t packed = ERR_peek_error();
  if (packed == 0 && (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN)) {
    return absl::UnavailableError(during_handshake
                                      ? "handshake truncated: peer closed the connection"
                                      : "connection truncated: peer closed without close_notify");
  }
  if (ERR_GET_LIB(packed) == ERR_LIB_SSL) {
    const int reason = ERR_GET_REASON(packed);
    if (reason >= SSL_AD_REASON_OFFSET) {
      const int alert = reason - SSL_AD_REASON_OFFSET;
      ERR_clear_error();
      const std::string message =
          absl::StrCat("peer sent alert: ", SSL_alert_desc_string_long(alert));
      return IsCertificateAlert(alert) ? absl::UnauthenticatedError(message)
                                       : absl::UnavailableError(message);
    }
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      ERR_clear_error();
      return absl::UnauthenticatedError("peer did not present a certificate");
    }
  }
  return absl::UnavailableError(
      internal::DrainErrors(during_handshake ? "TLS handshake failed" : "TLS connection failed"));
}

void TlsEngine::Impl::OnEstablished() {
  const TlsContext::Impl& ctx = context->impl();
  if (ctx.IsMesh()) {
    const std::uint8_t* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_len);
    if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != "h2") {
      Fail(absl::UnavailableError("peer did not negotiate ALPN h2"));
      return;
    }
    if (!peer_identity.has_value()) {
      Fail(absl::UnauthenticatedError("peer identity was not verified"));
      return;
    }
  }
  state = State::kEstablished;
}

absl::Status TlsEngine::Impl::Handshake() {
  ERR_clear_error();
  const int ret = SSL_do_handshake(ssl.get());
  if (ret == 1) {
    OnEstablished();
    return state == State::kFailed ? error : absl::OkStatus();
  }
  const int ssl_error = SSL_get_error(ssl.get(), ret);
  if (ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE) {
    return absl::OkStatus();
  }
  Fail(DescribeFailure(ssl_error, /*during_handshake=*/true));
  return error;
}

TlsEngine::TlsEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsEngine::~TlsEngine() = default;

namespace {

std::unique_ptr<TlsEngine::Impl> NewEngineImpl(std::shared_ptr<const TlsContext> context,
                                               bool is_client,
                                               std::optional<SpiffeId> expected_peer,
                                               std::string sni) {
  auto impl = std::make_unique<TlsEngine::Impl>();
  impl->context = std::move(context);
  impl->is_client = is_client;
  impl->expected_peer = std::move(expected_peer);
  impl->sni = std::move(sni);
  if (impl->context == nullptr) {
    impl->Fail(absl::InvalidArgumentError("TLS engine created without a context"));
    return impl;
  }
  const TlsContext::Impl& ctx = impl->context->impl();
  if (ctx.is_client != is_client) {
    impl->Fail(absl::InvalidArgumentError(is_client ? "client engine needs a client context"
                                                    : "server engine needs a server context"));
    return impl;
  }
  ERR_clear_error();
  impl->ssl.reset(SSL_new(ctx.ctx.get()));
  const BIO_METHOD* wire_method = WireBioMethod();
  BIO* rbio = wire_method == nullptr ? nullptr : BIO_new(wire_method);
  BIO* wbio = wire_method == nullptr ? nullptr : BIO_new(wire_method);
  if (impl->ssl == nullptr || rbio == nullptr || wbio == nullptr) {
    BIO_free(rbio);
    BIO_free(wbio);
    impl->ssl.reset();
    impl->Fail(internal::ErrorFromQueue(absl::StatusCode::kResourceExhausted, "creating SSL"));
    return impl;
  }
  BIO_set_data(rbio, &impl->wire_in);
  BIO_set_init(rbio, 1);
  BIO_set_data(wbio, &impl->wire_out);
  BIO_set_init(wbio, 1);
  SSL_set_bio(impl->ssl.get(), rbio, wbio);
  SSL_set_ex_data(impl->ssl.get(), EngineIndex(), impl.get());
  if (is_client) {
    SSL_set_connect_state(impl->ssl.get());
    if (!impl->sni.empty() && !IsIpLiteral(impl->sni) &&
        !SSL_set_tlsext_host_name(impl->ssl.get(), impl->sni.c_str())) {
      impl->Fail(internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument,
                                          absl::StrCat("invalid SNI '", impl->sni, "'")));
      return impl;
    }
    if (ctx.cache_sessions) {
      absl::MutexLock lock(&ctx.sessions_mu);
      if (auto it = ctx.sessions.find(impl->sni); it != ctx.sessions.end()) {
        SSL_set_session(impl->ssl.get(), it->second.get());
      }
    }
  } else {
    SSL_set_accept_state(impl->ssl.get());
  }
  return impl;
}

}  // namespace

std::unique_ptr<TlsEngine> TlsEngine::Client(std::shared_ptr<const TlsContext> context,
                                             ClientOptions options) {
  std::string sni = options.sni;
  if (sni.empty() && context != nullptr) sni = context->impl().sni;
  std::unique_ptr<TlsEngine::Impl> impl = NewEngineImpl(
      std::move(context), /*is_client=*/true, std::move(options.expected_peer), std::move(sni));
  impl->also_accepted = std::move(options.also_accepted);
  return std::unique_ptr<TlsEngine>(new TlsEngine(std::move(impl)));
}

std::unique_ptr<TlsEngine> TlsEngine::Server(std::shared_ptr<const TlsContext> context,
                                             ServerOptions options) {
  return std::unique_ptr<TlsEngine>(new TlsEngine(NewEngineImpl(
      std::move(context), /*is_client=*/false, std::move(options.expected_peer), "")));
}

std::size_t TlsEngine::FeedWire(absl::Span<const std::uint8_t> in) {
  if (impl_->wire_in.eof) return 0;
  // A failed or closed connection reads nothing more; swallowing input keeps callers that
  // drain their socket from spinning.
  if (impl_->state == State::kFailed || impl_->state == State::kClosed) return in.size();
  const std::size_t room =
      kMaxBufferedWireIn - std::min(kMaxBufferedWireIn, impl_->wire_in.queue.Size());
  const std::size_t n = std::min(room, in.size());
  impl_->wire_in.queue.Append(in.data(), n);
  return n;
}

void TlsEngine::FeedWireEof() { impl_->wire_in.eof = true; }

absl::Span<std::uint8_t> TlsEngine::WireInputSpace() {
  const std::size_t used = impl_->wire_in.queue.Size();
  if (impl_->wire_in.eof || used >= kMaxBufferedWireIn) return {};
  return impl_->wire_in.queue.Reserve(kMaxBufferedWireIn - used)
      .subspan(0, kMaxBufferedWireIn - used);
}

void TlsEngine::CommitWire(std::size_t n) {
  const std::size_t used = impl_->wire_in.queue.Size();
  impl_->wire_in.queue.Commit(std::min(n, kMaxBufferedWireIn - std::min(used, kMaxBufferedWireIn)));
}

std::size_t TlsEngine::PendingWire() const { return impl_->wire_out.Size(); }

absl::Span<const std::uint8_t> TlsEngine::PeekWire() const {
  return absl::Span<const std::uint8_t>(impl_->wire_out.Data(), impl_->wire_out.Size());
}

void TlsEngine::ConsumeWire(std::size_t n) { impl_->wire_out.Consume(n); }

TlsEngine::WireChunk TlsEngine::TakeWire() { return impl_->wire_out.Take(); }

std::size_t TlsEngine::ReadWire(absl::Span<std::uint8_t> out) {
  const std::size_t n = std::min(out.size(), impl_->wire_out.Size());
  if (n > 0) std::memcpy(out.data(), impl_->wire_out.Data(), n);
  impl_->wire_out.Consume(n);
  return n;
}

absl::Status TlsEngine::Advance() {
  switch (impl_->state) {
    case State::kHandshaking:
      return impl_->Handshake();
    case State::kFailed:
      return impl_->error;
    case State::kEstablished:
    case State::kClosed:
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::size_t> TlsEngine::WritePlaintext(absl::Span<const std::uint8_t> in) {
  if (impl_->state == State::kHandshaking) {
    if (absl::Status s = impl_->Handshake(); !s.ok()) return s;
    if (impl_->state == State::kHandshaking) return 0;
  }
  if (impl_->state == State::kFailed) return impl_->error;
  if (impl_->shutdown_sent || impl_->state == State::kClosed) {
    return absl::FailedPreconditionError("write after close_notify was sent");
  }
  if (in.empty() || impl_->wire_out.Size() >= kMaxPendingWireOut) return 0;
  const std::size_t n =
      std::min({in.size(), kMaxPendingWireOut - impl_->wire_out.Size(), std::size_t{INT_MAX}});
  ERR_clear_error();
  // The wire BIO never pushes back, so SSL_write seals all `n` bytes or fails.
  const int ret = SSL_write(impl_->ssl.get(), in.data(), static_cast<int>(n));
  if (ret > 0) return static_cast<std::size_t>(ret);
  impl_->Fail(impl_->DescribeFailure(SSL_get_error(impl_->ssl.get(), ret), false));
  return impl_->error;
}

absl::StatusOr<std::size_t> TlsEngine::ReadPlaintext(absl::Span<std::uint8_t> out) {
  if (impl_->state == State::kHandshaking) {
    if (absl::Status s = impl_->Handshake(); !s.ok()) return s;
    if (impl_->state == State::kHandshaking) return 0;
  }
  if (impl_->state == State::kFailed) return impl_->error;
  if (impl_->peer_closed) return 0;
  std::size_t total = 0;
  while (total < out.size()) {
    ERR_clear_error();
    const int ret = SSL_read(impl_->ssl.get(), out.data() + total,
                             static_cast<int>(std::min(out.size() - total, std::size_t{INT_MAX})));
    if (ret > 0) {
      total += static_cast<std::size_t>(ret);
      continue;
    }
    const int ssl_error = SSL_get_error(impl_->ssl.get(), ret);
    if (ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE) break;
    if (ssl_error == SSL_ERROR_ZERO_RETURN) {
      impl_->peer_closed = true;
      if (impl_->shutdown_sent) impl_->state = State::kClosed;
      break;
    }
    impl_->Fail(impl_->DescribeFailure(ssl_error, /*during_handshake=*/false));
    // Hand over what was decrypted before the failure; the next call reports it.
    if (total > 0) return total;
    return impl_->error;
  }
  return total;
}

void TlsEngine::Shutdown() {
  if (impl_->shutdown_sent || impl_->ssl == nullptr) return;
  impl_->shutdown_sent = true;
  if (impl_->state == State::kHandshaking) {
    // Nothing authenticated was exchanged, so there is nothing to close cleanly.
    impl_->state = State::kClosed;
    return;
  }
  if (impl_->state != State::kEstablished) return;
  ERR_clear_error();
  const int ret = SSL_shutdown(impl_->ssl.get());
  if (ret < 0) {
    impl_->Fail(impl_->DescribeFailure(SSL_get_error(impl_->ssl.get(), ret), false));
    return;
  }
  if (impl_->peer_closed) impl_->state = State::kClosed;
}

bool TlsEngine::PeerClosed() const { return impl_->peer_closed; }
TlsEngine::State TlsEngine::state() const { return impl_->state; }
const std::optional<SpiffeId>& TlsEngine::peer_identity() const { return impl_->peer_identity; }
const absl::Status& TlsEngine::error() const { return impl_->error; }

bool TlsEngine::session_resumed() const {
  return impl_->ssl != nullptr && SSL_session_reused(impl_->ssl.get()) == 1;
}

std::string TlsEngine::negotiated_alpn() const {
  if (impl_->ssl == nullptr) return "";
  const std::uint8_t* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(impl_->ssl.get(), &alpn, &alpn_len);
  return std::string(reinterpret_cast<const char*>(alpn), alpn_len);
}

namespace internal {

SSL* TlsContextFactory::Ssl(const TlsEngine& engine) { return engine.impl_->ssl.get(); }

SSL* EngineSsl(const TlsEngine& engine) { return TlsContextFactory::Ssl(engine); }

}  // namespace internal

}  // namespace nodeward::crypto
