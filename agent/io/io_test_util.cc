#include "agent/io/io_test_util.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace nodeward::io::testing {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(errno), absl::StrCat(what, ": ", strerror(errno)));
}

void SetTimeouts(int fd) {
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> NewLoop(const EventLoop::Options& options) {
  return EventLoop::Create(options);
}

std::vector<std::uint8_t> RandomBytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> bytes(size);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(generator());
  return bytes;
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<Fd> ListenLoopback(int backlog) {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Errno("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return Errno("bind");
  }
  if (listen(fd.get(), backlog) != 0) return Errno("listen");
  return fd;
}

std::uint16_t PortOf(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

absl::StatusOr<Fd> ConnectLoopback(std::uint16_t port) {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Errno("socket");
  SetTimeouts(fd.get());
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return Errno("connect");
  }
  return fd;
}

absl::StatusOr<Fd> AcceptOne(int listen_fd) {
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  Fd fd(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (fd.get() < 0) return Errno("accept");
  SetTimeouts(fd.get());
  return fd;
}

absl::Status WriteAll(int fd, const std::vector<std::uint8_t>& data, std::size_t chunk) {
  std::size_t offset = 0;
  while (offset < data.size()) {
    const ssize_t written =
        send(fd, data.data() + offset, std::min(chunk, data.size() - offset), MSG_NOSIGNAL);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Errno("send");
    }
    offset += static_cast<std::size_t>(written);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::uint8_t>> ReadToEof(int fd, std::size_t pause_every,
                                                    absl::Duration pause) {
  std::vector<std::uint8_t> data;
  std::uint8_t buffer[65536];
  std::size_t since_pause = 0;
  for (;;) {
    const std::size_t want =
        pause_every > 0 ? std::min(sizeof(buffer), pause_every) : sizeof(buffer);
    const ssize_t read = recv(fd, buffer, want, 0);
    if (read < 0) {
      if (errno == EINTR) continue;
      return Errno("recv");
    }
    if (read == 0) return data;
    data.insert(data.end(), buffer, buffer + read);
    since_pause += static_cast<std::size_t>(read);
    if (pause_every > 0 && since_pause >= pause_every) {
      since_pause = 0;
      absl::SleepFor(pause);
    }
  }
}

void ShutdownWrite(int fd) { shutdown(fd, SHUT_WR); }

}  // namespace nodeward::io::testing
