// mesh_bench: the load side of `make bench` (bench/mesh/run.sh, bench/gateway/run.sh). Plain
// blocking sockets, so what it measures is the path between client and server, whatever carries it:
// direct TCP, nodeward's HBONE tunnels, or a peer proxy pair.
//
//   mesh_bench serve --port=9000
//   mesh_bench bulk --to=IP:PORT [--bytes=1073741824] [--pids=1,2]
//   mesh_bench pingpong --to=IP:PORT [--round-trips=20000] [--size=64]
//   mesh_bench connrate --to=IP:PORT [--clients=16] [--seconds=3] [--pids=1,2]
//   mesh_bench idle --to=IP:PORT [--count=1000] [--pids=1,2]
//   mesh_bench certs --dir=DIR
//   client commands with --tls-sni=NAME --tls-ca=FILE: over TLS to a server that terminates it
//   (a gateway, or a TLS server behind a passthrough), every handshake a full one
//
// Every client command prints one line of key=value figures. --pids names the tunnel
// processes whose CPU time (bulk, connrate) or PSS (idle) is read from /proc around the
// measurement.
//
// Over 600 lines on purpose: every command shares the same socket, TLS and /proc readers, so
// that each figure is measured the same way whichever row it belongs to.
//
// Wire protocol: the client's first byte picks the exchange.
//   'B' + u64 n: the client sends n bytes, the server answers u64 n once all arrived.
//   'P' + u32 s: ping-pong of s-byte messages until EOF.
//   'C' + 31 bytes: the server answers 32 bytes and closes first (so TIME_WAIT stays on the
//                   server side and the client's ports are reused at once).
//   'I': the server answers one byte and holds the connection until EOF.
//
// Over 600 lines on purpose: one binary for every load `make bench` runs (the mesh and the
// gateway rows), so every row is measured by the same client code.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/dashed_flags.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/tls.h"

ABSL_FLAG(int, port, 9000, "serve: TCP port to listen on (all addresses)");
ABSL_FLAG(std::string, to, "", "client commands: IP:PORT to connect to");
ABSL_FLAG(int64_t, bytes, int64_t{1} << 30, "bulk: bytes to send on one connection");
ABSL_FLAG(int, round_trips, 20000, "pingpong: measured round trips (after 1000 warm-up)");
ABSL_FLAG(int, size, 64, "pingpong: message size in bytes");
ABSL_FLAG(int, clients, 16, "connrate: parallel clients");
ABSL_FLAG(double, seconds, 3.0, "connrate: duration");
ABSL_FLAG(int, count, 1000, "idle: connections to hold open");
ABSL_FLAG(std::string, pids, "",
          "bulk, connrate, idle: comma-separated pids of the tunnel processes");
ABSL_FLAG(std::string, dir, "", "certs: output directory");
ABSL_FLAG(std::string, tls_sni, "", "client commands: speak TLS with this server name");
ABSL_FLAG(std::string, tls_ca, "", "client commands with --tls-sni: PEM roots of the server");

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "mesh_bench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void DrainToEof(int fd) {
  char buffer[4096];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
  }
}

void NoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

sockaddr_in ParseAddress(const std::string& text) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int port = 0;
  if (parts.size() != 2 || inet_pton(AF_INET, parts[0].c_str(), &address.sin_addr) != 1 ||
      !absl::SimpleAtoi(parts[1], &port) || port <= 0 || port > 65535) {
    std::fprintf(stderr, "mesh_bench: --to must be IPv4:PORT, got '%s'\n", text.c_str());
    std::exit(2);
  }
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

// -1 on failure, errno set.
int Connect(const sockaddr_in& address) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  NoDelay(fd);
  return fd;
}

// One client connection: the socket itself, or TLS over it (--tls-sni) pumped by a blocking
// loop around crypto::TlsEngine. Closes itself.
class Link {
 public:
  // Null on failure, errno set for a failed connect.
  static std::unique_ptr<Link> Dial(const sockaddr_in& to);
  ~Link() {
    if (fd_ >= 0) close(fd_);
  }
  bool Write(const void* data, size_t size);
  bool Read(void* data, size_t size);
  void DrainToEof();

 private:
  explicit Link(int fd) : fd_(fd) {}
  bool Handshake();
  bool Flush();
  bool Pump();  // reads what the socket has, feeds the engine

  int fd_;
  std::unique_ptr<nodeward::crypto::TlsEngine> tls_;
  std::vector<uint8_t> unfed_;  // ciphertext read from the socket, not yet fed
};

std::shared_ptr<const nodeward::crypto::TlsContext> ClientTls() {
  static const std::shared_ptr<const nodeward::crypto::TlsContext> context = [] {
    std::shared_ptr<const nodeward::crypto::TlsContext> made;
    if (absl::GetFlag(FLAGS_tls_sni).empty()) return made;
    std::ifstream in(absl::GetFlag(FLAGS_tls_ca));
    std::stringstream roots;
    roots << in.rdbuf();
    nodeward::crypto::OriginationSettings settings;
    settings.ca_certificates_pem = roots.str();
    settings.sni = absl::GetFlag(FLAGS_tls_sni);
    settings.subject_alt_names = {settings.sni};
    settings.resume_sessions = false;
    auto context = nodeward::crypto::TlsContext::OriginationClient(settings);
    if (!context.ok()) {
      std::fprintf(stderr, "mesh_bench: --tls-ca %s: %s\n", absl::GetFlag(FLAGS_tls_ca).c_str(),
                   context.status().ToString().c_str());
      std::exit(2);
    }
    return *context;
  }();
  return context;
}

std::unique_ptr<Link> Link::Dial(const sockaddr_in& to) {
  const int fd = Connect(to);
  if (fd < 0) return nullptr;
  std::unique_ptr<Link> link(new Link(fd));
  if (std::shared_ptr<const nodeward::crypto::TlsContext> tls = ClientTls()) {
    link->tls_ = nodeward::crypto::TlsEngine::Client(tls);
    if (!link->Handshake()) {
      errno = ECONNABORTED;
      return nullptr;
    }
  }
  return link;
}

bool Link::Flush() {
  while (true) {
    nodeward::crypto::TlsEngine::WireChunk chunk = tls_->TakeWire();
    if (chunk.size == 0) return true;
    if (!WriteAll(fd_, chunk.storage.get() + chunk.offset, chunk.size)) return false;
  }
}

bool Link::Pump() {
  if (unfed_.empty()) {
    unfed_.resize(64 * 1024);
    ssize_t n;
    do {
      n = read(fd_, unfed_.data(), unfed_.size());
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      unfed_.clear();
      return false;
    }
    unfed_.resize(static_cast<size_t>(n));
  }
  // What the engine does not take now (it holds plaintext nobody read yet) waits for the next
  // call.
  const size_t took = tls_->FeedWire(unfed_);
  unfed_.erase(unfed_.begin(), unfed_.begin() + static_cast<std::ptrdiff_t>(took));
  return tls_->Advance().ok() && Flush();
}

bool Link::Handshake() {
  if (!tls_->Advance().ok() || !Flush()) return false;
  while (tls_->state() == nodeward::crypto::TlsEngine::State::kHandshaking) {
    if (!Pump()) return false;
  }
  return tls_->state() == nodeward::crypto::TlsEngine::State::kEstablished;
}

bool Link::Write(const void* data, size_t size) {
  if (tls_ == nullptr) return WriteAll(fd_, data, size);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    absl::StatusOr<size_t> n = tls_->WritePlaintext(absl::MakeConstSpan(p, size));
    if (!n.ok() || !Flush()) return false;
    if (*n == 0) return false;
    p += *n;
    size -= *n;
  }
  return true;
}

bool Link::Read(void* data, size_t size) {
  if (tls_ == nullptr) return ReadAll(fd_, data, size);
  uint8_t* p = static_cast<uint8_t*>(data);
  while (size > 0) {
    absl::StatusOr<size_t> n = tls_->ReadPlaintext(absl::MakeSpan(p, size));
    if (!n.ok()) return false;
    if (*n > 0) {
      p += *n;
      size -= *n;
      continue;
    }
    if (tls_->PeerClosed() || !Pump()) return false;
  }
  return true;
}

void Link::DrainToEof() {
  if (tls_ == nullptr) {
    ::DrainToEof(fd_);
    return;
  }
  uint8_t buffer[4096];
  while (true) {
    absl::StatusOr<size_t> n = tls_->ReadPlaintext(absl::MakeSpan(buffer, sizeof(buffer)));
    if (!n.ok()) return;
    if (*n > 0) continue;
    if (tls_->PeerClosed() || !Pump()) return;
  }
}

std::vector<int> Pids() {
  std::vector<int> pids;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_pids), ',', absl::SkipEmpty())) {
    int pid = 0;
    if (!absl::SimpleAtoi(part, &pid)) {
      std::fprintf(stderr, "mesh_bench: bad pid '%s'\n", std::string(part).c_str());
      std::exit(2);
    }
    pids.push_back(pid);
  }
  return pids;
}

// utime + stime of every thread of the processes, live and exited, in clock ticks.
long CpuTicks(const std::vector<int>& pids) {
  long total = 0;
  for (int pid : pids) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t end_of_name = stat.rfind(')');
    if (end_of_name == std::string::npos) {
      std::fprintf(stderr, "mesh_bench: cannot read /proc/%d/stat\n", pid);
      std::exit(1);
    }
    std::istringstream fields(stat.substr(end_of_name + 2));
    std::string field;
    // Fields after the name start at 3 (state); utime and stime are 14 and 15.
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14 || i == 15) total += std::stol(field);
    }
  }
  return total;
}

long PssKib(const std::vector<int>& pids) {
  long total = 0;
  for (int pid : pids) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string line;
    bool found = false;
    while (std::getline(in, line)) {
      if (line.rfind("Pss:", 0) == 0) {
        total += std::stol(line.substr(4));
        found = true;
        break;
      }
    }
    if (!found) {
      std::fprintf(stderr, "mesh_bench: cannot read /proc/%d/smaps_rollup\n", pid);
      std::exit(1);
    }
  }
  return total;
}

// ---- serve ----

void ServeBulk(int fd) {
  uint64_t expected = 0;
  if (ReadAll(fd, &expected, sizeof(expected))) {
    std::vector<char> buffer(256 * 1024);
    uint64_t received = 0;
    while (received < expected) {
      ssize_t n = read(fd, buffer.data(), std::min<uint64_t>(buffer.size(), expected - received));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      received += static_cast<uint64_t>(n);
    }
    if (received == expected && WriteAll(fd, &received, sizeof(received))) DrainToEof(fd);
  }
  close(fd);
}

void ServePingPong(int fd) {
  uint32_t size = 0;
  if (ReadAll(fd, &size, sizeof(size)) && size > 0 && size <= 65536) {
    std::vector<char> message(size);
    while (ReadAll(fd, message.data(), size) && WriteAll(fd, message.data(), size)) {
    }
  }
  close(fd);
}

void ServeIdle(int fd) {
  char ack = 'i';
  if (WriteAll(fd, &ack, 1)) DrainToEof(fd);
  close(fd);
}

void ServeConnection(int fd) {
  NoDelay(fd);
  char mode = 0;
  if (!ReadAll(fd, &mode, 1)) {
    close(fd);
    return;
  }
  switch (mode) {
    case 'C': {  // answered inline: no thread per short connection
      char request[31];
      char reply[32];
      std::memset(reply, 'r', sizeof(reply));
      if (ReadAll(fd, request, sizeof(request))) WriteAll(fd, reply, sizeof(reply));
      close(fd);
      return;
    }
    case 'B':
      std::thread(ServeBulk, fd).detach();
      return;
    case 'P':
      std::thread(ServePingPong, fd).detach();
      return;
    case 'I':
      std::thread(ServeIdle, fd).detach();
      return;
    default:
      close(fd);
  }
}

int Serve() {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) Die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(absl::GetFlag(FLAGS_port)));
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) Die("bind");
  if (listen(listener, 4096) != 0) Die("listen");
  // A few blocking acceptors: a short connection is answered by the thread that accepted it.
  std::vector<std::thread> acceptors;
  for (int i = 0; i < 32; ++i) {
    acceptors.emplace_back([listener] {
      while (true) {
        int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
            if (errno == EMFILE || errno == ENFILE) usleep(1000);
            continue;
          }
          Die("accept");
        }
        timeval timeout{.tv_sec = 10, .tv_usec = 0};  // a silent client cannot hold an acceptor
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        char mode = 0;
        ssize_t n = recv(fd, &mode, 1, MSG_PEEK);
        if (n == 1 && mode != 'C') {
          timeval none{};
          setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        }
        ServeConnection(fd);
      }
    });
  }
  for (std::thread& acceptor : acceptors) acceptor.join();
  return 0;
}

// ---- clients ----

int Bulk(const sockaddr_in& to) {
  const uint64_t bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_bytes));
  const std::vector<int> pids = Pids();
  std::vector<char> chunk(256 * 1024, 'b');
  const long ticks_before = CpuTicks(pids);
  const Clock::time_point start = Clock::now();
  std::unique_ptr<Link> link = Link::Dial(to);
  if (link == nullptr) Die("connect");
  char mode = 'B';
  if (!link->Write(&mode, 1) || !link->Write(&bytes, sizeof(bytes))) Die("bulk header");
  for (uint64_t sent = 0; sent < bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - sent));
    if (!link->Write(chunk.data(), n)) Die("bulk write");
    sent += n;
  }
  uint64_t acknowledged = 0;
  if (!link->Read(&acknowledged, sizeof(acknowledged)) || acknowledged != bytes) {
    std::fprintf(stderr, "mesh_bench: bulk: server acknowledged %llu of %llu bytes\n",
                 static_cast<unsigned long long>(acknowledged),
                 static_cast<unsigned long long>(bytes));
    return 1;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  link.reset();
  // Let the tunnel processes finish their share of the connection's teardown.
  usleep(200 * 1000);
  const long ticks = CpuTicks(pids) - ticks_before;
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf("gbit_per_s=%.3f seconds=%.3f cpu_s_per_gb=%.3f\n", gb * 8 / seconds, seconds,
              pids.empty() ? 0.0 : static_cast<double>(ticks) / sysconf(_SC_CLK_TCK) / gb);
  return 0;
}

int PingPong(const sockaddr_in& to) {
  const int rounds = absl::GetFlag(FLAGS_round_trips);
  const uint32_t size = static_cast<uint32_t>(absl::GetFlag(FLAGS_size));
  std::unique_ptr<Link> link = Link::Dial(to);
  if (link == nullptr) Die("connect");
  char mode = 'P';
  if (!link->Write(&mode, 1) || !link->Write(&size, sizeof(size))) Die("pingpong header");
  std::vector<char> message(size, 'p');
  std::vector<double> micros;
  micros.reserve(static_cast<size_t>(rounds));
  for (int i = -1000; i < rounds; ++i) {
    const Clock::time_point start = Clock::now();
    if (!link->Write(message.data(), size) || !link->Read(message.data(), size)) {
      Die("pingpong");
    }
    if (i >= 0) {
      micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
  }
  link.reset();
  std::sort(micros.begin(), micros.end());
  auto percentile = [&](double p) {
    return micros[std::min(micros.size() - 1, static_cast<size_t>(p * micros.size()))];
  };
  std::printf("p50_us=%.1f p99_us=%.1f\n", percentile(0.50), percentile(0.99));
  return 0;
}

int ConnRate(const sockaddr_in& to) {
  const int clients = absl::GetFlag(FLAGS_clients);
  const auto duration = std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds));
  std::atomic<long> done{0};
  std::atomic<long> failed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const std::vector<int> pids = Pids();
  const long ticks_before = CpuTicks(pids);
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&] {
      char request[32];
      std::memset(request, 'q', sizeof(request));
      request[0] = 'C';
      char reply[32];
      while (!stop.load(std::memory_order_relaxed)) {
        std::unique_ptr<Link> link = Link::Dial(to);
        bool ok = link != nullptr && link->Write(request, sizeof(request)) &&
                  link->Read(reply, sizeof(reply));
        if (ok) link->DrainToEof();  // the server closes first
        (ok ? done : failed).fetch_add(1, std::memory_order_relaxed);
        if (!ok) usleep(1000);
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  usleep(200 * 1000);  // the tunnel processes' share of the last connections' teardown
  const long ticks = CpuTicks(pids) - ticks_before;
  std::printf("conn_per_s=%.0f connections=%ld failed=%ld cpu_us_per_conn=%.1f\n", done / seconds,
              done.load(), failed.load(),
              pids.empty() || done == 0
                  ? 0.0
                  : static_cast<double>(ticks) * 1e6 / sysconf(_SC_CLK_TCK) / done.load());
  return failed > done / 100 ? 1 : 0;  // more than 1% failures: not a measurement
}

int Idle(const sockaddr_in& to) {
  const int count = absl::GetFlag(FLAGS_count);
  const std::vector<int> pids = Pids();
  const long idle_kib = PssKib(pids);
  long max_kib = 0;  // the largest single process, idle (one agent, say)
  for (int pid : pids) max_kib = std::max(max_kib, PssKib({pid}));
  std::vector<std::unique_ptr<Link>> links;
  links.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    std::unique_ptr<Link> link = Link::Dial(to);
    char mode = 'I';
    char ack = 0;
    if (link == nullptr || !link->Write(&mode, 1) || !link->Read(&ack, 1)) Die("idle connection");
    links.push_back(std::move(link));
  }
  sleep(1);  // let the tunnel processes settle
  const long held_kib = PssKib(pids);
  links.clear();
  std::printf("idle_pss_kib=%ld max_pss_kib=%ld held_pss_kib=%ld per_conn_kib=%.2f\n", idle_kib,
              max_kib, held_kib, static_cast<double>(held_kib - idle_kib) / count);
  return 0;
}

// ---- certs ----

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  if (!out.good()) {
    std::fprintf(stderr, "mesh_bench: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

// An ECDSA P-256 CA and two leaves signed by it, server.bench and client.bench (both usable
// for either side of mutual TLS): NAME.crt, NAME.key, NAME.pem (both), ca.pem.
int Certs() {
  namespace crypto = nodeward::crypto;
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    std::fprintf(stderr, "mesh_bench: certs needs --dir\n");
    return 2;
  }
  auto ca = crypto::CertificateAuthority::LoadOrCreate(dir + "/ca");
  if (!ca.ok()) {
    std::fprintf(stderr, "mesh_bench: CA: %s\n", ca.status().ToString().c_str());
    return 1;
  }
  for (const std::string name : {"server", "client"}) {
    auto key = crypto::PrivateKey::GenerateP256();
    if (!key.ok()) return 1;
    auto key_pem = key->ToPem();
    auto signed_cert = (*ca)->IssueServerCertificate(*key, {name + ".bench"}, absl::Hours(24));
    if (!key_pem.ok() || !signed_cert.ok()) {
      std::fprintf(stderr, "mesh_bench: issuing %s: %s\n", name.c_str(),
                   signed_cert.status().ToString().c_str());
      return 1;
    }
    WriteFile(dir + "/" + name + ".crt", signed_cert->chain_pem);
    WriteFile(dir + "/" + name + ".key", *key_pem);
    WriteFile(dir + "/" + name + ".pem", signed_cert->chain_pem + *key_pem);
    WriteFile(dir + "/ca.pem", signed_cert->roots_pem);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> store;
  std::vector<char*> args = nodeward::DashedFlagsToUnderscores(argc, argv, store);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  const std::string command = positional.size() > 1 ? positional[1] : "";
  if (command == "serve") return Serve();
  if (command == "certs") return Certs();
  if (command == "bulk" || command == "pingpong" || command == "connrate" || command == "idle") {
    const sockaddr_in to = ParseAddress(absl::GetFlag(FLAGS_to));
    if (command == "bulk") return Bulk(to);
    if (command == "pingpong") return PingPong(to);
    if (command == "connrate") return ConnRate(to);
    return Idle(to);
  }
  std::fprintf(stderr,
               "usage: mesh_bench serve|bulk|pingpong|connrate|idle|certs [--flags]; "
               "see --help\n");
  return 2;
}
