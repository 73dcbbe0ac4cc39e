#include "agent/capture/captured_pod.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bpf/nodeward_maps.h"
#include "common/errno_status.h"
#include "common/log.h"

namespace nodeward::capture {

Delivery::Delivery(int fd, SocketAddress application, SocketAddress agent_side, bool source_kept,
                   bpf::CaptureDataplane* dataplane)
    : fd_(fd),
      application_(std::move(application)),
      agent_side_(std::move(agent_side)),
      source_kept_(source_kept),
      dataplane_(dataplane) {}

Delivery::~Delivery() {
  if (fd_ >= 0) close(fd_);
  if (dataplane_ == nullptr) return;
  if (absl::Status status = dataplane_->ForgetDelivery(application_, agent_side_); !status.ok()) {
    // The map is an LRU: a missed removal ages out, and the tuple is the agent's own.
    Log(LogLevel::kWarning, "delivery ", agent_side_.ToString(), " -> ", application_.ToString(),
        ": ", status.ToString());
  }
}

int Delivery::TakeFd() { return std::exchange(fd_, -1); }

CapturedPod::CapturedPod(PodMetadata metadata, int netns_fd, uint64_t netns_cookie,
                         NetnsExecutor* executor, bpf::CaptureDataplane* dataplane,
                         DeliveryRouting routing)
    : metadata_(std::move(metadata)),
      netns_fd_(netns_fd),
      netns_cookie_(netns_cookie),
      executor_(executor),
      dataplane_(dataplane),
      routing_(std::move(routing)),
      display_name_(absl::StrCat(metadata_.namespace_name, "/", metadata_.name)) {}

CapturedPod::~CapturedPod() {
  absl::MutexLock lock(&stock_mutex_);
  for (int fd : ipv4_stock_) close(fd);
  for (int fd : ipv6_stock_) close(fd);
  close(netns_fd_);
}

absl::StatusOr<int> CapturedPod::CreateAgentSocket(int family) const {
  absl::MutexLock lock(&stock_mutex_);
  std::vector<int>& stock = family == AF_INET6 ? ipv6_stock_ : ipv4_stock_;
  if (stock.empty()) {
    absl::StatusOr<std::vector<int>> made =
        executor_->CreateSockets(netns_fd_, family, SOCK_STREAM | SOCK_NONBLOCK, kSocketBatch);
    if (!made.ok()) return made.status();
    for (int fd : *made) {
      int mark = NW_AGENT_SOCKET_MARK;
      if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        const int error = errno;
        for (int unused : *made) close(unused);
        return ErrnoStatus(error, "SO_MARK on agent socket");
      }
      // Kept through connect(); the relay forwards at once.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    stock = *std::move(made);
  }
  const int fd = stock.back();
  stock.pop_back();
  return fd;
}

namespace {

absl::Status Bind(int fd, const SocketAddress& address) {
  sockaddr_storage storage;
  const socklen_t length = address.ToSockaddr(&storage);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0) {
    return ErrnoStatus(errno, absl::StrCat("bind delivery socket to ", address.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<IpAddress> CapturedPod::KeptSource(const SocketAddress& application,
                                                 const std::optional<SocketAddress>& client) const {
  if (!client.has_value()) return std::nullopt;
  const int family = application.ip.family;
  const IpAddress ip = client->ip.Unmapped();
  const bool routed = family == AF_INET ? routing_.ipv4 : routing_.ipv6;
  if (ip.family != family || !routed || ip.IsLoopback() || ip.IsLinkLocal()) return std::nullopt;
  return ip;
}

absl::StatusOr<std::unique_ptr<Delivery>> CapturedPod::OpenDelivery(
    const SocketAddress& application, const std::optional<SocketAddress>& client) const {
  const int family = application.ip.family;
  const std::optional<IpAddress> source = KeptSource(application, client);
  // Two tries: the kernel may pick the client's own port for the client's address.
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<int> fd = CreateAgentSocket(family);
    if (!fd.ok()) return fd.status();
    auto fail = [&](absl::Status status) {
      close(*fd);
      return status;
    };
    const int mark = NW_AGENT_DELIVERY_MARK;
    if (setsockopt(*fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
      return fail(ErrnoStatus(errno, "SO_MARK on delivery socket"));
    }
    SocketAddress bind_to{application.ip, 0, application.scope_id};
    if (source.has_value()) {
      const int one = 1;
      const int level = family == AF_INET ? SOL_IP : SOL_IPV6;
      const int option = family == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT;
      if (setsockopt(*fd, level, option, &one, sizeof(one)) != 0) {
        return fail(ErrnoStatus(errno, "IP_TRANSPARENT on delivery socket"));
      }
      bind_to = SocketAddress{*source, 0, 0};
    }
    if (absl::Status bound = Bind(*fd, bind_to); !bound.ok()) return fail(bound);
    absl::StatusOr<SocketAddress> agent_side = SocketAddress::LocalOf(*fd);
    if (!agent_side.ok()) return fail(agent_side.status());
    if (source.has_value() && agent_side->port == client->port) {
      close(*fd);
      continue;
    }
    if (dataplane_ != nullptr) {
      if (absl::Status announced = dataplane_->AnnounceDelivery(application, *agent_side);
          !announced.ok()) {
        return fail(announced);
      }
    }
    return std::make_unique<Delivery>(*fd, application, *agent_side, source.has_value(),
                                      dataplane_);
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("no source port for a delivery to ", application.ToString()));
}

}  // namespace nodeward::capture
