#include "agent/io/socket.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace nodeward::io {
namespace {

absl::Status ErrnoStatus(absl::string_view what, int error) {
  return absl::Status(absl::ErrnoToStatusCode(error), absl::StrCat(what, ": ", strerror(error)));
}

absl::StatusOr<int> Listen(const SocketAddress& address, int backlog, bool shared) {
  const int fd = socket(address.ip.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  const int one = 1;
  const int zero = 0;
  sockaddr_storage storage;
  const socklen_t length = address.ToSockaddr(&storage);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
      (shared && address.ip.family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) ||
      bind(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0 ||
      listen(fd, backlog) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(absl::StrCat("listen on ", address.ToString()), error);
  }
  return fd;
}

}  // namespace

absl::StatusOr<int> ListenTcp(const SocketAddress& address, int backlog) {
  return Listen(address, backlog, /*shared=*/false);
}

absl::StatusOr<int> ListenTcpShared(const SocketAddress& address, int backlog) {
  return Listen(address, backlog, /*shared=*/true);
}

absl::StatusOr<int> NewTcpSocket(int family, std::uint32_t mark) {
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus("setsockopt(SO_MARK)", error);
  }
  return fd;
}

void SetResetOnClose(int fd) {
  const linger option{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
}

}  // namespace nodeward::io
