// IP and socket addresses, the one representation every layer uses: capture and the BPF maps,
// policy, the proxies and the io_uring loop.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nodeward {

// An IPv4 or IPv6 address in network byte order (IPv4 in the first four bytes).
struct IpAddress {
  int family = AF_UNSPEC;
  std::array<uint8_t, 16> bytes{};

  static IpAddress V4(uint32_t network_order);
  static absl::StatusOr<IpAddress> Parse(absl::string_view text);

  bool IsLoopback() const;
  bool IsV4Mapped() const;
  // fe80::/10: meaningful only together with an interface (SocketAddress::scope_id).
  bool IsLinkLocal() const;
  // An IPv4-mapped IPv6 address as plain IPv4; anything else unchanged.
  IpAddress Unmapped() const;
  std::string ToString() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const IpAddress& a) {
    return H::combine(std::move(h), a.family, a.bytes);
  }
};

struct SocketAddress {
  IpAddress ip;
  uint16_t port = 0;  // host byte order
  // The interface of an IPv6 link-local address (sin6_scope_id); 0 otherwise.
  uint32_t scope_id = 0;

  // "10.0.0.1:80" or "[fd00::1]:80" (no scope).
  static absl::StatusOr<SocketAddress> Parse(absl::string_view text);
  static SocketAddress Loopback4(uint16_t port);
  static absl::StatusOr<SocketAddress> FromSockaddr(const sockaddr* address, socklen_t length);
  static absl::StatusOr<SocketAddress> PeerOf(int fd);
  static absl::StatusOr<SocketAddress> LocalOf(int fd);

  socklen_t ToSockaddr(sockaddr_storage* out) const;
  std::string ToString() const;

  friend bool operator==(const SocketAddress&, const SocketAddress&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const SocketAddress& a) {
    return H::combine(std::move(h), a.ip, a.port, a.scope_id);
  }
};

}  // namespace nodeward
