// Addresses arrive from the enrollment API and from flags: parsing must never crash, and what
// parses must print back to something that parses to the same address.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/net_address.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (absl::StatusOr<nodeward::SocketAddress> address =
          nodeward::SocketAddress::Parse(text);
      address.ok()) {
    absl::StatusOr<nodeward::SocketAddress> again =
        nodeward::SocketAddress::Parse(address->ToString());
    if (!again.ok() || !(*again == *address)) std::abort();
  }
  if (absl::StatusOr<nodeward::IpAddress> ip = nodeward::IpAddress::Parse(text);
      ip.ok()) {
    (void)ip->IsLoopback();
    (void)ip->Unmapped().ToString();
  }
  sockaddr_storage storage{};
  std::memcpy(&storage, data, size < sizeof(storage) ? size : sizeof(storage));
  (void)nodeward::SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&storage),
                                                   static_cast<socklen_t>(size));
  return 0;
}
