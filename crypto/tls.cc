#include "crypto/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "crypto/internal.h"
#include "crypto/tls_internal.h"

namespace nodeward::crypto {
namespace {

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

int EngineIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool IsIpLiteral(const std::string& name) {
  std::uint8_t buffer[16];
  return inet_pton(AF_INET, name.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

std::vector<std::string> DescribeSans(X509* cert) {
  std::vector<std::string> out;
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (size_t i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    auto text = [](const ASN1_STRING* s) {
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         ASN1_STRING_length(s));
    };
    if (name->type == GEN_DNS) out.push_back(absl::StrCat("DNS:", text(name->d.dNSName)));
    if (name->type == GEN_URI) {
      out.push_back(absl::StrCat("URI:", text(name->d.uniformResourceIdentifier)));
    }
    if (name->type == GEN_IPADD) out.push_back("IP:<address>");
  }
  ERR_clear_error();
  return out;
}

bool HasUriSan(X509* cert, const std::string& uri) {
  bssl::UniquePtr<GENERAL_NAMES> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (size_t i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    const ASN1_STRING* s = name->d.uniformResourceIdentifier;
    if (std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         ASN1_STRING_length(s)) == uri) {
      return true;
    }
  }
  ERR_clear_error();
  return false;
}

// DestinationRule subjectAltNames: each entry may be a DNS name (wildcards as in RFC 6125),
// an IP address or a URI.
bool MatchesSubjectAltName(X509* cert, const std::string& name) {
  if (IsIpLiteral(name)) return X509_check_ip_asc(cert, name.c_str(), 0) == 1;
  if (name.find("://") != std::string::npos) return HasUriSan(cert, name);
  const bool match = X509_check_host(cert, name.data(), name.size(),
                                     X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
  ERR_clear_error();
  return match;
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

absl::StatusOr<std::vector<std::uint8_t>> AlpnWire(const std::vector<std::string>& protocols) {
  std::vector<std::uint8_t> wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("ALPN protocol '", p, "' must be 1 to 255 bytes long"));
    }
    wire.push_back(static_cast<std::uint8_t>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

}  // namespace

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

namespace {

ssl_verify_result_t VerifyCallback(SSL* ssl, std::uint8_t* out_alert) {
  auto* engine = static_cast<TlsEngine::Impl*>(SSL_get_ex_data(ssl, EngineIndex()));
  if (engine == nullptr) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  return engine->VerifyPeer(out_alert);
}

int SelectAlpn(SSL* ssl, const std::uint8_t** out, std::uint8_t* out_len, const std::uint8_t* in,
               unsigned in_len, void* arg) {
  const auto* context = static_cast<const TlsContext::Impl*>(arg);
  for (const std::string& wanted : context->server_alpn) {
    for (unsigned i = 0; i < in_len;) {
      const unsigned len = in[i];
      if (i + 1 + len > in_len) break;
      if (len == wanted.size() && std::memcmp(in + i + 1, wanted.data(), len) == 0) {
        *out = in + i + 1;
        *out_len = static_cast<std::uint8_t>(len);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + len;
    }
  }
  return context->alpn_required ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

int StoreNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* engine = static_cast<TlsEngine::Impl*>(SSL_get_ex_data(ssl, EngineIndex()));
  if (engine == nullptr) return 0;
  const TlsContext::Impl& context = engine->context->impl();
  absl::MutexLock lock(&context.sessions_mu);
  if (context.sessions.size() >= kMaxCachedSessions) context.sessions.clear();
  context.sessions[engine->sni] = bssl::UniquePtr<SSL_SESSION>(session);
  return 1;  // we own the reference now
}

absl::Status LoadCredentials(SSL_CTX* ctx, const TlsCredentials& credentials,
                             bssl::UniquePtr<X509>* leaf_out) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> chain =
      internal::ParsePemCertificates(credentials.cert_chain_pem);
  if (!chain.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate chain: ", chain.status().message()));
  }
  absl::StatusOr<bssl::UniquePtr<EVP_PKEY>> key =
      internal::ParseEcOrRsaPrivateKeyPem(credentials.private_key_pem);
  if (!key.ok()) return key.status();
  ERR_clear_error();
  if (!SSL_CTX_use_certificate(ctx, chain->front().get())) {
    return internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument, "using certificate");
  }
  for (size_t i = 1; i < chain->size(); ++i) {
    if (!SSL_CTX_add1_chain_cert(ctx, (*chain)[i].get())) {
      return internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument, "using chain");
    }
  }
  if (!SSL_CTX_use_PrivateKey(ctx, key->get()) || !SSL_CTX_check_private_key(ctx)) {
    ERR_clear_error();
    return absl::InvalidArgumentError("private key does not match the certificate");
  }
  if (leaf_out != nullptr) *leaf_out = std::move(chain->front());
  return absl::OkStatus();
}

absl::StatusOr<bssl::UniquePtr<SSL_CTX>> NewSslCtx(uint16_t min_version) {
  ERR_clear_error();
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (ctx == nullptr || !SSL_CTX_set_min_proto_version(ctx.get(), min_version) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "creating SSL_CTX");
  }
  // TLS 1.2 suites for origination only; TLS 1.3 keeps BoringSSL's order, which puts
  // AES-128-GCM first when the CPU has AES instructions and ChaCha20 first otherwise.
  if (!SSL_CTX_set_strict_cipher_list(
          ctx.get(),
          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
          "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
          "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "setting ciphers");
  }
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return ctx;
}

absl::Status ConfigureMesh(TlsContext::Impl& impl, const TlsCredentials& credentials,
                           const TrustBundle& bundle) {
  if (bundle.Empty()) return absl::InvalidArgumentError("mesh trust bundle is empty");
  absl::StatusOr<bssl::UniquePtr<SSL_CTX>> ctx = NewSslCtx(TLS1_3_VERSION);
  if (!ctx.ok()) return ctx.status();
  impl.ctx = *std::move(ctx);
  bssl::UniquePtr<X509> leaf;
  if (absl::Status s = LoadCredentials(impl.ctx.get(), credentials, &leaf); !s.ok()) return s;
  absl::StatusOr<SpiffeId> local = internal::CertificateSpiffeId(leaf.get());
  if (!local.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mesh certificate has no SPIFFE identity: ", local.status().message()));
  }
  impl.trust_domain = local->trust_domain();
  impl.verify_store = bssl::UpRef(bundle.impl().store);
  const bool is_server = impl.profile == TlsContext::Impl::Profile::kMeshServer;
  impl.is_client = !is_server;
  impl.verify_purpose = is_server ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER;
  SSL_CTX_set_custom_verify(
      impl.ctx.get(),
      is_server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
      VerifyCallback);
  // Tunnels are long-lived and pooled, so resumption buys little, and a resumed session
  // would skip the per-connection identity check.
  SSL_CTX_set_session_cache_mode(impl.ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(impl.ctx.get(), SSL_OP_NO_TICKET);
  if (is_server) {
    impl.server_alpn = {"h2"};
    impl.alpn_required = true;
    SSL_CTX_set_alpn_select_cb(impl.ctx.get(), SelectAlpn, &impl);
  } else {
    static constexpr std::uint8_t kH2[] = {2, 'h', '2'};
    if (SSL_CTX_set_alpn_protos(impl.ctx.get(), kH2, sizeof(kH2)) != 0) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "setting ALPN");
    }
  }
  return absl::OkStatus();
}

// Every CRL of `pem` into `store`, which from then on checks each certificate of a chain
// against its issuer's CRL: one missing for any CA fails verification rather than passing
// unchecked.
absl::Status AddRevocationLists(X509_STORE* store, std::string_view pem) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return internal::ErrorFromQueue(absl::StatusCode::kInternal, "reading CRLs");
  int count = 0;
  while (true) {
    bssl::UniquePtr<X509_CRL> crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
    if (crl == nullptr) {
      const uint32_t error = ERR_peek_last_error();
      if (count > 0 && ERR_GET_LIB(error) == ERR_LIB_PEM &&
          ERR_GET_REASON(error) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      return internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument,
                                      count == 0 ? "no PEM CRL" : "a CRL after the first");
    }
    if (!X509_STORE_add_crl(store, crl.get())) {
      return internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument, "adding a CRL");
    }
    ++count;
  }
  if (!X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "enabling CRL checks");
  }
  return absl::OkStatus();
}

absl::Status ConfigureOrigination(TlsContext::Impl& impl, const OriginationSettings& settings) {
  absl::StatusOr<bssl::UniquePtr<SSL_CTX>> ctx = NewSslCtx(TLS1_2_VERSION);
  if (!ctx.ok()) return ctx.status();
  impl.ctx = *std::move(ctx);
  impl.is_client = true;
  impl.insecure_skip_verify = settings.insecure_skip_verify;
  impl.subject_alt_names = settings.subject_alt_names;
  impl.sni = settings.sni;
  impl.verify_purpose = X509_PURPOSE_SSL_SERVER;
  if (!settings.insecure_skip_verify) {
    if (settings.ca_certificates_pem.empty()) {
      return absl::InvalidArgumentError(
          "origination needs caCertificates unless insecureSkipVerify is set");
    }
    auto roots = internal::ParsePemCertificates(settings.ca_certificates_pem);
    if (!roots.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("caCertificates: ", roots.status().message()));
    }
    absl::StatusOr<bssl::UniquePtr<X509_STORE>> store = internal::MakeStore(*roots);
    if (!store.ok()) return store.status();
    if (!settings.ca_crl_pem.empty()) {
      if (absl::Status s = AddRevocationLists(store->get(), settings.ca_crl_pem); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("caCrl: ", s.message()));
      }
    }
    impl.verify_store = *std::move(store);
  }
  if (settings.mode == OriginationSettings::Mode::kMutual) {
    if (!settings.client_credentials.has_value()) {
      return absl::InvalidArgumentError("MUTUAL origination needs a client certificate and key");
    }
    if (absl::Status s = LoadCredentials(impl.ctx.get(), *settings.client_credentials, nullptr);
        !s.ok()) {
      return s;
    }
  }
  SSL_CTX_set_custom_verify(impl.ctx.get(), SSL_VERIFY_PEER, VerifyCallback);
  if (!settings.alpn.empty()) {
    absl::StatusOr<std::vector<std::uint8_t>> wire = AlpnWire(settings.alpn);
    if (!wire.ok()) return wire.status();
    if (SSL_CTX_set_alpn_protos(impl.ctx.get(), wire->data(), wire->size()) != 0) {
      return internal::ErrorFromQueue(absl::StatusCode::kInternal, "setting ALPN");
    }
  }
  // Resumption saves a full handshake per connection to the same external server. A resumed
  // session is verified again, so SAN checks still apply.
  impl.cache_sessions = true;
  SSL_CTX_set_session_cache_mode(impl.ctx.get(),
                                 SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(impl.ctx.get(), StoreNewSession);
  SSL_CTX_set_reverify_on_resume(impl.ctx.get(), 1);
  return absl::OkStatus();
}

absl::Status ConfigurePlainServer(TlsContext::Impl& impl, const TlsCredentials& credentials,
                                  std::string_view client_ca_pem) {
  absl::StatusOr<bssl::UniquePtr<SSL_CTX>> ctx = NewSslCtx(TLS1_2_VERSION);
  if (!ctx.ok()) return ctx.status();
  impl.ctx = *std::move(ctx);
  if (absl::Status s = LoadCredentials(impl.ctx.get(), credentials, nullptr); !s.ok()) return s;
  impl.server_alpn = {"h2", "http/1.1"};
  SSL_CTX_set_alpn_select_cb(impl.ctx.get(), SelectAlpn, &impl);
  if (!client_ca_pem.empty()) {
    auto roots = internal::ParsePemCertificates(client_ca_pem);
    if (!roots.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("client CA: ", roots.status().message()));
    }
    absl::StatusOr<bssl::UniquePtr<X509_STORE>> store = internal::MakeStore(*roots);
    if (!store.ok()) return store.status();
    impl.verify_store = *std::move(store);
    impl.verify_purpose = X509_PURPOSE_SSL_CLIENT;
    SSL_CTX_set_custom_verify(impl.ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                              VerifyCallback);
  }
  return absl::OkStatus();
}

}  // namespace

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::MeshServer(
    const TlsCredentials& credentials, const TrustBundle& bundle) {
  auto impl = std::make_unique<Impl>();
  impl->profile = Impl::Profile::kMeshServer;
  if (absl::Status s = ConfigureMesh(*impl, credentials, bundle); !s.ok()) return s;
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::MeshClient(
    const TlsCredentials& credentials, const TrustBundle& bundle) {
  auto impl = std::make_unique<Impl>();
  impl->profile = Impl::Profile::kMeshClient;
  if (absl::Status s = ConfigureMesh(*impl, credentials, bundle); !s.ok()) return s;
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::OriginationClient(
    const OriginationSettings& settings) {
  auto impl = std::make_unique<Impl>();
  impl->profile = Impl::Profile::kOrigination;
  if (absl::Status s = ConfigureOrigination(*impl, settings); !s.ok()) return s;
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::PlainServer(
    const TlsCredentials& credentials, std::string_view client_ca_pem) {
  auto impl = std::make_unique<Impl>();
  impl->profile = Impl::Profile::kPlainServer;
  if (absl::Status s = ConfigurePlainServer(*impl, credentials, client_ca_pem); !s.ok()) return s;
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

// ---- engine ----

ssl_verify_result_t TlsEngine::Impl::VerifyPeer(std::uint8_t* out_alert) {
  const TlsContext::Impl& ctx = context->impl();
  auto reject = [&](absl::Status status, int alert) {
    verify_failure = std::move(status);
    *out_alert = static_cast<std::uint8_t>(alert);
    return ssl_verify_invalid;
  };
  STACK_OF(X509)* chain = SSL_get_peer_full_cert_chain(ssl.get());
  if (chain == nullptr || sk_X509_num(chain) == 0) {
    return reject(absl::UnauthenticatedError("peer did not present a certificate"),
                  SSL_AD_CERTIFICATE_REQUIRED);
  }
  if (ctx.insecure_skip_verify) return ssl_verify_ok;
  X509* leaf = sk_X509_value(chain, 0);
  if (auto failure = internal::VerifyChain(leaf, chain, ctx.verify_store.get(), ctx.verify_purpose,
                                           std::nullopt)) {
    return reject(
        absl::Status(failure->status.code(), absl::StrCat("peer ", failure->status.message())),
        failure->tls_alert);
  }
  if (ctx.IsMesh()) {
    absl::StatusOr<SpiffeId> id = internal::CertificateSpiffeId(leaf);
    if (!id.ok()) {
      return reject(absl::UnauthenticatedError(absl::StrCat("peer ", id.status().message())),
                    SSL_AD_BAD_CERTIFICATE);
    }
    if (id->trust_domain() != ctx.trust_domain) {
      return reject(
          absl::PermissionDeniedError(absl::StrCat("peer identity ", id->ToString(),
                                                   " is not in trust domain ", ctx.trust_domain)),
          SSL_AD_BAD_CERTIFICATE);
    }
    if (expected_peer.has_value()) {
      absl::Status s = CheckExpectedIdentity(*id, *expected_peer);
      const bool also =
          std::find(also_accepted.begin(), also_accepted.end(), *id) != also_accepted.end();
      if (!s.ok() && !also) {
        if (!also_accepted.empty()) {
          std::vector<std::string> names = {expected_peer->ToString()};
          for (const SpiffeId& other : also_accepted) names.push_back(other.ToString());
          s = absl::PermissionDeniedError(absl::StrCat("peer identity ", id->ToString(),
                                                       " is none of the expected ",
                                                       absl::StrJoin(names, ", ")));
        }
        return reject(std::move(s), SSL_AD_BAD_CERTIFICATE);
      }
    }
    peer_identity = *std::move(id);
    return ssl_verify_ok;
  }
  if (ctx.profile == TlsContext::Impl::Profile::kOrigination) {
    const std::vector<std::string>* wanted = &ctx.subject_alt_names;
    std::vector<std::string> sni_only;
    if (wanted->empty() && !sni.empty()) {
      sni_only.push_back(sni);
      wanted = &sni_only;
    }
    if (!wanted->empty() &&
        std::none_of(wanted->begin(), wanted->end(),
                     [&](const std::string& name) { return MatchesSubjectAltName(leaf, name); })) {
      return reject(absl::PermissionDeniedError(absl::StrCat(
                        "server certificate SANs [", absl::StrJoin(DescribeSans(leaf), ", "),
                        "] match none of the expected names [", absl::StrJoin(*wanted, ", "), "]")),
                    SSL_AD_BAD_CERTIFICATE);
    }
  }
  return ssl_verify_ok;
}

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

std::shared_ptr<const TlsContext> TlsContextFactory::WrapServer(bssl::UniquePtr<SSL_CTX> ctx,
                                                                std::shared_ptr<const void> owner) {
  auto impl = std::make_unique<TlsContext::Impl>();
  impl->profile = TlsContext::Impl::Profile::kGatewayServer;
  impl->ctx = std::move(ctx);
  impl->owner = std::move(owner);
  return std::shared_ptr<const TlsContext>(new TlsContext(std::move(impl)));
}

absl::Status UseCredentials(SSL_CTX* ctx, const TlsCredentials& credentials,
                            bssl::UniquePtr<X509>* leaf_out) {
  return LoadCredentials(ctx, credentials, leaf_out);
}

absl::Status AddRevocationListsTo(X509_STORE* store, std::string_view pem) {
  return AddRevocationLists(store, pem);
}

SSL* TlsContextFactory::Ssl(const TlsEngine& engine) { return engine.impl_->ssl.get(); }

SSL* EngineSsl(const TlsEngine& engine) { return TlsContextFactory::Ssl(engine); }

void SetHandshakeFailure(SSL* ssl, absl::Status status) {
  auto* engine = static_cast<TlsEngine::Impl*>(SSL_get_ex_data(ssl, EngineIndex()));
  if (engine != nullptr) engine->verify_failure = std::move(status);
}

std::vector<std::string> SubjectAltNames(X509* cert) { return DescribeSans(cert); }

bool CertificateMatchesName(X509* cert, const std::string& name) {
  return MatchesSubjectAltName(cert, name);
}

}  // namespace internal

}  // namespace nodeward::crypto
