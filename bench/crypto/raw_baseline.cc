#include "bench/crypto/raw_baseline.h"

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <vector>

namespace nodeward::bench {
namespace {

// Same as TlsEngine's input limit, so neither side gets more batching than the other.
constexpr std::size_t kBioBuffer = 8 * (16384 + 256);

bssl::UniquePtr<SSL_CTX> MakeContext(const std::string& chain_pem, const std::string& key_pem,
                                     const std::string& roots_pem, bool is_server,
                                     std::string* error) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  bssl::UniquePtr<BIO> chain(BIO_new_mem_buf(chain_pem.data(), chain_pem.size()));
  bssl::UniquePtr<X509> leaf(PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr));
  bssl::UniquePtr<BIO> key_bio(BIO_new_mem_buf(key_pem.data(), key_pem.size()));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  bssl::UniquePtr<BIO> roots(BIO_new_mem_buf(roots_pem.data(), roots_pem.size()));
  bssl::UniquePtr<X509> root(PEM_read_bio_X509(roots.get(), nullptr, nullptr, nullptr));
  if (ctx == nullptr || leaf == nullptr || key == nullptr || root == nullptr ||
      !SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) ||
      !SSL_CTX_use_certificate(ctx.get(), leaf.get()) ||
      !SSL_CTX_use_PrivateKey(ctx.get(), key.get()) ||
      !X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), root.get())) {
    *error = "raw SSL_CTX setup failed";
    ERR_clear_error();
    return nullptr;
  }
  // The same work the mesh profile does apart from SPIFFE checks: no tickets, no cache.
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(
      ctx.get(), is_server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
      nullptr);
  return ctx;
}

struct Pair {
  bssl::UniquePtr<SSL> client;
  bssl::UniquePtr<SSL> server;
};

bool NewPair(SSL_CTX* client_ctx, SSL_CTX* server_ctx, Pair* pair) {
  pair->client.reset(SSL_new(client_ctx));
  pair->server.reset(SSL_new(server_ctx));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  if (pair->client == nullptr || pair->server == nullptr ||
      !BIO_new_bio_pair(&client_bio, kBioBuffer, &server_bio, kBioBuffer)) {
    return false;
  }
  SSL_set_bio(pair->client.get(), client_bio, client_bio);
  SSL_set_bio(pair->server.get(), server_bio, server_bio);
  SSL_set_connect_state(pair->client.get());
  SSL_set_accept_state(pair->server.get());
  return true;
}

bool Step(SSL* ssl, bool* done) {
  if (*done) return true;
  const int ret = SSL_do_handshake(ssl);
  if (ret == 1) {
    *done = true;
    return true;
  }
  return SSL_get_error(ssl, ret) == SSL_ERROR_WANT_READ;
}

bool Handshake(Pair& pair) {
  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 16 && !(client_done && server_done); ++round) {
    if (!Step(pair.client.get(), &client_done) || !Step(pair.server.get(), &server_done)) {
      ERR_clear_error();
      return false;
    }
  }
  return client_done && server_done;
}

}  // namespace

struct RawTls::Impl {
  bssl::UniquePtr<SSL_CTX> client_ctx;
  bssl::UniquePtr<SSL_CTX> server_ctx;
  Pair session;
};

RawTls::RawTls(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RawTls::~RawTls() = default;

std::unique_ptr<RawTls> RawTls::Create(const RawTlsConfig& config, std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->client_ctx =
      MakeContext(config.client_chain_pem, config.client_key_pem, config.roots_pem, false, error);
  impl->server_ctx =
      MakeContext(config.server_chain_pem, config.server_key_pem, config.roots_pem, true, error);
  if (impl->client_ctx == nullptr || impl->server_ctx == nullptr) return nullptr;
  return std::unique_ptr<RawTls>(new RawTls(std::move(impl)));
}

bool RawTls::HandshakeOnce() {
  Pair pair;
  return NewPair(impl_->client_ctx.get(), impl_->server_ctx.get(), &pair) && Handshake(pair);
}

bool RawTls::Connect() {
  return NewPair(impl_->client_ctx.get(), impl_->server_ctx.get(), &impl_->session) &&
         Handshake(impl_->session);
}

bool RawTls::SealOpen(const std::uint8_t* data, std::size_t size, std::uint8_t* out) {
  const int written = SSL_write(impl_->session.client.get(), data, static_cast<int>(size));
  const int read = SSL_read(impl_->session.server.get(), out, static_cast<int>(size));
  return written == static_cast<int>(size) && read == static_cast<int>(size);
}

struct RawAead::Impl {
  bssl::ScopedEVP_AEAD_CTX ctx;
  std::vector<std::uint8_t> sealed;
  std::uint8_t nonce[12] = {};
  std::uint64_t counter = 0;

  void NextNonce() {
    ++counter;
    std::memcpy(nonce + 4, &counter, sizeof(counter));
  }
};

RawAead::RawAead(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RawAead::~RawAead() = default;

std::unique_ptr<RawAead> RawAead::Create() {
  static constexpr std::uint8_t kKey[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  auto impl = std::make_unique<Impl>();
  if (!EVP_AEAD_CTX_init(impl->ctx.get(), EVP_aead_aes_128_gcm(), kKey, sizeof(kKey),
                         EVP_AEAD_DEFAULT_TAG_LENGTH, nullptr)) {
    return nullptr;
  }
  return std::unique_ptr<RawAead>(new RawAead(std::move(impl)));
}

bool RawAead::Seal(const std::uint8_t* data, std::size_t size) {
  impl_->sealed.resize(size + EVP_AEAD_max_overhead(EVP_aead_aes_128_gcm()));
  impl_->NextNonce();
  std::size_t out_len = 0;
  return EVP_AEAD_CTX_seal(impl_->ctx.get(), impl_->sealed.data(), &out_len, impl_->sealed.size(),
                           impl_->nonce, sizeof(impl_->nonce), data, size, nullptr, 0) == 1;
}

bool RawAead::SealOpen(const std::uint8_t* data, std::size_t size, std::uint8_t* out) {
  impl_->sealed.resize(size + EVP_AEAD_max_overhead(EVP_aead_aes_128_gcm()));
  impl_->NextNonce();
  std::size_t sealed_len = 0;
  std::size_t out_len = 0;
  return EVP_AEAD_CTX_seal(impl_->ctx.get(), impl_->sealed.data(), &sealed_len,
                           impl_->sealed.size(), impl_->nonce, sizeof(impl_->nonce), data, size,
                           nullptr, 0) == 1 &&
         EVP_AEAD_CTX_open(impl_->ctx.get(), out, &out_len, size, impl_->nonce,
                           sizeof(impl_->nonce), impl_->sealed.data(), sealed_len, nullptr, 0) == 1;
}

}  // namespace nodeward::bench
