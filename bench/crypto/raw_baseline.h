// Raw BoringSSL baselines for crypto_bench. They live in their own shared library, with
// BoringSSL linked in privately, because nodeward_crypto already carries a BoringSSL copy
// whose symbols are local: two static copies in one link would collide on their shared
// inline code. Only this interface leaves the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#define NODEWARD_RAW_BASELINE_API __attribute__((visibility("default")))

namespace nodeward::bench {

struct RawTlsConfig {
  std::string client_chain_pem;
  std::string client_key_pem;
  std::string server_chain_pem;
  std::string server_key_pem;
  std::string roots_pem;
};

// TLS 1.3 mutual authentication with ECDSA P-256 over a BoringSSL BIO pair, using standard
// chain verification against the roots.
class NODEWARD_RAW_BASELINE_API RawTls {
 public:
  static std::unique_ptr<RawTls> Create(const RawTlsConfig& config, std::string* error);
  ~RawTls();
  // A full handshake on a fresh pair of connections.
  bool HandshakeOnce();
  // Establishes the long-lived pair SealOpen uses.
  bool Connect();
  // SSL_write of `size` bytes on the client, SSL_read of them on the server.
  bool SealOpen(const std::uint8_t* data, std::size_t size, std::uint8_t* out);

  struct Impl;

 private:
  explicit RawTls(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// EVP_AEAD AES-128-GCM with a fresh nonce per call.
class NODEWARD_RAW_BASELINE_API RawAead {
 public:
  static std::unique_ptr<RawAead> Create();
  ~RawAead();
  bool Seal(const std::uint8_t* data, std::size_t size);
  bool SealOpen(const std::uint8_t* data, std::size_t size, std::uint8_t* out);

  struct Impl;

 private:
  explicit RawAead(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nodeward::bench
