#include "sandbox/app.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

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

void Answer(int fd, absl::Duration read_timeout) {
  sockaddr_storage peer{}, local{};
  socklen_t length = sizeof(peer);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length);
  length = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  std::string text;
  const absl::Time deadline = absl::Now() + read_timeout;
  char buffer[4096];
  while (text.size() < (1 << 20) && WaitFor(fd, POLLIN, deadline)) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, n);
    if (text.find('\n') != std::string::npos) break;
  }
  if (size_t newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
  const std::string reply =
      absl::StrCat("from=", Describe(peer), " to=", Describe(local), " got=", text, "\n");
  size_t sent = 0;
  while (sent < reply.size()) {
    ssize_t n = send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += n;
  }
  std::printf("%s -> %s got=%s\n", Describe(peer).c_str(), Describe(local).c_str(), text.c_str());
  std::fflush(stdout);
  close(fd);
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

int ServeApp(int port, absl::Duration read_timeout) {
  signal(SIGPIPE, SIG_IGN);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, 128) != 0) {
    std::fprintf(stderr, "cannot listen on 0.0.0.0:%d: %s\n", port, std::strerror(errno));
    return 1;
  }
  std::printf("listening on 0.0.0.0:%d\n", port);
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
    std::thread(Answer, connection, read_timeout).detach();
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

}  // namespace nodeward::sandbox
