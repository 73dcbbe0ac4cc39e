// Throughput of one connection, client to server over loopback, 32 MiB per iteration:
//   BM_DirectTcp      the baseline: two blocking sockets, no proxy
//   BM_PlainRelay     through one io_uring relay (recv into provided buffers, sendmsg onward)
//   BM_MutualTlsTunnel through two relays with mesh mTLS between them (TLS 1.3, P-256)
//   BM_HboneTunnel    the agent's HBONE path: a pooled client tunnel (HTTP/2 CONNECT in mesh
//                     mTLS) to a server tunnel that connects each stream to the backend
//   BM_HboneInMemory  HTTP/2 CONNECT framing and flow control alone, one stream, no sockets
// Every proxy runs on one io_uring loop in this process: two agents' work on one thread.
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "agent/hbone/session.h"
#include "agent/io/io_test_util.h"
#include "agent/io/listener.h"
#include "agent/io/relay.h"
#include "agent/io/tls_connection.h"
#include "agent/proxy/hbone_tunnel.h"
#include "benchmark/benchmark.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"

namespace nodeward::io {
namespace {

constexpr std::size_t kTransfer = 32 << 20;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tunnel_bench setup failed: %s\n", what.c_str());
  std::abort();
}

const std::vector<std::uint8_t>& Payload() {
  static const auto* const payload =
      new std::vector<std::uint8_t>(testing::RandomBytes(kTransfer, 1));
  return *payload;
}

// Client writes the payload and half-closes; the server reads to EOF. Returns bytes received.
// `wake` nudges the waiting side when a peer thread is done.
std::size_t Exchange(
    std::uint16_t client_port, int backend_listen_fd,
    const std::function<bool(std::function<bool()>)>& wait,
    const std::function<void()>& wake = [] {}) {
  std::atomic<std::size_t> received{0};
  std::atomic<int> finished{0};
  std::thread server([&] {
    auto fd = testing::AcceptOne(backend_listen_fd);
    if (fd.ok()) {
      auto data = testing::ReadToEof(fd->get());
      if (data.ok()) received = data->size();
    }
    ++finished;
    wake();
  });
  std::thread client([&] {
    auto fd = testing::ConnectLoopback(client_port);
    if (fd.ok()) {
      (void)testing::WriteAll(fd->get(), Payload(), 1 << 20);
      testing::ShutdownWrite(fd->get());
      (void)testing::ReadToEof(fd->get());
    }
    ++finished;
    wake();
  });
  wait([&] { return finished.load() == 2; });
  client.join();
  server.join();
  return received;
}

void BM_DirectTcp(benchmark::State& state) {
  auto backend = testing::ListenLoopback();
  if (!backend.ok()) Die(backend.status().ToString());
  for (auto _ : state) {
    const std::size_t got =
        Exchange(testing::PortOf(backend->get()), backend->get(), [](std::function<bool()> done) {
          while (!done()) std::this_thread::sleep_for(std::chrono::microseconds(200));
          return true;
        });
    if (got != kTransfer) state.SkipWithError("short transfer");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTransfer));
}
BENCHMARK(BM_DirectTcp)->Unit(benchmark::kMillisecond)->UseRealTime();

// A relay listener forwarding to `backend_port`, optionally with TLS on the accepted or the
// upstream side.
struct RelayHop {
  std::unique_ptr<Listener> listener;
};

using TlsSide = std::function<std::unique_ptr<crypto::TlsEngine>()>;

std::shared_ptr<Stream> MaybeTls(std::shared_ptr<Connection> connection, const TlsSide& tls) {
  if (!tls) return connection;
  return TlsConnection::Create(std::move(connection), tls());
}

RelayHop StartHop(EventLoop& loop, std::uint16_t upstream_port, TlsSide on_accepted_side,
                  TlsSide on_upstream_side) {
  auto listener = Listener::Bind(
      loop, SocketAddress::Loopback4(0), {},
      [&loop, upstream_port, on_accepted_side,
       on_upstream_side](std::shared_ptr<Connection> accepted) {
        Connection::Connect(loop, SocketAddress::Loopback4(upstream_port), absl::Seconds(5), {},
                            [accepted, on_accepted_side, on_upstream_side](
                                absl::StatusOr<std::shared_ptr<Connection>> upstream) {
                              if (!upstream.ok()) {
                                accepted->Close(upstream.status());
                                return;
                              }
                              Relay::Start(MaybeTls(accepted, on_accepted_side),
                                           MaybeTls(*upstream, on_upstream_side), nullptr);
                            });
      });
  if (!listener.ok()) Die(listener.status().ToString());
  return {std::move(*listener)};
}

auto LoopWaiter(EventLoop& loop) {
  return [&loop](std::function<bool()> done) {
    return loop.RunUntil([&] { return done(); }, absl::Seconds(120)).value_or(false);
  };
}

auto LoopWaker(EventLoop& loop) {
  return [&loop] { loop.Post([] {}); };
}

void BM_PlainRelay(benchmark::State& state) {
  auto loop = EventLoop::Create();
  if (!loop.ok()) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  auto backend = testing::ListenLoopback();
  if (!backend.ok()) Die(backend.status().ToString());
  RelayHop hop = StartHop(**loop, testing::PortOf(backend->get()), nullptr, nullptr);
  for (auto _ : state) {
    const std::size_t got = Exchange(hop.listener->local_address().port, backend->get(),
                                     LoopWaiter(**loop), LoopWaker(**loop));
    if (got != kTransfer) state.SkipWithError("short transfer");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTransfer));
}
BENCHMARK(BM_PlainRelay)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Mesh {
  std::shared_ptr<const crypto::TlsContext> server;
  std::shared_ptr<const crypto::TlsContext> client;
  SpiffeId server_id = crypto::testing::Id("cluster.local", "bench", "server");
};

const Mesh& GetMesh() {
  static const Mesh* const mesh = [] {
    crypto::testing::TempDir dir;
    auto ca = crypto::CertificateAuthority::LoadOrCreate(dir.Sub("ca"));
    if (!ca.ok()) Die(ca.status().ToString());
    auto bundle = crypto::TrustBundle::FromPem((*ca)->RootsPem());
    if (!bundle.ok()) Die(bundle.status().ToString());
    auto* mesh = new Mesh();
    auto server = crypto::testing::IssueWorkload(**ca, mesh->server_id);
    auto client = crypto::testing::IssueWorkload(
        **ca, crypto::testing::Id("cluster.local", "bench", "client"));
    if (!server.ok() || !client.ok()) Die("workload certificates");
    auto server_context = crypto::TlsContext::MeshServer(server->credentials(), *bundle);
    auto client_context = crypto::TlsContext::MeshClient(client->credentials(), *bundle);
    if (!server_context.ok() || !client_context.ok()) Die("TLS contexts");
    mesh->server = *server_context;
    mesh->client = *client_context;
    return mesh;
  }();
  return *mesh;
}

void BM_MutualTlsTunnel(benchmark::State& state) {
  auto loop = EventLoop::Create();
  if (!loop.ok()) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  const Mesh& mesh = GetMesh();
  auto backend = testing::ListenLoopback();
  if (!backend.ok()) Die(backend.status().ToString());
  RelayHop inbound = StartHop(
      **loop, testing::PortOf(backend->get()),
      [&mesh] { return crypto::TlsEngine::Server(mesh.server); }, nullptr);
  RelayHop outbound = StartHop(**loop, inbound.listener->local_address().port, nullptr, [&mesh] {
    return crypto::TlsEngine::Client(mesh.client, {.expected_peer = mesh.server_id, .sni = ""});
  });
  for (auto _ : state) {
    const std::size_t got = Exchange(outbound.listener->local_address().port, backend->get(),
                                     LoopWaiter(**loop), LoopWaker(**loop));
    if (got != kTransfer) state.SkipWithError("short transfer");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTransfer));
}
BENCHMARK(BM_MutualTlsTunnel)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_HboneTunnel(benchmark::State& state) {
  auto loop = EventLoop::Create();
  if (!loop.ok()) {
    state.SkipWithError("io_uring unavailable");
    return;
  }
  EventLoop& ring = **loop;
  const Mesh& mesh = GetMesh();
  auto backend = testing::ListenLoopback();
  if (!backend.ok()) Die(backend.status().ToString());
  const std::uint16_t backend_port = testing::PortOf(backend->get());
  using proxy::HboneTunnel;
  std::vector<std::shared_ptr<HboneTunnel>> servers;
  auto inbound = Listener::Bind(
      ring, SocketAddress::Loopback4(0), {},
      [&ring, &mesh, &servers, backend_port](std::shared_ptr<Connection> wire) {
        auto holder = std::make_shared<std::weak_ptr<HboneTunnel>>();
        auto server = HboneTunnel::Start(
            HboneTunnel::Role::kServer, wire, crypto::TlsEngine::Server(mesh.server), {},
            [&ring, holder, backend_port](hbone::StreamId id, const std::string&) {
              Connection::Connect(ring, SocketAddress::Loopback4(backend_port), absl::Seconds(5),
                                  {},
                                  [holder, id](absl::StatusOr<std::shared_ptr<Connection>> app) {
                                    auto tunnel = holder->lock();
                                    if (!app.ok() || tunnel == nullptr) Die("backend connect");
                                    auto stream = tunnel->AcceptStream(id);
                                    if (!stream.ok()) Die("accept stream");
                                    Relay::Start(*stream, *app, nullptr);
                                  });
            },
            nullptr);
        if (!server.ok()) Die(server.status().ToString());
        *holder = *server;
        servers.push_back(*server);
      });
  if (!inbound.ok()) Die(inbound.status().ToString());
  std::shared_ptr<HboneTunnel> client;
  Connection::Connect(
      ring, (*inbound)->local_address(), absl::Seconds(5), {},
      [&](absl::StatusOr<std::shared_ptr<Connection>> wire) {
        if (!wire.ok()) Die(wire.status().ToString());
        auto tunnel = HboneTunnel::Start(
            HboneTunnel::Role::kClient, *wire,
            crypto::TlsEngine::Client(mesh.client, {.expected_peer = mesh.server_id, .sni = ""}),
            {}, nullptr, nullptr);
        if (!tunnel.ok()) Die(tunnel.status().ToString());
        client = *tunnel;
      });
  if (!ring.RunUntil([&] { return client != nullptr; }, absl::Seconds(10)).value_or(false)) {
    Die("client tunnel");
  }
  auto outbound = Listener::Bind(ring, SocketAddress::Loopback4(0), {},
                                 [&client](std::shared_ptr<Connection> app) {
                                   auto stream = client->OpenStream("127.0.0.1:1");
                                   if (!stream.ok()) Die("open stream");
                                   Relay::Start(app, *stream, nullptr);
                                 });
  if (!outbound.ok()) Die(outbound.status().ToString());
  for (auto _ : state) {
    const std::size_t got = Exchange((*outbound)->local_address().port, backend->get(),
                                     LoopWaiter(ring), LoopWaker(ring));
    if (got != kTransfer) state.SkipWithError("short transfer");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTransfer));
  client->Close(absl::CancelledError("benchmark over"));
  for (auto& server : servers) server->Close(absl::CancelledError("benchmark over"));
}
BENCHMARK(BM_HboneTunnel)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_HboneInMemory(benchmark::State& state) {
  const std::vector<std::uint8_t>& payload = Payload();
  for (auto _ : state) {
    std::unique_ptr<hbone::ServerSession>* server_slot = nullptr;
    std::unique_ptr<hbone::ServerSession> server;
    server_slot = &server;
    std::size_t received = 0;
    hbone::Session::Callbacks server_callbacks;
    server_callbacks.on_connect = [&](hbone::StreamId id, const std::string&,
                                      const std::vector<hbone::Header>&) {
      (void)(*server_slot)->Accept(id);
    };
    std::vector<std::uint8_t> sink(64 << 10);
    server_callbacks.on_readable = [&](hbone::StreamId id) {
      while (true) {
        auto n = (*server_slot)->Read(id, absl::MakeSpan(sink));
        if (!n.ok() || *n == 0) break;
        received += *n;
      }
    };
    auto created = hbone::ServerSession::Create({}, std::move(server_callbacks));
    auto client = hbone::ClientSession::Create({}, {});
    if (!created.ok() || !client.ok()) Die("sessions");
    server = std::move(*created);
    auto id = (*client)->OpenStream("10.0.0.1:8080");
    if (!id.ok()) Die(id.status().ToString());
    std::size_t sent = 0;
    std::vector<std::uint8_t> wire;
    while (received < payload.size()) {
      if (sent < payload.size()) {
        auto n = (*client)->Write(*id, absl::MakeConstSpan(payload).subspan(sent));
        if (n.ok()) sent += *n;
      }
      wire.clear();
      (void)(*client)->CollectOutput(wire, 1 << 20);
      if (!wire.empty()) (void)server->Receive(wire);
      wire.clear();
      (void)server->CollectOutput(wire);
      if (!wire.empty()) (void)(*client)->Receive(wire);
    }
    benchmark::DoNotOptimize(received);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kTransfer));
}
BENCHMARK(BM_HboneInMemory)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace nodeward::io

BENCHMARK_MAIN();
