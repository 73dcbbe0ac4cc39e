// Over 600 lines on purpose: the sandbox's test application (serve, call, chat, load) shares
// its socket helpers and TLS setup; the commands are small and read top to bottom.
#include "sandbox/app.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "common/files.h"
#include "common/net_address.h"
#include "crypto/tls.h"

namespace nodeward::sandbox {
namespace {

std::string Describe(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&address);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(in->sin_port));
  }
  if (address.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return absl::StrCat("[", text, "]:", ntohs(in6->sin6_port));
  }
  return "?";
}

// Waits for `events` on fd until `deadline`; false on timeout.
bool WaitFor(int fd, short events, absl::Time deadline) {
  while (true) {
    int remaining = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (remaining <= 0) return false;
    pollfd entry{fd, events, 0};
    int ready = poll(&entry, 1, remaining);
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

void RaiseFileLimit(rlim_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min<rlim_t>(wanted, limit.rlim_max);
  if (limit.rlim_cur < wanted && geteuid() == 0) limit.rlim_max = limit.rlim_cur = wanted;
  setrlimit(RLIMIT_NOFILE, &limit);
}

// One accepted connection, plain or TLS over a blocking socket.
class Stream {
 public:
  explicit Stream(int fd) : fd_(fd) {}
  ~Stream() { close(fd_); }

  // TLS: runs the server handshake. Plain: nothing to do.
  bool Start(std::shared_ptr<const crypto::TlsContext> tls, absl::Time deadline) {
    if (tls == nullptr) return true;
    engine_ = crypto::TlsEngine::Server(std::move(tls));
    while (true) {
      if (absl::Status s = engine_->Advance(); !s.ok()) {
        Flush(deadline);
        error_ = std::string(s.message());
        return false;
      }
      if (!Flush(deadline)) return false;
      if (engine_->state() == crypto::TlsEngine::State::kEstablished) return true;
      if (!Pump(deadline)) {
        if (error_.empty()) error_ = "closed during the TLS handshake";
        return false;
      }
    }
  }

  // Up to `size` bytes; 0 at end of stream, -1 on error or timeout.
  ssize_t Read(char* out, size_t size, absl::Time deadline) {
    if (engine_ == nullptr) {
      while (WaitFor(fd_, POLLIN, deadline)) {
        ssize_t n = read(fd_, out, size);
        if (n < 0 && errno == EINTR) continue;
        return n;
      }
      return -1;
    }
    bool drained_after_eof = false;
    while (true) {
      absl::StatusOr<size_t> n =
          engine_->ReadPlaintext(absl::MakeSpan(reinterpret_cast<uint8_t*>(out), size));
      if (!n.ok()) {
        error_ = std::string(n.status().message());
        return -1;
      }
      if (*n > 0) return static_cast<ssize_t>(*n);
      if (engine_->PeerClosed()) return 0;
      if (eof_) {
        // What arrived before the end of the stream has been read once more; then it ends.
        if (drained_after_eof) return 0;
        drained_after_eof = true;
      } else if (!Flush(deadline) || (!Pump(deadline) && !eof_)) {
        return -1;
      }
      if (absl::Status s = engine_->Advance(); !s.ok()) {
        error_ = std::string(s.message());
        return -1;
      }
    }
  }

  bool Write(const std::string& data, absl::Time deadline) {
    if (engine_ == nullptr) {
      size_t sent = 0;
      while (sent < data.size()) {
        ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        sent += n;
      }
      return true;
    }
    size_t sent = 0;
    while (sent < data.size()) {
      absl::StatusOr<size_t> n = engine_->WritePlaintext(absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(data.data()) + sent, data.size() - sent));
      if (!n.ok()) return false;
      sent += *n;
      if (!Flush(deadline)) return false;
    }
    return true;
  }

  void Close(absl::Time deadline) {
    if (engine_ != nullptr) {
      engine_->Shutdown();
      Flush(deadline);
    }
  }

  const std::string& error() const { return error_; }
  int fd() const { return fd_; }

 private:
  // Sends the engine's pending ciphertext.
  bool Flush(absl::Time deadline) {
    uint8_t buffer[16384];
    while (engine_->PendingWire() > 0) {
      size_t n = engine_->ReadWire(absl::MakeSpan(buffer));
      size_t sent = 0;
      while (sent < n) {
        ssize_t w = send(fd_, buffer + sent, n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        sent += w;
      }
    }
    (void)deadline;
    return true;
  }
  // Feeds the engine what the socket has; false on timeout or error, sets eof_ at the end.
  bool Pump(absl::Time deadline) {
    if (eof_ || !WaitFor(fd_, POLLIN, deadline)) return false;
    absl::Span<uint8_t> space = engine_->WireInputSpace();
    if (space.empty()) return true;
    ssize_t n = read(fd_, space.data(), space.size());
    if (n < 0 && errno == EINTR) return true;
    if (n < 0) return false;
    if (n == 0) {
      eof_ = true;
      engine_->FeedWireEof();
      return false;
    }
    engine_->CommitWire(static_cast<size_t>(n));
    return true;
  }

  int fd_;
  std::unique_ptr<crypto::TlsEngine> engine_;
  bool eof_ = false;
  std::string error_;
};

void Answer(int fd, ServeOptions options, std::shared_ptr<const crypto::TlsContext> tls) {
  sockaddr_storage peer{}, local{};
  socklen_t length = sizeof(peer);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length);
  length = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  Stream stream(fd);
  const std::string who = absl::StrCat(Describe(peer), " -> ", Describe(local));
  if (!stream.Start(tls, absl::Now() + options.read_timeout)) {
    std::printf("%s tls handshake failed: %s\n", who.c_str(), stream.error().c_str());
    std::fflush(stdout);
    return;
  }
  char buffer[4096];
  if (options.echo_lines) {
    // Every line is answered; the connection lasts until the client closes it.
    std::string pending;
    int lines = 0;
    const absl::Duration idle = std::max(options.read_timeout, absl::Seconds(30));
    while (true) {
      ssize_t n = stream.Read(buffer, sizeof(buffer), absl::Now() + idle);
      if (n <= 0) break;
      pending.append(buffer, n);
      size_t newline;
      bool ok = true;
      while ((newline = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, newline);
        pending.erase(0, newline + 1);
        ++lines;
        ok &= stream.Write(absl::StrCat("echo=", line, "\n"), absl::Now() + idle);
      }
      if (!ok) break;
    }
    stream.Close(absl::Now() + absl::Seconds(1));
    std::printf("%s echoed %d lines\n", who.c_str(), lines);
    std::fflush(stdout);
    return;
  }
  std::string text;
  const absl::Time deadline = absl::Now() + options.read_timeout;
  while (text.size() < (1 << 20)) {
    ssize_t n = stream.Read(buffer, sizeof(buffer), deadline);
    if (n <= 0) break;
    text.append(buffer, n);
    if (text.find('\n') != std::string::npos) break;
  }
  if (size_t newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
  stream.Write(absl::StrCat("from=", Describe(peer), " to=", Describe(local), " got=", text, "\n"),
               absl::Now() + absl::Seconds(3));
  stream.Close(absl::Now() + absl::Seconds(1));
  std::printf("%s%s got=%s\n", who.c_str(), tls != nullptr ? " (tls)" : "", text.c_str());
  std::fflush(stdout);
}

bool ParseAddress(const std::string& text, sockaddr_storage& address, socklen_t& length) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = text.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 || port > 65535) return false;
  address = {};
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    length = sizeof(*in6);
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &in6->sin6_addr) == 1;
  }
  auto* in = reinterpret_cast<sockaddr_in*>(&address);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  length = sizeof(*in);
  return inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1;
}

int Fail(const std::string& reason) {
  std::printf("error=%s\n", reason.c_str());
  return 1;
}

}  // namespace

int ServeApp(const ServeOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit(16384);
  std::shared_ptr<const crypto::TlsContext> tls;
  if (!options.tls_cert.empty() || !options.tls_key.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(options.tls_cert);
    absl::StatusOr<std::string> key = ReadFile(options.tls_key);
    if (!cert.ok() || !key.ok()) {
      std::fprintf(stderr, "cannot read --tls-cert/--tls-key: %s\n",
                   std::string((cert.ok() ? key.status() : cert.status()).message()).c_str());
      return 1;
    }
    absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
        crypto::TlsContext::PlainServer({*cert, *key});
    if (!context.ok()) {
      std::fprintf(stderr, "TLS server: %s\n", std::string(context.status().message()).c_str());
      return 1;
    }
    tls = *std::move(context);
  }
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(options.listen);
  if (!ip.ok()) {
    std::fprintf(stderr, "--listen: %s\n", std::string(ip.status().message()).c_str());
    return 1;
  }
  const SocketAddress listen_on{*ip, static_cast<uint16_t>(options.port), 0};
  int fd = socket(ip->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  int zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // "::" takes IPv4 too, as Go's, Java's and nginx's default listeners do.
  if (ip->family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  sockaddr_storage address;
  const socklen_t address_length = listen_on.ToSockaddr(&address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), address_length) != 0 ||
      listen(fd, 4096) != 0) {
    std::fprintf(stderr, "cannot listen on %s: %s\n", listen_on.ToString().c_str(),
                 std::strerror(errno));
    return 1;
  }
  std::printf("listening on %s%s%s\n", listen_on.ToString().c_str(), tls != nullptr ? " (TLS)" : "",
              options.echo_lines ? " (echoing lines)" : "");
  std::fflush(stdout);
  while (true) {
    int connection = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) absl::SleepFor(absl::Milliseconds(100));
        continue;
      }
      std::fprintf(stderr, "accept: %s\n", std::strerror(errno));
      return 1;
    }
    std::thread(Answer, connection, options, tls).detach();
  }
}

int CallApp(const std::string& to, const std::string& text, absl::Duration timeout) {
  signal(SIGPIPE, SIG_IGN);
  sockaddr_storage address{};
  socklen_t length = 0;
  if (!ParseAddress(to, address, length)) {
    std::printf("error=bad address \"%s\" (expected IP:PORT or [IPv6]:PORT)\n", to.c_str());
    return 2;
  }
  const absl::Time deadline = absl::Now() + timeout;
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(absl::StrCat("socket: ", std::strerror(errno)));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS) return Fail(std::strerror(errno));
    if (!WaitFor(fd, POLLOUT, deadline)) return Fail("connect timeout");
    int error = 0;
    socklen_t size = sizeof(error);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) return Fail(std::strerror(error));
  }
  size_t sent = 0;
  while (sent < text.size()) {
    if (!WaitFor(fd, POLLOUT, deadline)) return Fail("send timeout");
    ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Fail(std::strerror(errno));
    }
    sent += n;
  }
  shutdown(fd, SHUT_WR);
  std::string reply;
  char buffer[4096];
  while (true) {
    if (!WaitFor(fd, POLLIN, deadline)) {
      return Fail(reply.empty() ? "read timeout" : absl::StrCat("read timeout after ", reply));
    }
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Fail(std::strerror(errno));
    }
    if (n == 0) break;
    reply.append(buffer, n);
  }
  close(fd);
  if (reply.empty()) return Fail("connection closed without a reply");
  std::fwrite(reply.data(), 1, reply.size(), stdout);
  if (reply.back() != '\n') std::fputc('\n', stdout);
  return 0;
}

namespace {

// Connects with a deadline; the socket stays non-blocking. -1 and `error` on failure.
int Connect(const std::string& to, absl::Time deadline, std::string& error) {
  sockaddr_storage address{};
  socklen_t length = 0;
  if (!ParseAddress(to, address, length)) {
    error = absl::StrCat("bad address \"", to, "\"");
    return -1;
  }
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = absl::StrCat("socket: ", std::strerror(errno));
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    if (errno != EINPROGRESS) {
      error = std::strerror(errno);
      close(fd);
      return -1;
    }
    if (!WaitFor(fd, POLLOUT, deadline)) {
      error = "connect timeout";
      close(fd);
      return -1;
    }
    int code = 0;
    socklen_t size = sizeof(code);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &size);
    if (code != 0) {
      error = std::strerror(code);
      close(fd);
      return -1;
    }
  }
  return fd;
}

}  // namespace

int ChatApp(const ChatOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  std::string error;
  int fd = Connect(options.to, absl::Now() + options.timeout, error);
  if (fd < 0) return Fail(error);
  std::string pending;
  char buffer[4096];
  for (int i = 1; i <= options.lines; ++i) {
    if (i > 1) absl::SleepFor(options.interval);
    const std::string line = absl::StrCat(options.text, "-", i);
    const absl::Time deadline = absl::Now() + options.timeout;
    std::string out = absl::StrCat(line, "\n");
    size_t sent = 0;
    while (sent < out.size()) {
      if (!WaitFor(fd, POLLOUT, deadline)) return Fail(absl::StrCat("line ", i, ": send timeout"));
      ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0) return Fail(absl::StrCat("line ", i, ": ", std::strerror(errno)));
      sent += n;
    }
    size_t newline;
    while ((newline = pending.find('\n')) == std::string::npos) {
      if (!WaitFor(fd, POLLIN, deadline))
        return Fail(absl::StrCat("line ", i, ": no echo in time"));
      ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0) return Fail(absl::StrCat("line ", i, ": ", std::strerror(errno)));
      if (n == 0) return Fail(absl::StrCat("line ", i, ": connection closed"));
      pending.append(buffer, n);
    }
    const std::string echo = pending.substr(0, newline);
    pending.erase(0, newline + 1);
    if (echo != absl::StrCat("echo=", line)) {
      return Fail(absl::StrCat("line ", i, ": expected echo=", line, ", got ", echo));
    }
    std::printf("%s %s\n", absl::FormatTime("%H:%M:%S", absl::Now(), absl::UTCTimeZone()).c_str(),
                echo.c_str());
    std::fflush(stdout);
  }
  close(fd);
  std::printf("chat ok: %d lines over one connection\n", options.lines);
  return 0;
}

int LoadApp(const LoadOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  const int count = options.connections;
  RaiseFileLimit(static_cast<rlim_t>(count) + 64);
  sockaddr_storage address{};
  socklen_t length = 0;
  if (!ParseAddress(options.to, address, length)) {
    std::printf("error=bad address \"%s\"\n", options.to.c_str());
    return 2;
  }
  enum class Phase { kConnecting, kSending, kReading, kDone, kFailed };
  struct Conn {
    int fd = -1;
    Phase phase = Phase::kConnecting;
    std::string out, reply, error;
    size_t sent = 0;
  };
  std::vector<Conn> conns(count);
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options.timeout;
  for (int i = 0; i < count; ++i) {
    Conn& c = conns[i];
    c.out = absl::StrCat(options.text, "-", i + 1, "\n");
    c.fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      c.phase = Phase::kFailed;
      c.error = absl::StrCat("socket: ", std::strerror(errno));
      continue;
    }
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&address), length) != 0 && errno != EINPROGRESS) {
      c.phase = Phase::kFailed;
      c.error = absl::StrCat("connect: ", std::strerror(errno));
    }
  }
  auto finish = [](Conn& c, Phase phase, std::string error = "") {
    c.phase = phase;
    c.error = std::move(error);
    close(c.fd);
    c.fd = -1;
  };
  std::vector<pollfd> fds;
  std::vector<int> index;
  while (true) {
    fds.clear();
    index.clear();
    for (int i = 0; i < count; ++i) {
      Conn& c = conns[i];
      if (c.phase == Phase::kDone || c.phase == Phase::kFailed) continue;
      fds.push_back({c.fd, static_cast<short>(c.phase == Phase::kReading ? POLLIN : POLLOUT), 0});
      index.push_back(i);
    }
    if (fds.empty()) break;
    const int remaining = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (remaining <= 0) {
      for (int i : index) finish(conns[i], Phase::kFailed, "timeout");
      break;
    }
    int ready = poll(fds.data(), fds.size(), std::min(remaining, 1000));
    if (ready < 0 && errno != EINTR) return Fail(absl::StrCat("poll: ", std::strerror(errno)));
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Conn& c = conns[index[k]];
      if (c.phase == Phase::kConnecting) {
        int code = 0;
        socklen_t size = sizeof(code);
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &code, &size);
        if (code != 0) {
          finish(c, Phase::kFailed, absl::StrCat("connect: ", std::strerror(code)));
          continue;
        }
        c.phase = Phase::kSending;
      }
      if (c.phase == Phase::kSending) {
        ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          finish(c, Phase::kFailed, absl::StrCat("send: ", std::strerror(errno)));
          continue;
        }
        if (n > 0) c.sent += n;
        if (c.sent == c.out.size()) {
          shutdown(c.fd, SHUT_WR);
          c.phase = Phase::kReading;
        }
        continue;
      }
      if (c.phase == Phase::kReading) {
        char buffer[4096];
        ssize_t n = read(c.fd, buffer, sizeof(buffer));
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n < 0) {
          finish(c, Phase::kFailed, absl::StrCat("read: ", std::strerror(errno)));
          continue;
        }
        if (n > 0) {
          c.reply.append(buffer, n);
          continue;
        }
        const std::string want = absl::StrCat("got=", c.out.substr(0, c.out.size() - 1), "\n");
        if (absl::EndsWith(c.reply, want)) {
          finish(c, Phase::kDone);
        } else {
          finish(c, Phase::kFailed,
                 c.reply.empty() ? "closed without a reply"
                                 : absl::StrCat("unexpected reply: ", c.reply));
        }
      }
    }
  }
  int ok = 0;
  std::map<std::string, int> errors;
  for (const Conn& c : conns) {
    if (c.phase == Phase::kDone) {
      ++ok;
    } else {
      ++errors[c.error.substr(0, 80)];
    }
  }
  std::printf(
      "load: %d of %d connections ok in %s\n", ok, count,
      absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))).c_str());
  for (const auto& [error, n] : errors)
    std::printf("error=%s (%d connections)\n", error.c_str(), n);
  return ok == count ? 0 : 1;
}

}  // namespace nodeward::sandbox
