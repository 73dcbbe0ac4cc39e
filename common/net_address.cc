#include "common/net_address.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "common/port_number.h"

namespace nodeward {

IpAddress IpAddress::V4(uint32_t network_order) {
  IpAddress address;
  address.family = AF_INET;
  std::memcpy(address.bytes.data(), &network_order, 4);
  return address;
}

absl::StatusOr<IpAddress> IpAddress::Parse(absl::string_view text) {
  std::string copy(text);
  IpAddress address;
  if (inet_pton(AF_INET, copy.c_str(), address.bytes.data()) == 1) {
    address.family = AF_INET;
    return address;
  }
  if (inet_pton(AF_INET6, copy.c_str(), address.bytes.data()) == 1) {
    address.family = AF_INET6;
    return address;
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IP address"));
}

bool IpAddress::IsLoopback() const {
  if (family == AF_INET) return bytes[0] == 127;
  if (family == AF_INET6) {
    if (IsV4Mapped()) return bytes[12] == 127;
    for (int i = 0; i < 15; ++i) {
      if (bytes[i] != 0) return false;
    }
    return bytes[15] == 1;
  }
  return false;
}

bool IpAddress::IsV4Mapped() const {
  if (family != AF_INET6) return false;
  for (int i = 0; i < 10; ++i) {
    if (bytes[i] != 0) return false;
  }
  return bytes[10] == 0xff && bytes[11] == 0xff;
}

bool IpAddress::IsLinkLocal() const {
  return family == AF_INET6 && bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80;
}

IpAddress IpAddress::Unmapped() const {
  if (!IsV4Mapped()) return *this;
  IpAddress v4;
  v4.family = AF_INET;
  std::memcpy(v4.bytes.data(), bytes.data() + 12, 4);
  return v4;
}

std::string IpAddress::ToString() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  if (family != AF_INET && family != AF_INET6) return "<unspecified>";
  if (inet_ntop(family, bytes.data(), buffer, sizeof(buffer)) == nullptr) return "<invalid>";
  return buffer;
}

absl::StatusOr<SocketAddress> SocketAddress::Parse(absl::string_view text) {
  absl::string_view host;
  absl::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find("]:");
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("expected [ipv6]:port, got \"", text, "\""));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("expected ip:port, got \"", text, "\""));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  const std::optional<uint16_t> port = ParsePortNumber(port_text);
  if (!port.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port in \"", text, "\" (1-65535, no leading zeros)"));
  }
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(host);
  if (!ip.ok()) return ip.status();
  if (ip->family == AF_INET6 && text.front() != '[') {
    return absl::InvalidArgumentError(absl::StrCat("IPv6 needs brackets: \"", text, "\""));
  }
  return SocketAddress{*ip, *port};
}

SocketAddress SocketAddress::Loopback4(uint16_t port) {
  return SocketAddress{IpAddress::V4(htonl(INADDR_LOOPBACK)), port};
}

absl::StatusOr<SocketAddress> SocketAddress::FromSockaddr(const sockaddr* address,
                                                          socklen_t length) {
  SocketAddress result;
  if (address->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    result.ip = IpAddress::V4(v4->sin_addr.s_addr);
    result.port = ntohs(v4->sin_port);
    return result;
  }
  if (address->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    result.ip.family = AF_INET6;
    std::memcpy(result.ip.bytes.data(), &v6->sin6_addr, 16);
    result.port = ntohs(v6->sin6_port);
    result.scope_id = v6->sin6_scope_id;
    return result;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported socket address family ", address->sa_family));
}

absl::StatusOr<SocketAddress> SocketAddress::PeerOf(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return ErrnoStatus(errno, "getpeername");
  }
  return FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
}

absl::StatusOr<SocketAddress> SocketAddress::LocalOf(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return ErrnoStatus(errno, "getsockname");
  }
  return FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
}

socklen_t SocketAddress::ToSockaddr(sockaddr_storage* out) const {
  std::memset(out, 0, sizeof(*out));
  if (ip.family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(out);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    std::memcpy(&v4->sin_addr, ip.bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(port);
  v6->sin6_scope_id = scope_id;
  std::memcpy(&v6->sin6_addr, ip.bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::ToString() const {
  if (ip.family == AF_INET6) {
    if (scope_id != 0) return absl::StrCat("[", ip.ToString(), "%", scope_id, "]:", port);
    return absl::StrCat("[", ip.ToString(), "]:", port);
  }
  return absl::StrCat(ip.ToString(), ":", port);
}

}  // namespace nodeward
