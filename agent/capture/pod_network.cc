#include "agent/capture/pod_network.h"

#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bpf/nodeward_maps.h"
#include "common/errno_status.h"

namespace nodeward::capture {
namespace {

// Before the main table (32766) so it sees the replies first; it matches only the mark.
constexpr uint32_t kDeliveryRulePriority = 32764;
// The application's accepted socket takes the mark of the agent's SYN, and with it the route
// of its replies; the kernel's own answers (a RST when nothing listens on the port) take the
// mark of the packet they answer. Without these they would leave by the pod's default route
// toward the client, and the agent's connect would never hear back.
constexpr const char* kMarkSysctls[] = {"/proc/sys/net/ipv4/tcp_fwmark_accept",
                                        "/proc/sys/net/ipv4/fwmark_reflect",
                                        "/proc/sys/net/ipv6/fwmark_reflect"};

// An rtnetlink request built in place: header, the family-specific struct, attributes.
class Request {
 public:
  Request(uint16_t type, uint16_t flags) {
    header()->nlmsg_type = type;
    header()->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header()->nlmsg_len = NLMSG_LENGTH(0);
  }
  template <typename T>
  T* Body() {
    header()->nlmsg_len = NLMSG_LENGTH(sizeof(T));
    return reinterpret_cast<T*>(NLMSG_DATA(header()));
  }
  void AddU32(uint16_t type, uint32_t value) {
    auto* attribute = reinterpret_cast<rtattr*>(buffer_ + NLMSG_ALIGN(header()->nlmsg_len));
    attribute->rta_type = type;
    attribute->rta_len = RTA_LENGTH(sizeof(value));
    std::memcpy(RTA_DATA(attribute), &value, sizeof(value));
    header()->nlmsg_len = NLMSG_ALIGN(header()->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
  }
  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buffer_); }

 private:
  alignas(nlmsghdr) char buffer_[256] = {};
};

// Sends one request on a fresh rtnetlink socket of the calling thread's netns and waits for
// its acknowledgement; the kernel's errno comes back as the status.
absl::Status Exchange(Request& request, absl::string_view what) {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return ErrnoStatus(errno, "rtnetlink socket");
  request.header()->nlmsg_seq = 1;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, request.header(), request.header()->nlmsg_len, 0,
             reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(error, what);
  }
  alignas(nlmsghdr) char answer[4096];
  const ssize_t length = recv(fd, answer, sizeof(answer), 0);
  const int error = errno;
  close(fd);
  if (length < 0) return ErrnoStatus(error, what);
  auto* header = reinterpret_cast<nlmsghdr*>(answer);
  if (!NLMSG_OK(header, static_cast<uint32_t>(length)) || header->nlmsg_type != NLMSG_ERROR) {
    return absl::InternalError(absl::StrCat(what, ": unexpected rtnetlink answer"));
  }
  const auto* acknowledgement = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(header));
  if (acknowledgement->error != 0) return ErrnoStatus(-acknowledgement->error, what);
  return absl::OkStatus();
}

absl::Status ChangeRule(uint16_t type, uint8_t family) {
  Request request(type, type == RTM_NEWRULE ? NLM_F_CREATE | NLM_F_EXCL : 0);
  auto* rule = request.Body<fib_rule_hdr>();
  rule->family = family;
  rule->action = FR_ACT_TO_TBL;
  request.AddU32(FRA_PRIORITY, kDeliveryRulePriority);
  request.AddU32(FRA_FWMARK, NW_AGENT_DELIVERY_MARK);
  request.AddU32(FRA_FWMASK, 0xffffffff);
  request.AddU32(FRA_TABLE, NW_DELIVERY_ROUTE_TABLE);
  return Exchange(request, type == RTM_NEWRULE ? "add delivery rule" : "delete delivery rule");
}

absl::Status ChangeRoute(uint16_t type, uint8_t family) {
  Request request(type, type == RTM_NEWROUTE ? NLM_F_CREATE | NLM_F_EXCL : 0);
  auto* route = request.Body<rtmsg>();
  route->rtm_family = family;
  route->rtm_table = RT_TABLE_UNSPEC;
  route->rtm_protocol = RTPROT_STATIC;
  route->rtm_scope = RT_SCOPE_HOST;
  route->rtm_type = RTN_LOCAL;
  request.AddU32(RTA_TABLE, NW_DELIVERY_ROUTE_TABLE);
  request.AddU32(RTA_OIF, if_nametoindex("lo"));
  return Exchange(request, type == RTM_NEWROUTE ? "add delivery route" : "delete delivery route");
}

// Idempotent: what exists already is what we want.
absl::Status Ensure(absl::Status status) {
  return absl::IsAlreadyExists(status) ? absl::OkStatus() : status;
}
// What is gone already is gone.
absl::Status Forget(absl::Status status) {
  return absl::IsNotFound(status) ? absl::OkStatus() : status;
}

absl::Status InstallFamily(uint8_t family) {
  if (absl::Status status = Ensure(ChangeRoute(RTM_NEWROUTE, family)); !status.ok()) {
    return status;
  }
  return Ensure(ChangeRule(RTM_NEWRULE, family));
}

absl::Status EnableSysctl(const char* path) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
  const ssize_t written = write(fd, "1\n", 2);
  const int error = errno;
  close(fd);
  if (written != 2) return ErrnoStatus(error, absl::StrCat("write ", path));
  return absl::OkStatus();
}

}  // namespace

std::vector<IpAddress> LocalAddresses() {
  std::vector<IpAddress> addresses;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return addresses;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    // Not only the loopback device's other addresses: any address but 127/8 and ::1 can be
    // reached from outside once something routes to it.
    if (entry->ifa_addr == nullptr) continue;
    absl::StatusOr<SocketAddress> address =
        SocketAddress::FromSockaddr(entry->ifa_addr, sizeof(sockaddr_storage));
    if (!address.ok() || address->ip.IsLoopback()) continue;
    addresses.push_back(address->ip);
  }
  freeifaddrs(list);
  return addresses;
}

absl::StatusOr<int> OpenAddressWatch() {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0) return ErrnoStatus(errno, "rtnetlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(error, "subscribe to address changes");
  }
  return fd;
}

absl::StatusOr<std::vector<AddressChange>> ParseAddressChanges(absl::Span<const uint8_t> data) {
  std::vector<AddressChange> changes;
  std::size_t offset = 0;
  while (offset < data.size()) {
    if (data.size() - offset < sizeof(nlmsghdr)) {
      return absl::InvalidArgumentError("truncated rtnetlink header");
    }
    nlmsghdr header;
    std::memcpy(&header, data.data() + offset, sizeof(header));
    if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > data.size() - offset) {
      return absl::InvalidArgumentError("rtnetlink message length out of bounds");
    }
    const uint8_t* body = data.data() + offset + NLMSG_HDRLEN;
    const std::size_t body_length = header.nlmsg_len - NLMSG_HDRLEN;
    const std::size_t aligned = NLMSG_ALIGN(header.nlmsg_len);
    offset = aligned > data.size() - offset ? data.size() : offset + aligned;
    if (header.nlmsg_type != RTM_NEWADDR && header.nlmsg_type != RTM_DELADDR) continue;
    if (body_length < sizeof(ifaddrmsg)) {
      return absl::InvalidArgumentError("truncated address message");
    }
    ifaddrmsg info;
    std::memcpy(&info, body, sizeof(info));
    if (info.ifa_family != AF_INET && info.ifa_family != AF_INET6) continue;
    const std::size_t address_length = info.ifa_family == AF_INET ? 4 : 16;
    // IFA_LOCAL is the interface's own address on point-to-point links, where IFA_ADDRESS is
    // the peer's; elsewhere only IFA_ADDRESS is sent and it is the local one.
    std::optional<IpAddress> local;
    std::optional<IpAddress> address;
    std::size_t at = NLMSG_ALIGN(sizeof(ifaddrmsg));
    while (at + sizeof(rtattr) <= body_length) {
      rtattr attribute;
      std::memcpy(&attribute, body + at, sizeof(attribute));
      if (attribute.rta_len < sizeof(rtattr) || attribute.rta_len > body_length - at) {
        return absl::InvalidArgumentError("address attribute length out of bounds");
      }
      if ((attribute.rta_type == IFA_LOCAL || attribute.rta_type == IFA_ADDRESS) &&
          attribute.rta_len - RTA_LENGTH(0) == address_length) {
        IpAddress ip;
        ip.family = info.ifa_family;
        std::memcpy(ip.bytes.data(), body + at + RTA_LENGTH(0), address_length);
        (attribute.rta_type == IFA_LOCAL ? local : address) = ip;
      }
      at += RTA_ALIGN(attribute.rta_len);
    }
    const std::optional<IpAddress>& chosen = local.has_value() ? local : address;
    if (!chosen.has_value() || chosen->IsLoopback()) continue;
    changes.push_back({header.nlmsg_type == RTM_NEWADDR, *chosen});
  }
  return changes;
}

absl::StatusOr<std::vector<AddressChange>> ReadAddressChanges(int watch_fd) {
  std::vector<AddressChange> changes;
  alignas(nlmsghdr) uint8_t buffer[16384];
  while (true) {
    const ssize_t length = recv(watch_fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (length < 0) {
      if (errno == EAGAIN || errno == EINTR) return changes;
      if (errno == ENOBUFS) {
        return absl::ResourceExhaustedError("address changes were dropped by the kernel");
      }
      return ErrnoStatus(errno, "read address changes");
    }
    if (length == 0) return changes;
    absl::StatusOr<std::vector<AddressChange>> parsed =
        ParseAddressChanges(absl::MakeConstSpan(buffer, static_cast<std::size_t>(length)));
    if (!parsed.ok()) return parsed.status();
    changes.insert(changes.end(), parsed->begin(), parsed->end());
  }
}

DeliveryRouting InstallDeliveryRouting() {
  DeliveryRouting routing;
  for (const char* sysctl : kMarkSysctls) {
    // IPv6 may be off in the netns: then only its own sysctl is missing.
    absl::Status status = EnableSysctl(sysctl);
    if (!status.ok() && !(absl::StrContains(sysctl, "ipv6") && absl::IsNotFound(status))) {
      routing.problem = status.ToString();
      return routing;
    }
  }
  absl::Status v4 = InstallFamily(AF_INET);
  absl::Status v6 = InstallFamily(AF_INET6);
  routing.ipv4 = v4.ok();
  routing.ipv6 = v6.ok();
  if (!v4.ok()) routing.problem = absl::StrCat("IPv4: ", v4.ToString());
  if (!v6.ok()) {
    absl::StrAppend(&routing.problem, routing.problem.empty() ? "" : "; ", "IPv6: ", v6.ToString());
  }
  return routing;
}

absl::Status RemoveDeliveryRouting() {
  absl::Status result;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    for (absl::Status status :
         {Forget(ChangeRule(RTM_DELRULE, family)), Forget(ChangeRoute(RTM_DELROUTE, family))}) {
      // A netns with IPv6 off (EAFNOSUPPORT) never had the IPv6 half.
      const bool no_ipv6 = family == AF_INET6 && absl::IsUnavailable(status);
      if (!status.ok() && !no_ipv6 && result.ok()) result = status;
    }
  }
  return result;
}

}  // namespace nodeward::capture
