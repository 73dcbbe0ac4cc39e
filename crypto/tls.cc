// TLS contexts (mesh, origination, plain and gateway servers) and the verification of peers;
// the engine that runs connections on them is tls_engine.cc.
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
#include "crypto/tls_impl.h"
#include "crypto/tls_internal.h"

namespace nodeward::crypto {
namespace internal {

int EngineIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool IsIpLiteral(const std::string& name) {
  std::uint8_t buffer[16];
  return inet_pton(AF_INET, name.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

}  // namespace internal

namespace {

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
  if (!settings.resume_sessions) {
    SSL_CTX_set_session_cache_mode(impl.ctx.get(), SSL_SESS_CACHE_OFF);
    return absl::OkStatus();
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
