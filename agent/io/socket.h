// Socket addresses and the few blocking socket calls made once per listener or connection.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nodeward::io {

// An IPv4 or IPv6 TCP endpoint.
class SocketAddress {
 public:
  // "10.0.0.2:8080" or "[fd00::2]:8080".
  static absl::StatusOr<SocketAddress> Parse(absl::string_view host_port);
  static SocketAddress Loopback4(std::uint16_t port);
  static absl::StatusOr<SocketAddress> OfSocket(int fd);      // getsockname
  static absl::StatusOr<SocketAddress> PeerOfSocket(int fd);  // getpeername

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }
  int family() const { return storage_.ss_family; }
  std::uint16_t port() const;
  std::string ToString() const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

// A listening TCP socket (SO_REUSEADDR, close-on-exec).
absl::StatusOr<int> ListenTcp(const SocketAddress& address, int backlog);
// A TCP socket ready for an asynchronous connect; `mark` (SO_MARK) is set when non-zero so the
// node's capture programs leave our own connections alone.
absl::StatusOr<int> NewTcpSocket(int family, std::uint32_t mark);

}  // namespace nodeward::io
