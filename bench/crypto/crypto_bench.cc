// TLS engine costs next to the raw BoringSSL primitives they are built on:
//   handshakes:  TlsEngine mesh mTLS (ECDSA P-256, TLS 1.3)  vs  SSL_do_handshake over a BIO pair
//   bulk:        TlsEngine seal/open of 16 KiB records       vs  SSL_write/SSL_read over a BIO pair
//                                                             and EVP_AEAD AES-128-GCM on 16 KiB
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/crypto/raw_baseline.h"
#include "benchmark/benchmark.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"

namespace {

using nodeward::crypto::TlsContext;
using nodeward::crypto::TlsEngine;
namespace testing = nodeward::crypto::testing;
using testing::Transfer;

constexpr std::size_t kRecord = 16384;

struct Setup {
  std::optional<testing::Workload> server;
  std::optional<testing::Workload> client;
  std::string roots_pem;
  std::shared_ptr<const TlsContext> mesh_server;
  std::shared_ptr<const TlsContext> mesh_client;
  nodeward::SpiffeId server_id = testing::Id("cluster.local", "bench", "server");
};

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "crypto_bench setup failed: %s\n", what);
  std::abort();
}

const Setup& GetSetup() {
  static const Setup* const setup = [] {
    testing::TempDir dir;
    auto ca = nodeward::crypto::CertificateAuthority::LoadOrCreate(dir.Sub("ca"));
    if (!ca.ok()) Die("CA");
    auto* s = new Setup{};
    auto server = testing::IssueWorkload(**ca, s->server_id);
    auto client = testing::IssueWorkload(**ca, testing::Id("cluster.local", "bench", "client"));
    auto bundle = nodeward::crypto::TrustBundle::FromPem((*ca)->RootsPem());
    if (!server.ok() || !client.ok() || !bundle.ok()) Die("workloads");
    s->server.emplace(*std::move(server));
    s->client.emplace(*std::move(client));
    s->roots_pem = (*ca)->RootsPem();
    auto mesh_server = TlsContext::MeshServer(s->server->credentials(), *bundle);
    auto mesh_client = TlsContext::MeshClient(s->client->credentials(), *bundle);
    if (!mesh_server.ok() || !mesh_client.ok()) Die("contexts");
    s->mesh_server = *mesh_server;
    s->mesh_client = *mesh_client;
    return s;
  }();
  return *setup;
}

bool EngineHandshake(TlsEngine& client, TlsEngine& server) {
  for (int round = 0; round < 16; ++round) {
    if (!client.Advance().ok() || !server.Advance().ok()) return false;
    const bool a = Transfer(client, server);
    const bool b = Transfer(server, client);
    if (!a && !b) break;
  }
  return client.state() == TlsEngine::State::kEstablished &&
         server.state() == TlsEngine::State::kEstablished;
}

const nodeward::bench::RawTls& GetRawTls() {
  static nodeward::bench::RawTls* const raw = [] {
    const Setup& s = GetSetup();
    std::string error;
    auto created =
        nodeward::bench::RawTls::Create({s.client->cert.chain_pem, s.client->key_pem,
                                         s.server->cert.chain_pem, s.server->key_pem, s.roots_pem},
                                        &error);
    if (created == nullptr) Die(error.c_str());
    return created.release();
  }();
  return *raw;
}

// ---- handshakes ----

void BM_EngineMeshHandshake(benchmark::State& state) {
  const Setup& s = GetSetup();
  for (auto _ : state) {
    auto client = TlsEngine::Client(s.mesh_client, {.expected_peer = s.server_id, .sni = ""});
    auto server = TlsEngine::Server(s.mesh_server);
    if (!EngineHandshake(*client, *server)) {
      state.SkipWithError(std::string(client->error().message()).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EngineMeshHandshake)->Unit(benchmark::kMicrosecond);

void BM_RawSslHandshake(benchmark::State& state) {
  auto& raw = const_cast<nodeward::bench::RawTls&>(GetRawTls());
  for (auto _ : state) {
    if (!raw.HandshakeOnce()) {
      state.SkipWithError("raw handshake failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawSslHandshake)->Unit(benchmark::kMicrosecond);

// ---- bulk ----

void BM_EngineSealOpen16K(benchmark::State& state) {
  const Setup& s = GetSetup();
  auto client = TlsEngine::Client(s.mesh_client);
  auto server = TlsEngine::Server(s.mesh_server);
  if (!EngineHandshake(*client, *server)) {
    state.SkipWithError("handshake failed");
    return;
  }
  std::vector<std::uint8_t> plaintext(kRecord, 0x5a);
  std::vector<std::uint8_t> received(kRecord);
  for (auto _ : state) {
    auto written = client->WritePlaintext(plaintext);
    Transfer(*client, *server);
    auto read = server->ReadPlaintext(absl::MakeSpan(received));
    if (!written.ok() || !read.ok() || *written != kRecord || *read != kRecord) {
      state.SkipWithError("transfer failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kRecord);
}
BENCHMARK(BM_EngineSealOpen16K);

void BM_EngineSeal16K(benchmark::State& state) {
  const Setup& s = GetSetup();
  auto client = TlsEngine::Client(s.mesh_client);
  auto server = TlsEngine::Server(s.mesh_server);
  if (!EngineHandshake(*client, *server)) {
    state.SkipWithError("handshake failed");
    return;
  }
  std::vector<std::uint8_t> plaintext(kRecord, 0x5a);
  for (auto _ : state) {
    auto written = client->WritePlaintext(plaintext);
    benchmark::DoNotOptimize(client->PeekWire().data());
    client->ConsumeWire(client->PendingWire());
    if (!written.ok() || *written != kRecord) {
      state.SkipWithError("seal failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kRecord);
}
BENCHMARK(BM_EngineSeal16K);

void BM_RawSslSealOpen16K(benchmark::State& state) {
  const Setup& s = GetSetup();
  std::string error;
  auto raw =
      nodeward::bench::RawTls::Create({s.client->cert.chain_pem, s.client->key_pem,
                                       s.server->cert.chain_pem, s.server->key_pem, s.roots_pem},
                                      &error);
  if (raw == nullptr || !raw->Connect()) {
    state.SkipWithError("raw handshake failed");
    return;
  }
  std::vector<std::uint8_t> plaintext(kRecord, 0x5a);
  std::vector<std::uint8_t> received(kRecord);
  for (auto _ : state) {
    if (!raw->SealOpen(plaintext.data(), kRecord, received.data())) {
      state.SkipWithError("raw transfer failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kRecord);
}
BENCHMARK(BM_RawSslSealOpen16K);

void BM_RawAeadSeal16K(benchmark::State& state) {
  auto aead = nodeward::bench::RawAead::Create();
  std::vector<std::uint8_t> plaintext(kRecord, 0x5a);
  for (auto _ : state) {
    if (aead == nullptr || !aead->Seal(plaintext.data(), kRecord)) {
      state.SkipWithError("seal failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kRecord);
}
BENCHMARK(BM_RawAeadSeal16K);

void BM_RawAeadSealOpen16K(benchmark::State& state) {
  auto aead = nodeward::bench::RawAead::Create();
  std::vector<std::uint8_t> plaintext(kRecord, 0x5a);
  std::vector<std::uint8_t> opened(kRecord);
  for (auto _ : state) {
    if (aead == nullptr || !aead->SealOpen(plaintext.data(), kRecord, opened.data())) {
      state.SkipWithError("seal/open failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * kRecord);
}
BENCHMARK(BM_RawAeadSealOpen16K);

}  // namespace

BENCHMARK_MAIN();
