// The few blocking socket calls made once per listener or connection.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/net_address.h"

namespace nodeward::io {

// A listening TCP socket (SO_REUSEADDR, close-on-exec).
absl::StatusOr<int> ListenTcp(const SocketAddress& address, int backlog);
// The same for a server facing clients of any family on one port from several loops:
// SO_REUSEPORT (one socket per loop, the kernel spreading connections among them) and, for an
// IPv6 address, IPv4 clients too (IPV6_V6ONLY off).
absl::StatusOr<int> ListenTcpShared(const SocketAddress& address, int backlog);
// A TCP socket ready for an asynchronous connect; `mark` (SO_MARK) is set when non-zero so the
// node's capture programs leave our own connections alone.
absl::StatusOr<int> NewTcpSocket(int family, std::uint32_t mark);
// close() of this socket then sends RST instead of FIN (SO_LINGER with a zero timeout): for
// connections refused or failed, so the peer learns it at once rather than as a clean end.
void SetResetOnClose(int fd);

}  // namespace nodeward::io
