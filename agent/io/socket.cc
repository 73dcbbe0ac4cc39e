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

}  // namespace

absl::StatusOr<int> ListenTcp(const SocketAddress& address, int backlog) {
  const int fd = socket(address.ip.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  const int one = 1;
  sockaddr_storage storage;
  const socklen_t length = address.ToSockaddr(&storage);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0 ||
      listen(fd, backlog) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(absl::StrCat("listen on ", address.ToString()), error);
  }
  return fd;
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
