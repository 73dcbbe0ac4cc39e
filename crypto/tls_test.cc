// Over 600 lines on purpose: every case drives both ends of a real handshake through the same
// in-memory pair and certificate fixtures; the cases are independent and read top to bottom.
#include "crypto/tls.h"

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/test_csrs.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::crypto {
namespace {

using ::nodeward::crypto::testing::Id;
using ::nodeward::crypto::testing::IssueWorkload;
using ::nodeward::crypto::testing::Pump;
using ::nodeward::crypto::testing::TempDir;
using ::nodeward::crypto::testing::Transfer;
using ::nodeward::crypto::testing::Workload;
using ::testing::HasSubstr;
using State = TlsEngine::State;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

absl::Span<const std::uint8_t> Bytes(std::string_view s) {
  return absl::Span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

struct Outcome {
  absl::Status client;
  absl::Status server;
};

// Runs both ends until no more bytes move. A TLS 1.3 client finishes before the server has
// checked its certificate, so the client's read afterwards picks up the server's verdict.
Outcome Handshake(TlsEngine& client, TlsEngine& server) {
  Pump(client, server);
  std::uint8_t scratch[64];
  absl::Status client_status = client.Advance();
  if (client_status.ok() && client.state() == State::kEstablished) {
    client_status = client.ReadPlaintext(absl::MakeSpan(scratch)).status();
  }
  return {client_status, server.Advance()};
}

// Sends `data` from `from` to `to` and returns what `to` decrypted.
std::string Send(TlsEngine& from, TlsEngine& to, std::string_view data) {
  std::string received;
  std::size_t offset = 0;
  std::vector<std::uint8_t> buffer(64 * 1024);
  for (int round = 0; round < 100000 && received.size() < data.size(); ++round) {
    if (offset < data.size()) {
      absl::StatusOr<std::size_t> n = from.WritePlaintext(Bytes(data.substr(offset)));
      if (!n.ok()) return "write failed: " + Message(n.status());
      offset += *n;
    }
    Transfer(from, to);
    absl::StatusOr<std::size_t> n = to.ReadPlaintext(absl::MakeSpan(buffer));
    if (!n.ok()) return "read failed: " + Message(n.status());
    received.append(reinterpret_cast<const char*>(buffer.data()), *n);
  }
  return received;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    auto ca = CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *std::move(ca);
    auto other = CertificateAuthority::LoadOrCreate(dir_.Sub("other"));
    ASSERT_TRUE(other.ok()) << other.status();
    other_ca_ = *std::move(other);
    auto bundle = TrustBundle::FromPem(ca_->RootsPem());
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    bundle_.emplace(*std::move(bundle));
    auto server = IssueWorkload(*ca_, server_id_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto client = IssueWorkload(*ca_, client_id_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  std::shared_ptr<const TlsContext> MeshServerContext(const Workload& workload,
                                                      const TrustBundle& bundle) {
    auto ctx = TlsContext::MeshServer(workload.credentials(), bundle);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    return ctx.ok() ? *ctx : nullptr;
  }
  std::shared_ptr<const TlsContext> MeshClientContext(const Workload& workload,
                                                      const TrustBundle& bundle) {
    auto ctx = TlsContext::MeshClient(workload.credentials(), bundle);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    return ctx.ok() ? *ctx : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
  std::unique_ptr<CertificateAuthority> other_ca_;
  std::optional<TrustBundle> bundle_;
  const SpiffeId server_id_ = Id("cluster.local", "shop", "backend");
  const SpiffeId client_id_ = Id("cluster.local", "shop", "frontend");
  std::optional<Workload> server_;
  std::optional<Workload> client_;
};

TEST_F(TlsTest, MeshMutualTlsBothDirections) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_),
                                  {.expected_peer = server_id_, .sni = ""});
  EXPECT_EQ(client->state(), State::kHandshaking);
  Outcome outcome = Handshake(*client, *server);
  ASSERT_TRUE(outcome.client.ok()) << outcome.client;
  ASSERT_TRUE(outcome.server.ok()) << outcome.server;
  EXPECT_EQ(client->state(), State::kEstablished);
  EXPECT_EQ(server->state(), State::kEstablished);
  EXPECT_EQ(client->peer_identity(), server_id_);
  EXPECT_EQ(server->peer_identity(), client_id_);
  EXPECT_EQ(client->negotiated_alpn(), "h2");
  EXPECT_EQ(server->negotiated_alpn(), "h2");
  EXPECT_EQ(Send(*client, *server, "ping from the client"), "ping from the client");
  EXPECT_EQ(Send(*server, *client, "pong from the server"), "pong from the server");
}

TEST_F(TlsTest, ServerAcceptsOnlyTheExpectedPeer) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_),
                                  {.expected_peer = Id("cluster.local", "shop", "admin")});
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  Outcome outcome = Handshake(*client, *server);
  EXPECT_EQ(outcome.server.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.server),
              HasSubstr("peer identity spiffe://cluster.local/ns/shop/sa/frontend does not "
                        "match expected spiffe://cluster.local/ns/shop/sa/admin"));
  EXPECT_EQ(server->state(), State::kFailed);
  EXPECT_THAT(Message(outcome.client), HasSubstr("peer sent alert: bad certificate"));
}

// A DestinationRule's subjectAltNames under ISTIO_MUTUAL: any of them may answer, nobody else.
TEST_F(TlsTest, ClientAcceptsAnyOfTheAcceptedPeersAndNoOther) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_),
                                  {.expected_peer = Id("cluster.local", "shop", "payments"),
                                   .sni = "",
                                   .also_accepted = {server_id_}});
  Outcome outcome = Handshake(*client, *server);
  EXPECT_TRUE(outcome.client.ok()) << outcome.client;
  EXPECT_EQ(client->peer_identity(), server_id_);

  auto other_server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto strict = TlsEngine::Client(MeshClientContext(*client_, *bundle_),
                                  {.expected_peer = Id("cluster.local", "shop", "payments"),
                                   .sni = "",
                                   .also_accepted = {Id("cluster.local", "shop", "ledger")}});
  Outcome refused = Handshake(*strict, *other_server);
  EXPECT_EQ(refused.client.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(refused.client),
              HasSubstr("is none of the expected spiffe://cluster.local/ns/shop/sa/payments, "
                        "spiffe://cluster.local/ns/shop/sa/ledger"));
}

TEST_F(TlsTest, ClientChecksSecureNaming) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client =
      TlsEngine::Client(MeshClientContext(*client_, *bundle_),
                        {.expected_peer = Id("cluster.local", "shop", "payments"), .sni = ""});
  Outcome outcome = Handshake(*client, *server);
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.client),
              HasSubstr("peer identity spiffe://cluster.local/ns/shop/sa/backend does not match "
                        "expected spiffe://cluster.local/ns/shop/sa/payments"));
  EXPECT_EQ(client->state(), State::kFailed);
  EXPECT_EQ(client->error(), outcome.client);
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer sent alert: bad certificate"));
}

TEST_F(TlsTest, RejectsPeerFromAnotherTrustDomain) {
  CaOptions options;
  options.trust_domain = "other.example";
  auto foreign_ca = CertificateAuthority::LoadOrCreate(dir_.Sub("foreign"), options);
  ASSERT_TRUE(foreign_ca.ok()) << foreign_ca.status();
  auto foreign = IssueWorkload(**foreign_ca, Id("other.example", "shop", "frontend"));
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  // Both roots are trusted, so only the trust domain check can refuse the peer.
  auto both = TrustBundle::FromPem(ca_->RootsPem() + (*foreign_ca)->RootsPem());
  ASSERT_TRUE(both.ok());
  auto server = TlsEngine::Server(MeshServerContext(*server_, *both));
  auto client = TlsEngine::Client(MeshClientContext(*foreign, *both));
  Outcome outcome = Handshake(*client, *server);
  // The client sees the server first and refuses it for the same reason.
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.client),
              HasSubstr("peer identity spiffe://cluster.local/ns/shop/sa/backend is not in "
                        "trust domain other.example"));
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer sent alert: bad certificate"));

  // A client that does not check trust domains itself still meets the server's check.
  OriginationSettings settings;
  settings.mode = OriginationSettings::Mode::kMutual;
  settings.ca_certificates_pem = ca_->RootsPem();
  settings.client_credentials = foreign->credentials();
  settings.alpn = {"h2"};
  auto origination = TlsContext::OriginationClient(settings);
  ASSERT_TRUE(origination.ok()) << origination.status();
  auto server2 = TlsEngine::Server(MeshServerContext(*server_, *both));
  auto client2 = TlsEngine::Client(*origination);
  outcome = Handshake(*client2, *server2);
  EXPECT_EQ(outcome.server.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.server),
              HasSubstr("peer identity spiffe://other.example/ns/shop/sa/frontend is not in "
                        "trust domain cluster.local"));
  EXPECT_THAT(Message(outcome.client), HasSubstr("peer sent alert: bad certificate"));
}

TEST_F(TlsTest, RejectsUntrustedRoot) {
  auto stranger = IssueWorkload(*other_ca_, client_id_);
  ASSERT_TRUE(stranger.ok());
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*stranger, *bundle_));
  Outcome outcome = Handshake(*client, *server);
  EXPECT_EQ(outcome.server.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(outcome.server), HasSubstr("unknown CA"));
  EXPECT_THAT(Message(outcome.client), HasSubstr("peer sent alert: unknown CA"));

  // And the other way round: the client does not trust the server's root.
  auto other_bundle = TrustBundle::FromPem(other_ca_->RootsPem());
  ASSERT_TRUE(other_bundle.ok());
  auto server2 = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client2 = TlsEngine::Client(MeshClientContext(*stranger, *other_bundle));
  outcome = Handshake(*client2, *server2);
  EXPECT_THAT(Message(outcome.client), HasSubstr("unknown CA"));
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer sent alert: unknown CA"));
}

TEST_F(TlsTest, RejectsExpiredClientCertificate) {
  auto expired = IssueWorkload(*ca_, client_id_, absl::Hours(1), absl::Now() - absl::Hours(2));
  ASSERT_TRUE(expired.ok());
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*expired, *bundle_));
  Outcome outcome = Handshake(*client, *server);
  EXPECT_EQ(outcome.server.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(outcome.server), HasSubstr("certificate expired"));
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(outcome.client), HasSubstr("peer sent alert: certificate expired"));
}

TEST_F(TlsTest, RejectsNotYetValidServerCertificate) {
  auto early = IssueWorkload(*ca_, server_id_, absl::Hours(1), absl::Now() + absl::Hours(1));
  ASSERT_TRUE(early.ok());
  auto server = TlsEngine::Server(MeshServerContext(*early, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  Outcome outcome = Handshake(*client, *server);
  EXPECT_THAT(Message(outcome.client), HasSubstr("not yet valid"));
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer sent alert: bad certificate"));
}

TEST_F(TlsTest, RejectsClientWithoutCertificate) {
  OriginationSettings settings;
  settings.ca_certificates_pem = ca_->RootsPem();
  settings.subject_alt_names = {server_id_.ToString()};
  settings.alpn = {"h2"};
  auto no_cert = TlsContext::OriginationClient(settings);
  ASSERT_TRUE(no_cert.ok()) << no_cert.status();
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(*no_cert);
  Outcome outcome = Handshake(*client, *server);
  EXPECT_EQ(outcome.server.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer did not present a certificate"));
  EXPECT_THAT(Message(outcome.client), HasSubstr("peer sent alert: certificate required"));
}

TEST_F(TlsTest, PeerClosingMidHandshakeIsATruncation) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(client->Advance().ok());
  ASSERT_GT(client->PendingWire(), 0u);  // the ClientHello
  // The server goes away before answering.
  client->FeedWireEof();
  absl::Status status = client->Advance();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Message(status), "handshake truncated: peer closed the connection");
  EXPECT_EQ(client->state(), State::kFailed);

  // The client goes away halfway through its ClientHello.
  auto client2 = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(client2->Advance().ok());
  std::vector<std::uint8_t> hello(client2->PendingWire());
  client2->ReadWire(absl::MakeSpan(hello));
  server->FeedWire(absl::MakeConstSpan(hello).subspan(0, hello.size() / 2));
  EXPECT_TRUE(server->Advance().ok());
  server->FeedWireEof();
  status = server->Advance();
  EXPECT_THAT(Message(status), HasSubstr("handshake truncated"));
}

TEST_F(TlsTest, TruncatedServerFlight) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(client->Advance().ok());
  Transfer(*client, *server);
  ASSERT_TRUE(server->Advance().ok());
  std::vector<std::uint8_t> flight(server->PendingWire());
  ASSERT_GT(flight.size(), 100u);
  server->ReadWire(absl::MakeSpan(flight));
  client->FeedWire(absl::MakeConstSpan(flight).subspan(0, flight.size() - 40));
  EXPECT_TRUE(client->Advance().ok());
  EXPECT_EQ(client->state(), State::kHandshaking);
  client->FeedWireEof();
  EXPECT_EQ(Message(client->Advance()), "handshake truncated: peer closed the connection");
}

TEST_F(TlsTest, GarbageBytesFailCleanly) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  server->FeedWire(Bytes("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
  absl::Status status = server->Advance();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Message(status), HasSubstr("TLS handshake failed"));
  EXPECT_EQ(server->state(), State::kFailed);
  // Once failed, it stays failed and swallows input.
  EXPECT_EQ(server->FeedWire(Bytes("more")), 4u);
  EXPECT_EQ(server->Advance(), status);
  EXPECT_EQ(server->WritePlaintext(Bytes("x")).status(), status);

  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(client->Advance().ok());
  std::vector<std::uint8_t> junk(300);
  std::mt19937 rng(7);
  for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
  junk[0] = 0x16;  // looks like a handshake record at first
  client->FeedWire(junk);
  status = client->Advance();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(Message(status), HasSubstr("TLS handshake failed"));
}

TEST_F(TlsTest, LargeTransferInRandomChunks) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*client, *server).server.ok());
  constexpr std::size_t kSize = 8 << 20;
  std::mt19937_64 rng(42);
  std::vector<std::uint8_t> upstream(kSize);
  std::vector<std::uint8_t> downstream(kSize / 2);
  for (auto& b : upstream) b = static_cast<std::uint8_t>(rng());
  for (auto& b : downstream) b = static_cast<std::uint8_t>(rng());
  std::uniform_int_distribution<std::size_t> chunk(1, 70000);

  std::vector<std::uint8_t> got_up;
  std::vector<std::uint8_t> got_down;
  got_up.reserve(kSize);
  std::size_t sent_up = 0;
  std::size_t sent_down = 0;
  std::vector<std::uint8_t> buffer(100000);
  for (int round = 0; round < 1000000; ++round) {
    if (got_up.size() == upstream.size() && got_down.size() == downstream.size()) break;
    if (sent_up < upstream.size()) {
      auto span = absl::MakeConstSpan(upstream).subspan(sent_up, chunk(rng));
      auto n = client->WritePlaintext(span);
      ASSERT_TRUE(n.ok()) << n.status();
      sent_up += *n;
    }
    if (sent_down < downstream.size()) {
      auto span = absl::MakeConstSpan(downstream).subspan(sent_down, chunk(rng));
      auto n = server->WritePlaintext(span);
      ASSERT_TRUE(n.ok()) << n.status();
      sent_down += *n;
    }
    Transfer(*client, *server);
    Transfer(*server, *client);
    auto n = server->ReadPlaintext(absl::MakeSpan(buffer).subspan(0, chunk(rng)));
    ASSERT_TRUE(n.ok()) << n.status();
    got_up.insert(got_up.end(), buffer.begin(), buffer.begin() + *n);
    n = client->ReadPlaintext(absl::MakeSpan(buffer).subspan(0, chunk(rng)));
    ASSERT_TRUE(n.ok()) << n.status();
    got_down.insert(got_down.end(), buffer.begin(), buffer.begin() + *n);
  }
  ASSERT_EQ(got_up.size(), upstream.size());
  EXPECT_TRUE(got_up == upstream);
  ASSERT_EQ(got_down.size(), downstream.size());
  EXPECT_TRUE(got_down == downstream);
}

TEST_F(TlsTest, BuffersPushBack) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*client, *server).server.ok());
  std::vector<std::uint8_t> big(4 << 20, 0xab);
  std::size_t accepted = 0;
  std::vector<std::uint8_t> wire;
  for (int batch = 0; batch < 3; ++batch) {
    for (int i = 0; i < 100; ++i) {
      auto n = client->WritePlaintext(absl::MakeConstSpan(big).subspan(accepted));
      ASSERT_TRUE(n.ok());
      if (*n == 0) break;
      accepted += *n;
    }
    EXPECT_GT(client->PendingWire(), 0u);
    EXPECT_EQ(client->WritePlaintext(big).value_or(1), 0u)
        << "unread ciphertext must stop the writer";
    const std::size_t old_size = wire.size();
    wire.resize(old_size + client->PendingWire());
    client->ReadWire(absl::MakeSpan(wire).subspan(old_size));
  }
  EXPECT_LT(accepted, big.size());
  const std::size_t fed = server->FeedWire(wire);
  EXPECT_GT(fed, 0u);
  EXPECT_LT(fed, wire.size()) << "undecrypted ciphertext must stop the feeder";
  // Draining the plaintext frees room for the rest.
  std::vector<std::uint8_t> plain(1 << 20);
  std::size_t decrypted = 0;
  std::size_t offset = fed;
  while (decrypted < accepted) {
    auto n = server->ReadPlaintext(absl::MakeSpan(plain));
    ASSERT_TRUE(n.ok()) << n.status();
    decrypted += *n;
    offset += server->FeedWire(absl::MakeConstSpan(wire).subspan(offset));
    if (*n == 0 && offset == wire.size()) break;
  }
  EXPECT_EQ(decrypted, accepted);
}

// TakeWire hands the ciphertext over whole, whether it moves the engine's block (a full
// queue) or copies a little out of a large one, and leaves the engine ready for more.
TEST_F(TlsTest, TakeWireMovesTheCiphertextOutInOrder) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*client, *server).server.ok());
  EXPECT_EQ(client->TakeWire().size, 0u);
  std::mt19937_64 rng(7);
  std::vector<std::uint8_t> sent;
  std::vector<std::uint8_t> received;
  std::vector<std::uint8_t> buffer(1 << 20);
  // Large writes grow the queue; the small ones after them leave it mostly empty.
  for (std::size_t size : {std::size_t{100000}, std::size_t{60000}, std::size_t{10},
                           std::size_t{3000}, std::size_t{1}, std::size_t{70000}}) {
    std::vector<std::uint8_t> plain(size);
    for (auto& b : plain) b = static_cast<std::uint8_t>(rng());
    std::size_t written = 0;
    while (written < plain.size()) {
      auto n = client->WritePlaintext(absl::MakeConstSpan(plain).subspan(written));
      ASSERT_TRUE(n.ok()) << n.status();
      ASSERT_GT(*n, 0u);
      written += *n;
      TlsEngine::WireChunk chunk = client->TakeWire();
      ASSERT_GT(chunk.size, 0u);
      EXPECT_EQ(client->PendingWire(), 0u);
      auto wire = absl::MakeConstSpan(chunk.storage.get() + chunk.offset, chunk.size);
      while (!wire.empty()) {
        const std::size_t fed = server->FeedWire(wire);
        wire.remove_prefix(fed);
        auto got = server->ReadPlaintext(absl::MakeSpan(buffer));
        ASSERT_TRUE(got.ok()) << got.status();
        received.insert(received.end(), buffer.begin(), buffer.begin() + *got);
        ASSERT_TRUE(fed > 0 || *got > 0);
      }
    }
    sent.insert(sent.end(), plain.begin(), plain.end());
  }
  for (;;) {
    auto got = server->ReadPlaintext(absl::MakeSpan(buffer));
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got == 0) break;
    received.insert(received.end(), buffer.begin(), buffer.begin() + *got);
  }
  ASSERT_EQ(received.size(), sent.size());
  EXPECT_TRUE(received == sent);
}

TEST_F(TlsTest, CloseNotifyBothWays) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*client, *server).server.ok());
  client->Shutdown();
  EXPECT_EQ(client->WritePlaintext(Bytes("late")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Transfer(*client, *server);
  std::uint8_t buffer[64];
  auto n = server->ReadPlaintext(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
  EXPECT_TRUE(server->PeerClosed());
  EXPECT_EQ(server->state(), State::kEstablished);
  // Half-closed: the server may still answer before closing its side.
  EXPECT_EQ(Send(*server, *client, "last words"), "last words");
  server->Shutdown();
  EXPECT_EQ(server->state(), State::kClosed);
  Transfer(*server, *client);
  n = client->ReadPlaintext(absl::MakeSpan(buffer));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_TRUE(client->PeerClosed());
  EXPECT_EQ(client->state(), State::kClosed);
}

TEST_F(TlsTest, EndOfStreamWithoutCloseNotifyIsATruncation) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_));
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*client, *server).server.ok());
  server->FeedWireEof();
  std::uint8_t buffer[64];
  auto n = server->ReadPlaintext(absl::MakeSpan(buffer));
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(Message(n.status()), "connection truncated: peer closed without close_notify");
  EXPECT_FALSE(server->PeerClosed());
}

TEST_F(TlsTest, RootRotationTrustsBothRoots) {
  auto both = TrustBundle::FromPem(ca_->RootsPem() + other_ca_->RootsPem());
  ASSERT_TRUE(both.ok());
  auto new_root_client = IssueWorkload(*other_ca_, client_id_);
  ASSERT_TRUE(new_root_client.ok());
  auto server = TlsEngine::Server(MeshServerContext(*server_, *both));
  auto client = TlsEngine::Client(MeshClientContext(*new_root_client, *both),
                                  {.expected_peer = server_id_, .sni = ""});
  Outcome outcome = Handshake(*client, *server);
  ASSERT_TRUE(outcome.client.ok()) << outcome.client;
  ASSERT_TRUE(outcome.server.ok()) << outcome.server;
  EXPECT_EQ(server->peer_identity(), client_id_);
}

TEST_F(TlsTest, CertificateSwapLeavesLiveConnectionsAlone) {
  auto old_context = MeshServerContext(*server_, *bundle_);
  auto old_server = TlsEngine::Server(old_context);
  auto old_client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  ASSERT_TRUE(Handshake(*old_client, *old_server).server.ok());

  // Rotation: a new certificate means a new context; the old one is dropped by its owner.
  auto rotated = IssueWorkload(*ca_, server_id_);
  ASSERT_TRUE(rotated.ok());
  auto new_context = MeshServerContext(*rotated, *bundle_);
  old_context.reset();
  auto new_server = TlsEngine::Server(new_context);
  auto new_client = TlsEngine::Client(MeshClientContext(*client_, *bundle_),
                                      {.expected_peer = server_id_, .sni = ""});
  Outcome outcome = Handshake(*new_client, *new_server);
  ASSERT_TRUE(outcome.client.ok()) << outcome.client;
  ASSERT_TRUE(outcome.server.ok()) << outcome.server;

  EXPECT_EQ(Send(*old_client, *old_server, "still flowing"), "still flowing");
  EXPECT_EQ(Send(*old_server, *old_client, "both ways"), "both ways");
  EXPECT_EQ(Send(*new_client, *new_server, "new connection"), "new connection");
}

TEST_F(TlsTest, EngineRefusesMismatchedContext) {
  auto server_context = MeshServerContext(*server_, *bundle_);
  auto engine = TlsEngine::Client(server_context);
  EXPECT_EQ(engine->state(), State::kFailed);
  EXPECT_THAT(Message(engine->error()), HasSubstr("client engine needs a client context"));
  EXPECT_FALSE(engine->Advance().ok());
  auto no_context = TlsEngine::Server(nullptr);
  EXPECT_EQ(no_context->state(), State::kFailed);
  EXPECT_EQ(no_context->PendingWire(), 0u);
}

TEST_F(TlsTest, MeshContextNeedsASpiffeCertificate) {
  TlsCredentials external{testing::kExternalServerCertPem, testing::kExternalServerKeyPem};
  auto ctx = TlsContext::MeshServer(external, *bundle_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_THAT(Message(ctx.status()), HasSubstr("no SPIFFE identity"));
  TlsCredentials mismatched{server_->cert.chain_pem, client_->key_pem};
  ctx = TlsContext::MeshClient(mismatched, *bundle_);
  ASSERT_FALSE(ctx.ok());
  EXPECT_THAT(Message(ctx.status()), HasSubstr("does not match"));
}

TEST_F(TlsTest, ContextsServeEnginesOnManyThreads) {
  auto server_context = MeshServerContext(*server_, *bundle_);
  auto client_context = MeshClientContext(*client_, *bundle_);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto server = TlsEngine::Server(server_context, {.expected_peer = client_id_});
        auto client = TlsEngine::Client(client_context, {.expected_peer = server_id_, .sni = ""});
        Outcome outcome = Handshake(*client, *server);
        if (!outcome.client.ok() || !outcome.server.ok() ||
            Send(*client, *server, "concurrent") != "concurrent") {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(TlsTest, FailedHandshakeReportsNoPeerIdentity) {
  auto server = TlsEngine::Server(MeshServerContext(*server_, *bundle_),
                                  {.expected_peer = Id("cluster.local", "shop", "admin")});
  auto client = TlsEngine::Client(MeshClientContext(*client_, *bundle_));
  Outcome outcome = Handshake(*client, *server);
  ASSERT_FALSE(outcome.server.ok());
  EXPECT_FALSE(server->peer_identity().has_value());
  // The TLS 1.3 client had finished (and authenticated the server) before the verdict came.
  EXPECT_EQ(client->state(), State::kFailed);
  EXPECT_EQ(client->peer_identity(), server_id_);
}

class OriginationTest : public TlsTest {
 protected:
  void SetUp() override {
    TlsTest::SetUp();
    auto server =
        TlsContext::PlainServer({testing::kExternalServerCertPem, testing::kExternalServerKeyPem});
    ASSERT_TRUE(server.ok()) << server.status();
    external_server_ = *server;
  }

  Outcome Connect(const OriginationSettings& settings, std::string sni = "",
                  std::shared_ptr<const TlsContext> server_context = nullptr) {
    auto ctx = TlsContext::OriginationClient(settings);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    if (!ctx.ok()) return {ctx.status(), ctx.status()};
    auto client = TlsEngine::Client(*ctx, {.expected_peer = std::nullopt, .sni = std::move(sni)});
    auto server = TlsEngine::Server(server_context ? server_context : external_server_);
    Outcome outcome = Handshake(*client, *server);
    if (outcome.client.ok() && outcome.server.ok()) {
      EXPECT_EQ(Send(*client, *server, "GET / HTTP/1.1\r\n\r\n"), "GET / HTTP/1.1\r\n\r\n");
    }
    return outcome;
  }

  OriginationSettings Simple(std::vector<std::string> sans) {
    OriginationSettings settings;
    settings.ca_certificates_pem = testing::kExternalCaPem;
    settings.subject_alt_names = std::move(sans);
    return settings;
  }

  // A TLS server outside the mesh whose certificate ca_ signed for `dns_names`.
  struct CaSignedServer {
    SignedCertificate issued;
    std::shared_ptr<const TlsContext> context;
  };
  absl::StatusOr<CaSignedServer> ServerSignedByCa(const std::vector<std::string>& dns_names) {
    auto key = PrivateKey::GenerateP256();
    if (!key.ok()) return key.status();
    auto issued = ca_->IssueServerCertificate(*key, dns_names, absl::Hours(1));
    if (!issued.ok()) return issued.status();
    auto key_pem = key->ToPem();
    if (!key_pem.ok()) return key_pem.status();
    auto context = TlsContext::PlainServer({issued->chain_pem, *key_pem});
    if (!context.ok()) return context.status();
    return CaSignedServer{*std::move(issued), *std::move(context)};
  }

  std::shared_ptr<const TlsContext> external_server_;
};

TEST_F(OriginationTest, SimpleMatchesSubjectAltNames) {
  for (const char* san : {"api.example.com", "x.wild.example.com", "127.0.0.1"}) {
    Outcome outcome = Connect(Simple({"nope.example.com", san}));
    EXPECT_TRUE(outcome.client.ok()) << san << ": " << outcome.client;
  }
  Outcome outcome = Connect(Simple({"other.example.com", "10.0.0.1"}));
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.client),
              HasSubstr("match none of the expected names [other.example.com, 10.0.0.1]"));
  EXPECT_THAT(Message(outcome.client), HasSubstr("DNS:api.example.com"));
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer sent alert: bad certificate"));
}

TEST_F(OriginationTest, ServerCertificateWithDnsNamesFromTheCa) {
  auto server = ServerSignedByCa({"ext.example.com", "*.svc.example.com"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_FALSE(server->issued.leaf.spiffe_id.has_value());
  EXPECT_FALSE(server->issued.leaf.is_ca);
  OriginationSettings settings;
  settings.ca_certificates_pem = server->issued.roots_pem;
  settings.subject_alt_names = {"ext.example.com"};
  EXPECT_TRUE(Connect(settings, "", server->context).client.ok());
  settings.subject_alt_names = {"a.svc.example.com"};
  EXPECT_TRUE(Connect(settings, "", server->context).client.ok());
  settings.subject_alt_names = {"other.example.com"};
  Outcome outcome = Connect(settings, "", server->context);
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(Message(outcome.client), HasSubstr("DNS:ext.example.com"));

  auto key = PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_FALSE(ca_->IssueServerCertificate(*key, {}, absl::Hours(1)).ok());
  EXPECT_FALSE(ca_->IssueServerCertificate(*key, {"bad name,URI:x"}, absl::Hours(1)).ok());
  EXPECT_FALSE(ca_->IssueServerCertificate(*key, {"ext.example.com"}, absl::ZeroDuration()).ok());
}

// A server reached by name, by address and by SPIFFE ID (the CA service) carries all three.
TEST_F(OriginationTest, ServerCertificateWithDnsNamesIpsAndSpiffeId) {
  auto key = PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok()) << key.status();
  const SpiffeId id = *SpiffeId::Make("cluster.local", "istio-system", "istiod");
  CertificateAuthority::ServerNames names{{"istiod.istio-system.svc"}, {"127.0.0.1", "::1"}, id};
  auto issued = ca_->IssueServingCertificate(*key, names, absl::Hours(1));
  ASSERT_TRUE(issued.ok()) << issued.status();
  ASSERT_TRUE(issued->leaf.spiffe_id.has_value());
  EXPECT_EQ(*issued->leaf.spiffe_id, id);
  auto context = TlsContext::PlainServer({issued->chain_pem, *key->ToPem()});
  ASSERT_TRUE(context.ok()) << context.status();
  OriginationSettings settings;
  settings.ca_certificates_pem = issued->roots_pem;
  for (const std::string& san :
       std::vector<std::string>{"istiod.istio-system.svc", "127.0.0.1", id.ToString()}) {
    settings.subject_alt_names = {san};
    Outcome outcome = Connect(settings, "", *context);
    EXPECT_TRUE(outcome.client.ok()) << san << ": " << outcome.client;
  }
  settings.subject_alt_names = {"10.0.0.1"};
  EXPECT_FALSE(Connect(settings, "", *context).client.ok());

  // Addresses only, in IPv6 forms that differ from the canonical one: the subject is empty.
  CertificateAuthority::ServerNames ips_only{{}, {"0:0:0:0:0:0:0:1"}, std::nullopt};
  auto by_address = ca_->IssueServingCertificate(*key, ips_only, absl::Hours(1));
  ASSERT_TRUE(by_address.ok()) << by_address.status();
  EXPECT_EQ(by_address->leaf.subject, "");
  CertificateAuthority::ServerNames bad_ip{{}, {"10.0.0.300"}, std::nullopt};
  EXPECT_THAT(Message(ca_->IssueServingCertificate(*key, bad_ip, absl::Hours(1)).status()),
              HasSubstr("not an IP address"));
  EXPECT_FALSE(
      ca_->IssueServingCertificate(*key, CertificateAuthority::ServerNames{}, absl::Hours(1)).ok());
}

TEST_F(OriginationTest, SimpleChecksSniWithoutSubjectAltNames) {
  EXPECT_TRUE(Connect(Simple({}), "api.example.com").client.ok());
  Outcome outcome = Connect(Simple({}), "db.example.com");
  EXPECT_THAT(Message(outcome.client), HasSubstr("[db.example.com]"));
  // Neither names nor SNI: the chain alone decides.
  EXPECT_TRUE(Connect(Simple({})).client.ok());
}

TEST_F(OriginationTest, SimpleRefusesUntrustedServer) {
  OriginationSettings settings = Simple({});
  settings.ca_certificates_pem = ca_->RootsPem();
  Outcome outcome = Connect(settings);
  EXPECT_THAT(Message(outcome.client), HasSubstr("unknown CA"));
  // insecureSkipVerify accepts it anyway.
  OriginationSettings insecure;
  insecure.insecure_skip_verify = true;
  EXPECT_TRUE(Connect(insecure).client.ok());
  // Without a CA and without insecureSkipVerify there is nothing to verify against.
  auto ctx = TlsContext::OriginationClient(OriginationSettings{});
  ASSERT_FALSE(ctx.ok());
  EXPECT_THAT(Message(ctx.status()), HasSubstr("caCertificates"));
}

TEST_F(OriginationTest, CaCrlRefusesARevokedServerOnly) {
  auto server = ServerSignedByCa({"ext.example.com"});
  ASSERT_TRUE(server.ok()) << server.status();
  OriginationSettings settings;
  settings.ca_certificates_pem = server->issued.roots_pem;
  settings.subject_alt_names = {"ext.example.com"};

  auto revokes_nothing = ca_->IssueRevocationList({}, absl::Hours(1));
  ASSERT_TRUE(revokes_nothing.ok()) << revokes_nothing.status();
  auto revokes_other = ca_->IssueRevocationList({"0badc0de"}, absl::Hours(1));
  ASSERT_TRUE(revokes_other.ok()) << revokes_other.status();
  for (const std::string* crl : {&*revokes_nothing, &*revokes_other}) {
    settings.ca_crl_pem = *crl;
    Outcome outcome = Connect(settings, "", server->context);
    EXPECT_TRUE(outcome.client.ok()) << outcome.client;
  }

  auto revokes_server =
      ca_->IssueRevocationList({"0badc0de", server->issued.leaf.serial_hex}, absl::Hours(1));
  ASSERT_TRUE(revokes_server.ok()) << revokes_server.status();
  // Several CRLs in one file (one per CA) all count.
  auto other_ca_crl = other_ca_->IssueRevocationList({}, absl::Hours(1));
  ASSERT_TRUE(other_ca_crl.ok()) << other_ca_crl.status();
  settings.ca_crl_pem = absl::StrCat(*other_ca_crl, *revokes_server);
  Outcome outcome = Connect(settings, "", server->context);
  EXPECT_EQ(outcome.client.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Message(outcome.client), HasSubstr("certificate is revoked by a CRL"));
  EXPECT_THAT(Message(outcome.server), HasSubstr("certificate revoked"));

  settings.ca_crl_pem = "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n";
  auto bad = TlsContext::OriginationClient(settings);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Message(bad.status()), HasSubstr("caCrl"));
  settings.ca_crl_pem = absl::StrCat(*revokes_nothing, "trailing garbage");
  EXPECT_TRUE(TlsContext::OriginationClient(settings).ok())
      << "text after the last PEM block is ignored, as for certificates";

  EXPECT_FALSE(ca_->IssueRevocationList({"xyz"}, absl::Hours(1)).ok());
  EXPECT_FALSE(ca_->IssueRevocationList({}, absl::ZeroDuration()).ok());
}

TEST_F(OriginationTest, MutualPresentsClientCertificate) {
  auto mutual_server = TlsContext::PlainServer(
      {testing::kExternalServerCertPem, testing::kExternalServerKeyPem}, ca_->RootsPem());
  ASSERT_TRUE(mutual_server.ok()) << mutual_server.status();
  OriginationSettings settings = Simple({"api.example.com"});
  settings.mode = OriginationSettings::Mode::kMutual;
  settings.client_credentials = client_->credentials();
  Outcome outcome = Connect(settings, "", *mutual_server);
  EXPECT_TRUE(outcome.client.ok()) << outcome.client;
  EXPECT_TRUE(outcome.server.ok()) << outcome.server;

  // SIMPLE toward a server that wants a client certificate.
  outcome = Connect(Simple({"api.example.com"}), "", *mutual_server);
  EXPECT_THAT(Message(outcome.server), HasSubstr("peer did not present a certificate"));
  EXPECT_FALSE(outcome.client.ok());

  settings.client_credentials.reset();
  auto ctx = TlsContext::OriginationClient(settings);
  ASSERT_FALSE(ctx.ok());
  EXPECT_THAT(Message(ctx.status()), HasSubstr("MUTUAL"));
}

TEST_F(OriginationTest, NegotiatesAlpnAndResumesSessions) {
  OriginationSettings settings = Simple({"api.example.com"});
  settings.alpn = {"h2", "http/1.1"};
  settings.sni = "api.example.com";
  auto ctx = TlsContext::OriginationClient(settings);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (int i = 0; i < 2; ++i) {
    auto client = TlsEngine::Client(*ctx);
    auto server = TlsEngine::Server(external_server_);
    Outcome outcome = Handshake(*client, *server);
    ASSERT_TRUE(outcome.client.ok()) << outcome.client;
    ASSERT_TRUE(outcome.server.ok()) << outcome.server;
    EXPECT_EQ(client->negotiated_alpn(), "h2");
    // The session ticket arrives after the handshake; reading data picks it up.
    EXPECT_EQ(Send(*server, *client, "hello"), "hello");
    EXPECT_EQ(client->session_resumed(), i == 1) << "connection " << i;
  }
  settings.alpn = {"h2", ""};
  auto bad = TlsContext::OriginationClient(settings);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Message(bad.status()), HasSubstr("ALPN protocol '' must be 1 to 255 bytes"));
}

}  // namespace
}  // namespace nodeward::crypto
