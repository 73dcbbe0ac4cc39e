// Arbitrary bytes as wire input to TLS engines of every profile. The first input byte picks
// the target: 0 mesh server, 1 mesh client, 2 plain server, 3 origination client; the second
// splits the rest into two deliveries. Nothing may crash, whatever state the engine ends in.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "crypto/certificate_authority.h"
#include "crypto/test_csrs.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"

namespace {

using nodeward::crypto::TlsContext;
using nodeward::crypto::TlsEngine;

struct Contexts {
  std::shared_ptr<const TlsContext> mesh_server;
  std::shared_ptr<const TlsContext> mesh_client;
  std::shared_ptr<const TlsContext> plain_server;
  std::shared_ptr<const TlsContext> origination_client;
};

const Contexts& GetContexts() {
  static const Contexts* const contexts = [] {
    namespace testing = nodeward::crypto::testing;
    testing::TempDir dir;  // the CA lives in memory after loading; the files go at once
    auto ca = nodeward::crypto::CertificateAuthority::LoadOrCreate(dir.Sub("ca"));
    if (!ca.ok()) std::abort();
    auto bundle = nodeward::crypto::TrustBundle::FromPem((*ca)->RootsPem());
    auto server = testing::IssueWorkload(**ca, testing::Id("cluster.local", "fuzz", "server"));
    auto client = testing::IssueWorkload(**ca, testing::Id("cluster.local", "fuzz", "client"));
    if (!bundle.ok() || !server.ok() || !client.ok()) std::abort();
    auto* out = new Contexts;
    out->mesh_server = *TlsContext::MeshServer(server->credentials(), *bundle);
    out->mesh_client = *TlsContext::MeshClient(client->credentials(), *bundle);
    out->plain_server =
        *TlsContext::PlainServer({testing::kExternalServerCertPem, testing::kExternalServerKeyPem});
    nodeward::crypto::OriginationSettings settings;
    settings.ca_certificates_pem = testing::kExternalCaPem;
    settings.sni = "api.example.com";
    settings.alpn = {"h2", "http/1.1"};
    out->origination_client = *TlsContext::OriginationClient(settings);
    return out;
  }();
  return *contexts;
}

void Drive(TlsEngine& engine, absl::Span<const std::uint8_t> first,
           absl::Span<const std::uint8_t> second) {
  std::vector<std::uint8_t> scratch(1 << 16);
  (void)engine.Advance();
  engine.ReadWire(absl::MakeSpan(scratch));
  for (absl::Span<const std::uint8_t> part : {first, second}) {
    while (!part.empty()) {
      const std::size_t n = engine.FeedWire(part);
      (void)engine.Advance();
      (void)engine.ReadPlaintext(absl::MakeSpan(scratch));
      engine.ReadWire(absl::MakeSpan(scratch));
      if (n == 0) break;
      part.remove_prefix(n);
    }
  }
  static constexpr std::uint8_t kReply[] = "reply";
  (void)engine.WritePlaintext(kReply);
  engine.Shutdown();
  engine.FeedWireEof();
  (void)engine.Advance();
  (void)engine.ReadPlaintext(absl::MakeSpan(scratch));
  engine.ReadWire(absl::MakeSpan(scratch));
  (void)engine.peer_identity();
  (void)engine.negotiated_alpn();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const Contexts& contexts = GetContexts();
  const std::uint8_t target = data[0] % 4;
  absl::Span<const std::uint8_t> rest(data + 2, size - 2);
  const std::size_t split = rest.empty() ? 0 : data[1] % (rest.size() + 1);
  std::unique_ptr<TlsEngine> engine;
  switch (target) {
    case 0:
      engine = TlsEngine::Server(contexts.mesh_server);
      break;
    case 1:
      engine = TlsEngine::Client(contexts.mesh_client);
      break;
    case 2:
      engine = TlsEngine::Server(contexts.plain_server);
      break;
    default:
      engine = TlsEngine::Client(contexts.origination_client);
      break;
  }
  Drive(*engine, rest.subspan(0, split), rest.subspan(split));
  return 0;
}
