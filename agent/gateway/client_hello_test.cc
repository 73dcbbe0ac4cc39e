#include "agent/gateway/client_hello.h"

#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::gateway {
namespace {

using Bytes = std::vector<uint8_t>;
using State = ClientHelloReader::State;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The first flight of a real BoringSSL client (crypto::TlsEngine), as a gateway receives it.
Bytes BoringClientHello(const std::string& sni, std::vector<std::string> alpn) {
  crypto::OriginationSettings settings;
  settings.insecure_skip_verify = true;  // never gets as far as a certificate
  settings.alpn = std::move(alpn);
  auto context = crypto::TlsContext::OriginationClient(settings);
  EXPECT_TRUE(context.ok()) << context.status();
  auto engine = crypto::TlsEngine::Client(*context, {.expected_peer = std::nullopt, .sni = sni});
  EXPECT_TRUE(engine->Advance().ok());
  auto wire = engine->PeekWire();
  return Bytes(wire.begin(), wire.end());
}

Bytes ReadTestData(const std::string& name) {
  std::ifstream in(std::string(NODEWARD_GATEWAY_TESTDATA) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Hand-made ClientHellos for what no real client sends.
Bytes U16(std::size_t n) { return {static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)}; }

Bytes Concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

Bytes Extension(uint16_t type, const Bytes& data) {
  return Concat({U16(type), U16(data.size()), data});
}

Bytes SniExtension(const std::string& name) {
  Bytes entry = Concat({{0}, U16(name.size()), Bytes(name.begin(), name.end())});
  return Extension(0, Concat({U16(entry.size()), entry}));
}

Bytes HelloBody(const Bytes& extensions) {
  return Concat({{0x03, 0x03},
                 Bytes(32, 0x11),
                 {0},
                 U16(2),
                 {0x13, 0x01},
                 {1, 0},
                 U16(extensions.size()),
                 extensions});
}

Bytes HandshakeMessage(uint8_t type, const Bytes& body) {
  return Concat(
      {{type, 0, static_cast<uint8_t>(body.size() >> 8), static_cast<uint8_t>(body.size())}, body});
}

// `message` in handshake records carrying at most `fragment` bytes each.
Bytes Records(const Bytes& message, std::size_t fragment) {
  Bytes out;
  for (std::size_t at = 0; at < message.size(); at += fragment) {
    const std::size_t n = std::min(fragment, message.size() - at);
    Bytes piece(message.begin() + at, message.begin() + at + n);
    out = Concat({out, {22, 3, 1}, U16(n), piece});
  }
  return out;
}

Bytes MakeHello(const Bytes& extensions) {
  return Records(HandshakeMessage(1, HelloBody(extensions)), 16384);
}

// Re-frames the handshake messages of `wire` (a ClientHello flight) into records of at most
// `fragment` bytes each: the same message, split the way a TLS stack may split it.
Bytes Reframe(const Bytes& wire, std::size_t fragment) {
  Bytes message;
  for (std::size_t at = 0; at + 5 <= wire.size();) {
    const std::size_t n = wire[at + 3] << 8 | wire[at + 4];
    message.insert(message.end(), wire.begin() + at + 5, wire.begin() + at + 5 + n);
    at += 5 + n;
  }
  return Records(message, fragment);
}

ClientHelloReader FeedAll(const Bytes& bytes, ClientHelloReader::Options options = {}) {
  ClientHelloReader reader(options);
  reader.Feed(bytes);
  return reader;
}

TEST(ClientHelloReaderTest, ReadsSniAlpnAndVersionsOfABoringSslClient) {
  const Bytes wire = BoringClientHello("shop.example.com", {"h2", "http/1.1"});
  ClientHelloReader reader = FeedAll(wire);
  ASSERT_EQ(reader.state(), State::kParsed) << reader.status();
  EXPECT_TRUE(reader.hello().has_sni);
  EXPECT_EQ(reader.hello().sni, "shop.example.com");
  EXPECT_THAT(reader.hello().alpn, ElementsAre("h2", "http/1.1"));
  EXPECT_THAT(reader.hello().supported_versions, ElementsAre(0x0304, 0x0303));
  EXPECT_EQ(reader.hello().MaxVersion(), 0x0304);
  EXPECT_EQ(reader.hello().wire_length, wire.size());
  EXPECT_EQ(Bytes(reader.buffered().begin(), reader.buffered().end()), wire);
}

TEST(ClientHelloReaderTest, SplitAtEveryByteBoundaryGivesTheSameAnswer) {
  const Bytes wire = BoringClientHello("a.b.example.org", {"h2"});
  for (std::size_t split = 1; split < wire.size(); ++split) {
    ClientHelloReader reader;
    ASSERT_EQ(reader.Feed(absl::MakeConstSpan(wire).subspan(0, split)), State::kNeedMore)
        << "split at " << split;
    EXPECT_GE(reader.MinMoreBytes(), 1u);
    ASSERT_EQ(reader.Feed(absl::MakeConstSpan(wire).subspan(split)), State::kParsed)
        << "split at " << split << ": " << reader.status();
    EXPECT_EQ(reader.hello().sni, "a.b.example.org");
    EXPECT_THAT(reader.hello().alpn, ElementsAre("h2"));
    EXPECT_EQ(reader.buffered().size(), wire.size());
  }
}

TEST(ClientHelloReaderTest, OneByteAtATimeNeedsMoreUntilTheLastByte) {
  const Bytes wire = BoringClientHello("one.example.com", {});
  ClientHelloReader reader;
  for (std::size_t i = 0; i + 1 < wire.size(); ++i) {
    ASSERT_EQ(reader.Feed(absl::MakeConstSpan(&wire[i], 1)), State::kNeedMore) << i;
  }
  ASSERT_EQ(reader.Feed(absl::MakeConstSpan(&wire.back(), 1)), State::kParsed) << reader.status();
  EXPECT_EQ(reader.hello().sni, "one.example.com");
  EXPECT_TRUE(reader.hello().alpn.empty());
}

TEST(ClientHelloReaderTest, AClientHelloOverManyRecordsIsReassembledAndStillValidTls) {
  crypto::testing::TempDir dir;
  ASSERT_TRUE(dir.ok());
  auto ca = crypto::CertificateAuthority::LoadOrCreate(dir.Sub("ca"));
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto key = crypto::PrivateKey::GenerateP256();
  ASSERT_TRUE(key.ok());
  auto cert = (*ca)->IssueServerCertificate(*key, {"split.example.com"}, absl::Hours(1));
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto server_context = crypto::TlsContext::PlainServer({cert->chain_pem, *key->ToPem()});
  ASSERT_TRUE(server_context.ok()) << server_context.status();

  crypto::OriginationSettings settings;
  settings.ca_certificates_pem = cert->roots_pem;
  auto client_context = crypto::TlsContext::OriginationClient(settings);
  ASSERT_TRUE(client_context.ok()) << client_context.status();
  auto client = crypto::TlsEngine::Client(
      *client_context, {.expected_peer = std::nullopt, .sni = "split.example.com"});
  ASSERT_TRUE(client->Advance().ok());
  const auto first = client->PeekWire();
  const Bytes original(first.begin(), first.end());
  client->ConsumeWire(original.size());

  for (std::size_t fragment : {1u, 7u, 100u}) {
    const Bytes wire = Reframe(original, fragment);
    ClientHelloReader reader;
    for (std::size_t at = 0; at < wire.size(); at += 3) {
      reader.Feed(
          absl::MakeConstSpan(wire).subspan(at, std::min<std::size_t>(3, wire.size() - at)));
    }
    ASSERT_EQ(reader.state(), State::kParsed) << fragment << ": " << reader.status();
    EXPECT_EQ(reader.hello().sni, "split.example.com");
    EXPECT_EQ(reader.hello().wire_length, wire.size());
  }

  // The bytes the reader buffered, forwarded unchanged, make a handshake with a real server.
  const Bytes wire = Reframe(original, 7);
  ClientHelloReader reader = FeedAll(wire);
  ASSERT_EQ(reader.state(), State::kParsed);
  auto server = crypto::TlsEngine::Server(*server_context);
  ASSERT_EQ(server->FeedWire(reader.buffered()), wire.size());
  for (int round = 0; round < 16; ++round) {
    ASSERT_TRUE(server->Advance().ok()) << server->error();
    ASSERT_TRUE(client->Advance().ok()) << client->error();
    crypto::testing::Transfer(*server, *client);
    crypto::testing::Transfer(*client, *server);
  }
  EXPECT_EQ(client->state(), crypto::TlsEngine::State::kEstablished) << client->error();
  EXPECT_EQ(server->state(), crypto::TlsEngine::State::kEstablished) << server->error();
}

TEST(ClientHelloReaderTest, ReadsOpensslClientHellos) {
  struct Case {
    const char* file;
    bool has_sni;
    const char* sni;
    std::vector<std::string> alpn;
    uint16_t max_version;
  };
  for (const Case& c : std::vector<Case>{
           {"openssl_tls13_sni_alpn.bin", true, "www.example.com", {"h2", "http/1.1"}, 0x0304},
           {"openssl_tls12_only.bin", true, "legacy.example.com", {}, 0x0303},
           {"openssl_tls12_aes128_sha.bin", true, "legacy.example.com", {}, 0x0303},
           {"openssl_no_sni.bin", false, "", {}, 0x0304},
       }) {
    const Bytes wire = ReadTestData(c.file);
    for (std::size_t split = 1; split < wire.size(); ++split) {
      ClientHelloReader reader;
      reader.Feed(absl::MakeConstSpan(wire).subspan(0, split));
      ASSERT_EQ(reader.Feed(absl::MakeConstSpan(wire).subspan(split)), State::kParsed)
          << c.file << " split at " << split << ": " << reader.status();
      EXPECT_EQ(reader.hello().has_sni, c.has_sni) << c.file;
      EXPECT_EQ(reader.hello().sni, c.sni) << c.file;
      EXPECT_EQ(reader.hello().alpn, c.alpn) << c.file;
      EXPECT_EQ(reader.hello().MaxVersion(), c.max_version) << c.file;
      EXPECT_EQ(reader.hello().wire_length, wire.size()) << c.file;
    }
  }
}

TEST(ClientHelloReaderTest, PlaintextClientsAreNotTlsFromTheirFirstByte) {
  for (const std::string text : {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "SSH-2.0-OpenSSH_9.2\r\n"}) {
    ClientHelloReader reader;
    EXPECT_EQ(reader.Feed(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), 1)),
              State::kFailed);
    EXPECT_EQ(reader.error(), ClientHelloError::kNotTls);
    EXPECT_THAT(reader.status().message(), HasSubstr("does not start a TLS handshake record"));
  }
  // An SSLv2-framed hello, and a handshake byte followed by a non-TLS version.
  EXPECT_EQ(FeedAll({0x80, 0x2e, 0x01, 0x03, 0x01}).error(), ClientHelloError::kNotTls);
  EXPECT_EQ(FeedAll({22, 2, 0}).error(), ClientHelloError::kNotTls);
}

TEST(ClientHelloReaderTest, AStreamEndingEarlyIsTruncated) {
  const Bytes wire = BoringClientHello("t.example.com", {});
  ClientHelloReader reader;
  reader.Feed(absl::MakeConstSpan(wire).subspan(0, wire.size() / 2));
  EXPECT_EQ(reader.FeedEof(), State::kFailed);
  EXPECT_EQ(reader.error(), ClientHelloError::kTruncated);
  EXPECT_EQ(ClientHelloErrorName(reader.error()), "truncated");
}

TEST(ClientHelloReaderTest, GarbageIsMalformedWithTheFieldNamed) {
  struct Case {
    Bytes wire;
    const char* problem;
  };
  const Bytes good = HelloBody(SniExtension("x.example.com"));
  Bytes bad_extensions = good;
  bad_extensions[good.size() - 1 - SniExtension("x.example.com").size()] ^= 0x01;
  for (const Case& c : std::vector<Case>{
           {Records(HandshakeMessage(2, good), 16384), "not ClientHello"},
           {Concat({{22, 3, 1, 0, 0}}), "1 to 16384 allowed"},
           {Concat({{22, 3, 1, 0x40, 0x01}}), "1 to 16384 allowed"},
           // The first record holds only the handshake header; then application data.
           {Concat({{22, 3, 1, 0, 4, 1, 0, 1, 0}, {23, 3, 3, 0, 1, 0}}), "record of type 23"},
           {Records(HandshakeMessage(1, Bytes(good.begin(), good.begin() + 40)), 16384),
            "legacy_compression_methods"},
           {Records(HandshakeMessage(1, bad_extensions), 16384), "extensions"},
           {MakeHello(Concat({SniExtension("a.example.com"), SniExtension("b.example.com")})),
            "appears twice"},
           {MakeHello(Extension(16, {0, 3, 0, 'h', '2'})), "application_layer_protocol"},
           {MakeHello(Extension(43, {3, 3, 4})), "supported_versions"},
       }) {
    ClientHelloReader reader = FeedAll(c.wire);
    EXPECT_EQ(reader.state(), State::kFailed) << c.problem;
    EXPECT_EQ(reader.error(), ClientHelloError::kMalformed) << c.problem << ": " << reader.status();
    EXPECT_THAT(reader.status().message(), HasSubstr(c.problem));
  }
}

TEST(ClientHelloReaderTest, AClientHelloLargerThanTheBoundFailsAsSoonAsItsSizeIsKnown) {
  // A handshake header announcing 1 MiB, in the first 9 bytes of the stream.
  ClientHelloReader reader = FeedAll({22, 3, 1, 0, 4, 1, 0x10, 0, 0});
  EXPECT_EQ(reader.error(), ClientHelloError::kTooLarge) << reader.status();
  // A record longer than a small bound fails on its header.
  ClientHelloReader small = FeedAll({22, 3, 1, 0x10, 0}, {.max_buffered_bytes = 1024});
  EXPECT_EQ(small.error(), ClientHelloError::kTooLarge);
  // Within the bound, the same hello parses.
  const Bytes wire = BoringClientHello("fits.example.com", {"h2"});
  EXPECT_EQ(FeedAll(wire, {.max_buffered_bytes = wire.size()}).state(), State::kParsed);
  EXPECT_EQ(FeedAll(wire, {.max_buffered_bytes = wire.size() - 1}).error(),
            ClientHelloError::kTooLarge);
}

TEST(ClientHelloReaderTest, SniMustBeADnsHostName) {
  EXPECT_EQ(FeedAll(MakeHello(SniExtension(std::string(300, 'a')))).error(),
            ClientHelloError::kSniTooLong);
  for (const std::string& name :
       std::vector<std::string>{"bad host.example.com", "trailing.dot.", "10.1.2.3", ".lead",
                                "a..b", std::string("nul\0byte", 8), "caf\xc3\xa9.example"}) {
    ClientHelloReader reader = FeedAll(MakeHello(SniExtension(name)));
    EXPECT_EQ(reader.error(), ClientHelloError::kInvalidSni) << absl::CHexEscape(name);
  }
  ClientHelloReader reader =
      FeedAll(MakeHello(SniExtension("outbound_.9080_._.reviews.shop.svc.cluster.local")));
  ASSERT_EQ(reader.state(), State::kParsed) << reader.status();
  EXPECT_EQ(reader.hello().sni, "outbound_.9080_._.reviews.shop.svc.cluster.local");
}

TEST(ClientHelloReaderTest, BytesAfterTheClientHelloAreKeptButNotPartOfIt) {
  const Bytes hello = MakeHello(SniExtension("early.example.com"));
  const Bytes wire = Concat({hello, {23, 3, 3, 0, 2, 'h', 'i'}});
  ClientHelloReader reader = FeedAll(wire);
  ASSERT_EQ(reader.state(), State::kParsed) << reader.status();
  EXPECT_EQ(reader.hello().wire_length, hello.size());
  EXPECT_EQ(reader.buffered().size(), wire.size());
  reader.Feed({'!'});
  EXPECT_EQ(reader.buffered().size(), wire.size() + 1);
  // A failed reader keeps nothing more.
  ClientHelloReader failed = FeedAll({'G'});
  failed.Feed({'E', 'T'});
  EXPECT_EQ(failed.buffered().size(), 1u);
  EXPECT_EQ(failed.MinMoreBytes(), 0u);
}

TEST(ClientHelloReaderTest, ExtensionlessClientHellosHaveNoSni) {
  Bytes body = HelloBody({});
  body.resize(body.size() - 2);  // no extensions block at all, as before RFC 3546
  ClientHelloReader reader = FeedAll(Records(HandshakeMessage(1, body), 16384));
  ASSERT_EQ(reader.state(), State::kParsed) << reader.status();
  EXPECT_FALSE(reader.hello().has_sni);
  EXPECT_EQ(reader.hello().MaxVersion(), 0x0303);
}

TEST(IsValidSniHostNameTest, FollowsDnsHostNameRules) {
  EXPECT_TRUE(IsValidSniHostName("example.com"));
  EXPECT_TRUE(IsValidSniHostName("localhost"));
  EXPECT_TRUE(IsValidSniHostName("UPPER.Example.COM"));
  EXPECT_TRUE(IsValidSniHostName("1.2.3"));  // not an IPv4 literal
  EXPECT_TRUE(IsValidSniHostName(std::string(63, 'a') + ".com"));
  EXPECT_FALSE(IsValidSniHostName(std::string(64, 'a') + ".com"));
  EXPECT_FALSE(IsValidSniHostName(""));
  EXPECT_FALSE(IsValidSniHostName("*.example.com"));
  EXPECT_FALSE(IsValidSniHostName("::1"));
  EXPECT_FALSE(IsValidSniHostName("192.168.0.1"));
}

}  // namespace
}  // namespace nodeward::gateway
