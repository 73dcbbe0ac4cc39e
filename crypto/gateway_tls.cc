#include "crypto/gateway_tls.h"

#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "crypto/internal.h"
#include "crypto/tls_internal.h"

namespace nodeward::crypto {

using ClientAuth = GatewayServerSettings::ClientAuth;

struct GatewayServerContext::Impl {
  std::string name;
  ClientAuth client_auth = ClientAuth::kNone;
  bssl::UniquePtr<SSL_CTX> ctx;  // the certificate, the key and the cipher list
  bssl::UniquePtr<X509_STORE> client_roots;
  std::string trust_domain;  // kMesh: the server certificate's, which clients must share
  std::vector<std::string> subject_alt_names;
  std::vector<std::string> spki_pins;  // SHA-256 digests, raw
  std::vector<std::string> hash_pins;  // SHA-256 digests, raw
  uint16_t min_version = TLS1_2_VERSION;
  uint16_t max_version = TLS1_3_VERSION;
  ServedCertificate certificate;
};

namespace {

// Istio's cipher suites for gateways when a server names none (TLS 1.2; TLS 1.3 is fixed).
constexpr char kIstioGatewayCiphers[] =
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256";

uint16_t VersionNumber(TlsVersion version, uint16_t fallback) {
  switch (version) {
    case TlsVersion::kDefault:
      return fallback;
    case TlsVersion::kTls1_0:
      return TLS1_VERSION;
    case TlsVersion::kTls1_1:
      return TLS1_1_VERSION;
    case TlsVersion::kTls1_2:
      return TLS1_2_VERSION;
    case TlsVersion::kTls1_3:
      return TLS1_3_VERSION;
  }
  return fallback;
}

bool IsTls13Suite(absl::string_view name) {
  return name == "TLS_AES_128_GCM_SHA256" || name == "TLS_AES_256_GCM_SHA384" ||
         name == "TLS_CHACHA20_POLY1305_SHA256";
}

absl::StatusOr<std::string> CipherList(const std::vector<std::string>& names) {
  bssl::UniquePtr<SSL_CTX> scratch(SSL_CTX_new(TLS_method()));
  if (scratch == nullptr) return internal::ErrorFromQueue(absl::StatusCode::kInternal, "ciphers");
  std::vector<std::string> kept;
  std::vector<std::string> unknown;
  for (const std::string& name : names) {
    if (IsTls13Suite(name)) continue;
    if (SSL_CTX_set_strict_cipher_list(scratch.get(), name.c_str())) {
      kept.push_back(name);
    } else {
      unknown.push_back(name);
    }
  }
  ERR_clear_error();
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cipherSuites: ", absl::StrJoin(unknown, ", "),
                                                   unknown.size() == 1 ? " is" : " are",
                                                   " not a cipher suite BoringSSL knows"));
  }
  return kept.empty() ? std::string(kIstioGatewayCiphers) : absl::StrJoin(kept, ":");
}

std::string Sha256(const uint8_t* data, std::size_t size) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(data, size, digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

// The SHA-256 digests of `cert`'s DER and of its SubjectPublicKeyInfo, raw; empty on failure.
std::pair<std::string, std::string> Digests(X509* cert) {
  uint8_t* der = nullptr;
  const int der_length = i2d_X509(cert, &der);
  uint8_t* spki = nullptr;
  const int spki_length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &spki);
  std::pair<std::string, std::string> digests(der_length > 0 ? Sha256(der, der_length) : "",
                                              spki_length > 0 ? Sha256(spki, spki_length) : "");
  OPENSSL_free(der);
  OPENSSL_free(spki);
  return digests;
}

absl::StatusOr<std::vector<std::string>> DecodePins(const std::vector<std::string>& written,
                                                    bool base64) {
  std::vector<std::string> pins;
  for (const std::string& pin : written) {
    std::string raw;
    if (base64) {
      if (!absl::Base64Unescape(pin, &raw)) raw.clear();
    } else {
      const std::string hex = absl::StrReplaceAll(pin, {{":", ""}});
      if (std::all_of(hex.begin(), hex.end(), absl::ascii_isxdigit) && hex.size() % 2 == 0) {
        raw = absl::HexStringToBytes(hex);
      }
    }
    if (raw.size() != SHA256_DIGEST_LENGTH) {
      return absl::InvalidArgumentError(
          absl::StrCat(base64 ? "verifyCertificateSpki" : "verifyCertificateHash", ": \"", pin,
                       "\" is not a ", base64 ? "base64" : "hex", " SHA-256 digest"));
    }
    pins.push_back(std::move(raw));
  }
  return pins;
}

struct ListenerState {
  std::vector<std::shared_ptr<const GatewayServerContext>> servers;
  GatewayServerSelector selector;
};

// What one handshake chose and why it failed; lives in the connection's ex_data.
struct ConnectionState {
  const ListenerState* listener = nullptr;
  std::optional<std::size_t> server;
  std::optional<std::string> sni;
  GatewayHandshakeFailure failure = GatewayHandshakeFailure::kNone;
  std::optional<ServedCertificate> client_certificate;
  std::optional<SpiffeId> client_identity;
};

void FreeConnectionState(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*index*/,
                         long /*argl*/, void* /*argp*/) {  // NOLINT(google-runtime-int)
  delete static_cast<ConnectionState*>(ptr);
}

int ConnectionIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeConnectionState);
  return index;
}

int ListenerIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ConnectionState* FindState(const SSL* ssl) {
  return static_cast<ConnectionState*>(SSL_get_ex_data(ssl, ConnectionIndex()));
}

// BoringSSL hands the info callback a const connection; its ex_data is still ours to set.
ConnectionState& StateOf(const SSL* ssl) {
  ConnectionState* state = FindState(ssl);
  if (state == nullptr) {
    state = new ConnectionState();
    SSL_set_ex_data(const_cast<SSL*>(ssl), ConnectionIndex(), state);
  }
  return *state;
}

ssl_verify_result_t Reject(SSL* ssl, ConnectionState& state, GatewayHandshakeFailure failure,
                           absl::Status status, int alert, uint8_t* out_alert) {
  state.failure = failure;
  internal::SetHandshakeFailure(ssl, std::move(status));
  *out_alert = static_cast<uint8_t>(alert);
  return ssl_verify_invalid;
}

ssl_verify_result_t VerifyClient(SSL* ssl, uint8_t* out_alert) {
  ConnectionState& state = StateOf(ssl);
  if (state.listener == nullptr || !state.server.has_value()) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  const GatewayServerContext::Impl& server = state.listener->servers[*state.server]->impl();
  STACK_OF(X509)* chain = SSL_get_peer_full_cert_chain(ssl);
  if (chain == nullptr || sk_X509_num(chain) == 0) {
    return Reject(ssl, state, GatewayHandshakeFailure::kClientCertificateRequired,
                  absl::UnauthenticatedError("client did not present a certificate"),
                  SSL_AD_CERTIFICATE_REQUIRED, out_alert);
  }
  X509* leaf = sk_X509_value(chain, 0);
  if (auto failure = internal::VerifyChain(leaf, chain, server.client_roots.get(),
                                           X509_PURPOSE_SSL_CLIENT, std::nullopt)) {
    return Reject(
        ssl, state, GatewayHandshakeFailure::kClientCertificateUntrusted,
        absl::Status(failure->status.code(), absl::StrCat("client ", failure->status.message())),
        failure->tls_alert, out_alert);
  }
  if (server.client_auth == ClientAuth::kMesh) {
    absl::StatusOr<SpiffeId> id = internal::CertificateSpiffeId(leaf);
    if (!id.ok() || id->trust_domain() != server.trust_domain) {
      return Reject(
          ssl, state, GatewayHandshakeFailure::kNotMeshIdentity,
          absl::PermissionDeniedError(absl::StrCat(
              "client certificate is not a mesh identity of trust domain ", server.trust_domain,
              ": ", id.ok() ? id->ToString() : std::string(id.status().message()))),
          SSL_AD_BAD_CERTIFICATE, out_alert);
    }
    state.client_identity = *std::move(id);
  }
  std::vector<std::string> sans = internal::SubjectAltNames(leaf);
  if (!server.subject_alt_names.empty() &&
      std::none_of(
          server.subject_alt_names.begin(), server.subject_alt_names.end(),
          [&](const std::string& name) { return internal::CertificateMatchesName(leaf, name); })) {
    return Reject(ssl, state, GatewayHandshakeFailure::kSubjectAltNameMismatch,
                  absl::PermissionDeniedError(
                      absl::StrCat("client certificate SANs [", absl::StrJoin(sans, ", "),
                                   "] match none of subjectAltNames [",
                                   absl::StrJoin(server.subject_alt_names, ", "), "]")),
                  SSL_AD_BAD_CERTIFICATE, out_alert);
  }
  if (!server.spki_pins.empty() || !server.hash_pins.empty()) {
    const auto [hash, key] = Digests(leaf);
    auto contains = [](const std::vector<std::string>& pins, const std::string& digest) {
      return !digest.empty() && std::find(pins.begin(), pins.end(), digest) != pins.end();
    };
    if (!contains(server.hash_pins, hash) && !contains(server.spki_pins, key)) {
      return Reject(ssl, state, GatewayHandshakeFailure::kCertificatePinMismatch,
                    absl::PermissionDeniedError(absl::StrCat(
                        "client certificate (SHA-256 ", absl::BytesToHexString(hash),
                        ", SPKI SHA-256 ", absl::Base64Escape(key),
                        ") matches neither verifyCertificateHash nor verifyCertificateSpki")),
                    SSL_AD_BAD_CERTIFICATE, out_alert);
    }
  }
  ERR_clear_error();
  state.client_certificate = ServedCertificate{internal::Describe(leaf), std::move(sans)};
  return ssl_verify_ok;
}

ssl_select_cert_result_t SelectServer(const SSL_CLIENT_HELLO* hello) {
  SSL* ssl = hello->ssl;
  ConnectionState& state = StateOf(ssl);
  state.listener =
      static_cast<const ListenerState*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ListenerIndex()));
  if (state.listener == nullptr) return ssl_select_cert_error;
  if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name); name != nullptr) {
    state.sni = name;
  }
  std::optional<std::size_t> index = state.listener->selector(
      state.sni.has_value() ? std::optional<absl::string_view>(*state.sni) : std::nullopt);
  if (!index.has_value() || *index >= state.listener->servers.size()) {
    state.failure = GatewayHandshakeFailure::kNoServerForSni;
    internal::SetHandshakeFailure(
        ssl, absl::NotFoundError(absl::StrCat("no server of this port serves ",
                                              state.sni.has_value()
                                                  ? absl::StrCat("SNI ", *state.sni)
                                                  : std::string("clients without SNI"))));
    return ssl_select_cert_error;
  }
  state.server = index;
  const GatewayServerContext::Impl& server = state.listener->servers[*index]->impl();
  if (SSL_set_SSL_CTX(ssl, server.ctx.get()) == nullptr ||
      !SSL_set_min_proto_version(ssl, server.min_version) ||
      !SSL_set_max_proto_version(ssl, server.max_version)) {
    state.failure = GatewayHandshakeFailure::kMalformed;
    return ssl_select_cert_error;
  }
  switch (server.client_auth) {
    case ClientAuth::kNone:
      break;
    case ClientAuth::kRequired:
    case ClientAuth::kMesh:
      SSL_set_custom_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, VerifyClient);
      break;
    case ClientAuth::kOptional:
      SSL_set_custom_verify(ssl, SSL_VERIFY_PEER, VerifyClient);
      break;
  }
  return ssl_select_cert_success;
}

// Fatal alerts name what went wrong when no callback of ours did: the error BoringSSL queued
// just before sending its alert, or the alert the client sent.
void OnAlert(const SSL* ssl, int type, int value) {
  if ((type != SSL_CB_WRITE_ALERT && type != SSL_CB_READ_ALERT) || (value >> 8) != SSL3_AL_FATAL) {
    return;
  }
  ConnectionState& state = StateOf(ssl);
  if (state.failure != GatewayHandshakeFailure::kNone) return;
  if (type == SSL_CB_READ_ALERT) {
    state.failure = GatewayHandshakeFailure::kClientAlert;
    return;
  }
  const uint32_t error = ERR_peek_last_error();
  const int reason = ERR_GET_LIB(error) == ERR_LIB_SSL ? ERR_GET_REASON(error) : 0;
  if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    state.failure = GatewayHandshakeFailure::kClientCertificateRequired;
  } else if (reason == SSL_R_NO_SHARED_CIPHER) {
    state.failure = GatewayHandshakeFailure::kNoSharedCipher;
  } else if (reason == SSL_R_UNSUPPORTED_PROTOCOL || (value & 0xff) == SSL_AD_PROTOCOL_VERSION) {
    state.failure = GatewayHandshakeFailure::kProtocolVersion;
  } else {
    state.failure = GatewayHandshakeFailure::kMalformed;
  }
}

}  // namespace

absl::StatusOr<CertificatePins> ComputeCertificatePins(std::string_view pem) {
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> certs = internal::ParsePemCertificates(pem);
  if (!certs.ok()) return certs.status();
  const auto [hash, key] = Digests(certs->front().get());
  if (hash.empty() || key.empty()) {
    return internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument, "encoding the certificate");
  }
  return CertificatePins{absl::Base64Escape(key), absl::BytesToHexString(hash)};
}

GatewayServerContext::GatewayServerContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GatewayServerContext::~GatewayServerContext() = default;
const std::string& GatewayServerContext::name() const { return impl_->name; }
ClientAuth GatewayServerContext::client_auth() const { return impl_->client_auth; }
const ServedCertificate& GatewayServerContext::certificate() const { return impl_->certificate; }

absl::StatusOr<std::shared_ptr<const GatewayServerContext>> GatewayServerContext::Create(
    const GatewayServerSettings& settings) {
  auto impl = std::make_unique<Impl>();
  impl->name = settings.name;
  impl->client_auth = settings.client_auth;
  impl->subject_alt_names = settings.subject_alt_names;
  auto fail = [&](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat(settings.name, ": ", status.message()));
  };
  impl->min_version = VersionNumber(settings.min_version, TLS1_2_VERSION);
  impl->max_version = VersionNumber(settings.max_version, TLS1_3_VERSION);
  if (impl->min_version > impl->max_version) {
    return fail(absl::InvalidArgumentError("minProtocolVersion is above maxProtocolVersion"));
  }
  ERR_clear_error();
  impl->ctx.reset(SSL_CTX_new(TLS_method()));
  if (impl->ctx == nullptr) {
    return fail(internal::ErrorFromQueue(absl::StatusCode::kInternal, "creating SSL_CTX"));
  }
  absl::StatusOr<std::string> ciphers = CipherList(settings.cipher_suites);
  if (!ciphers.ok()) return fail(ciphers.status());
  if (!SSL_CTX_set_strict_cipher_list(impl->ctx.get(), ciphers->c_str())) {
    return fail(internal::ErrorFromQueue(absl::StatusCode::kInvalidArgument, "cipherSuites"));
  }
  bssl::UniquePtr<X509> leaf;
  if (absl::Status s = internal::UseCredentials(impl->ctx.get(), settings.credentials, &leaf);
      !s.ok()) {
    return fail(s);
  }
  impl->certificate =
      ServedCertificate{internal::Describe(leaf.get()), internal::SubjectAltNames(leaf.get())};
  if (settings.client_auth != ClientAuth::kNone) {
    if (settings.client_ca_pem.empty()) {
      return fail(absl::InvalidArgumentError(
          "verifying client certificates needs caCertificates (the client CA)"));
    }
    auto roots = internal::ParsePemCertificates(settings.client_ca_pem);
    if (!roots.ok()) {
      return fail(
          absl::InvalidArgumentError(absl::StrCat("caCertificates: ", roots.status().message())));
    }
    absl::StatusOr<bssl::UniquePtr<X509_STORE>> store = internal::MakeStore(*roots);
    if (!store.ok()) return fail(store.status());
    if (!settings.client_crl_pem.empty()) {
      if (absl::Status s = internal::AddRevocationListsTo(store->get(), settings.client_crl_pem);
          !s.ok()) {
        return fail(absl::InvalidArgumentError(absl::StrCat("caCrl: ", s.message())));
      }
    }
    impl->client_roots = *std::move(store);
  }
  if (settings.client_auth == ClientAuth::kMesh) {
    absl::StatusOr<SpiffeId> id = internal::CertificateSpiffeId(leaf.get());
    if (!id.ok()) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          "ISTIO_MUTUAL needs the gateway's mesh certificate: ", id.status().message())));
    }
    impl->trust_domain = id->trust_domain();
  }
  absl::StatusOr<std::vector<std::string>> spki =
      DecodePins(settings.verify_certificate_spki, /*base64=*/true);
  if (!spki.ok()) return fail(spki.status());
  absl::StatusOr<std::vector<std::string>> hashes =
      DecodePins(settings.verify_certificate_hash, /*base64=*/false);
  if (!hashes.ok()) return fail(hashes.status());
  impl->spki_pins = *std::move(spki);
  impl->hash_pins = *std::move(hashes);
  // The connection moves onto this context during the handshake, so alerts from then on are
  // classified through its callback.
  SSL_CTX_set_info_callback(impl->ctx.get(), OnAlert);
  return std::shared_ptr<const GatewayServerContext>(new GatewayServerContext(std::move(impl)));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> MakeGatewayListenerContext(
    std::vector<std::shared_ptr<const GatewayServerContext>> servers,
    GatewayServerSelector selector) {
  if (servers.empty()) return absl::InvalidArgumentError("a listener context needs a server");
  if (!selector) return absl::InvalidArgumentError("a listener context needs a server selector");
  for (const auto& server : servers) {
    if (server == nullptr) return absl::InvalidArgumentError("a listener server is missing");
  }
  ERR_clear_error();
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (ctx == nullptr || !SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return internal::ErrorFromQueue(absl::StatusCode::kInternal, "creating SSL_CTX");
  }
  auto state = std::make_shared<ListenerState>();
  state->servers = std::move(servers);
  state->selector = std::move(selector);
  SSL_CTX_set_ex_data(ctx.get(), ListenerIndex(), state.get());
  SSL_CTX_set_select_certificate_cb(ctx.get(), SelectServer);
  SSL_CTX_set_info_callback(ctx.get(), OnAlert);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return internal::TlsContextFactory::WrapServer(std::move(ctx), std::move(state));
}

absl::string_view GatewayHandshakeFailureName(GatewayHandshakeFailure failure) {
  switch (failure) {
    case GatewayHandshakeFailure::kNone:
      return "none";
    case GatewayHandshakeFailure::kNoServerForSni:
      return "no_server_for_sni";
    case GatewayHandshakeFailure::kClientCertificateRequired:
      return "client_certificate_required";
    case GatewayHandshakeFailure::kClientCertificateUntrusted:
      return "client_certificate_untrusted";
    case GatewayHandshakeFailure::kSubjectAltNameMismatch:
      return "subject_alt_name_mismatch";
    case GatewayHandshakeFailure::kCertificatePinMismatch:
      return "certificate_pin_mismatch";
    case GatewayHandshakeFailure::kNotMeshIdentity:
      return "not_mesh_identity";
    case GatewayHandshakeFailure::kProtocolVersion:
      return "protocol_version";
    case GatewayHandshakeFailure::kNoSharedCipher:
      return "no_shared_cipher";
    case GatewayHandshakeFailure::kClientAlert:
      return "client_alert";
    case GatewayHandshakeFailure::kMalformed:
      return "malformed";
  }
  return "unknown";
}

GatewayHandshake InspectGatewayHandshake(const TlsEngine& engine) {
  GatewayHandshake out;
  SSL* ssl = internal::EngineSsl(engine);
  if (ssl == nullptr) return out;
  const ConnectionState* state = FindState(ssl);
  if (state != nullptr) {
    out.server = state->server;
    out.sni = state->sni;
    out.failure = state->failure;
    out.client_certificate = state->client_certificate;
    out.client_identity = state->client_identity;
  }
  if (engine.state() == TlsEngine::State::kFailed &&
      out.failure == GatewayHandshakeFailure::kNone) {
    out.failure = GatewayHandshakeFailure::kMalformed;
  }
  if (engine.state() == TlsEngine::State::kEstablished ||
      engine.state() == TlsEngine::State::kClosed) {
    out.version = SSL_get_version(ssl);
    if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl); cipher != nullptr) {
      out.cipher = SSL_CIPHER_get_name(cipher);
    }
  }
  return out;
}

}  // namespace nodeward::crypto
