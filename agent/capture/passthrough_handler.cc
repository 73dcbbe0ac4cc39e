#include "agent/capture/passthrough_handler.h"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/capture/capture_log.h"
#include "bpf/nodeward_maps.h"
#include "common/errno_status.h"

namespace nodeward::capture {
namespace {

// Close so that the peer sees a reset rather than a clean end of stream.
void CloseWithReset(int fd) {
  linger option{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
  close(fd);
}

std::string PeerText(int fd) {
  absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(fd);
  return peer.ok() ? peer->ToString() : "<unknown>";
}

}  // namespace

struct PassthroughHandler::Relay {
  struct Direction {
    int from = -1;
    int to = -1;
    std::unique_ptr<char[]> buffer;
    size_t begin = 0;
    size_t end = 0;
    bool read_closed = false;
    bool write_shut = false;
    uint64_t bytes = 0;
  };

  std::shared_ptr<const CapturedPod> pod;
  std::string description;
  int downstream = -1;
  int upstream = -1;
  bool connecting = true;
  bool finished = false;
  absl::Time connect_deadline;
  Direction to_upstream;
  Direction to_downstream;
};

absl::StatusOr<std::unique_ptr<PassthroughHandler>> PassthroughHandler::Create(
    const Options& options) {
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return ErrnoStatus(errno, "epoll_create1");
  int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    int error = errno;
    close(epoll_fd);
    return ErrnoStatus(error, "eventfd");
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = nullptr;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) != 0) {
    int error = errno;
    close(epoll_fd);
    close(wake_fd);
    return ErrnoStatus(error, "epoll_ctl wake fd");
  }
  return std::unique_ptr<PassthroughHandler>(new PassthroughHandler(options, epoll_fd, wake_fd));
}

PassthroughHandler::PassthroughHandler(const Options& options, int epoll_fd, int wake_fd)
    : options_(options), epoll_fd_(epoll_fd), wake_fd_(wake_fd) {
  thread_ = std::thread([this] { Loop(); });
}

PassthroughHandler::~PassthroughHandler() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
  absl::MutexLock lock(&mutex_);
  for (Relay* relay : relays_) {
    close(relay->downstream);
    close(relay->upstream);
    delete relay;
  }
  relays_.clear();
  close(wake_fd_);
  close(epoll_fd_);
}

size_t PassthroughHandler::active_connections() const {
  absl::MutexLock lock(&mutex_);
  return relays_.size();
}

void PassthroughHandler::OnOutbound(std::shared_ptr<const CapturedPod> pod, int client_fd,
                                    const SocketAddress& original_destination) {
  std::string description =
      absl::StrCat("outbound pod=", pod->display_name(), " peer=", PeerText(client_fd),
                   " destination=", original_destination.ToString());
  StartRelay(std::move(pod), client_fd, original_destination, std::move(description));
}

void PassthroughHandler::OnInbound(std::shared_ptr<const CapturedPod> pod, int fd,
                                   uint16_t original_port, bool via_tunnel_port) {
  std::string description = absl::StrCat("inbound pod=", pod->display_name(),
                                         " peer=", PeerText(fd), " port=", original_port);
  if (via_tunnel_port) {
    Log(LogLevel::kWarning, description,
        " refused reason=tunnel termination is not available in passthrough mode");
    CloseWithReset(fd);
    return;
  }
  if (original_port == NW_PORT_OUTBOUND || original_port == NW_PORT_INBOUND_PLAINTEXT) {
    // Delivering there would hand the connection straight back to the agent.
    Log(LogLevel::kWarning, description, " refused reason=agent port");
    CloseWithReset(fd);
    return;
  }
  absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
  if (!local.ok()) {
    Log(LogLevel::kWarning, description, " refused reason=", local.status().ToString());
    CloseWithReset(fd);
    return;
  }
  SocketAddress target;
  if (local->ip.family == AF_INET6) {
    target.ip = *IpAddress::Parse("::1");
  } else {
    target.ip = IpAddress::V4(htonl(INADDR_LOOPBACK));
  }
  target.port = original_port;
  StartRelay(std::move(pod), fd, target, std::move(description));
}

void PassthroughHandler::StartRelay(std::shared_ptr<const CapturedPod> pod, int downstream_fd,
                                    const SocketAddress& target, std::string description) {
  absl::StatusOr<int> upstream = pod->CreateAgentSocket(target.ip.family);
  if (!upstream.ok()) {
    Log(LogLevel::kError, description, " refused reason=", upstream.status().ToString());
    CloseWithReset(downstream_fd);
    return;
  }
  sockaddr_storage address;
  socklen_t length = target.ToSockaddr(&address);
  if (connect(*upstream, reinterpret_cast<sockaddr*>(&address), length) != 0 &&
      errno != EINPROGRESS) {
    Log(LogLevel::kWarning, description, " refused reason=connect to ", target.ToString(), ": ",
        std::strerror(errno));
    close(*upstream);
    CloseWithReset(downstream_fd);
    return;
  }
  auto relay = std::make_unique<Relay>();
  relay->pod = std::move(pod);
  relay->description = std::move(description);
  relay->downstream = downstream_fd;
  relay->upstream = *upstream;
  relay->connect_deadline = absl::Now() + options_.connect_timeout;
  relay->to_upstream.from = downstream_fd;
  relay->to_upstream.to = *upstream;
  relay->to_upstream.buffer = std::make_unique<char[]>(options_.buffer_bytes);
  relay->to_downstream.from = *upstream;
  relay->to_downstream.to = downstream_fd;
  relay->to_downstream.buffer = std::make_unique<char[]>(options_.buffer_bytes);
  Log(LogLevel::kDebug, relay->description, " relaying to ", target.ToString());

  Relay* raw = relay.release();
  absl::MutexLock lock(&mutex_);
  if (stopping_) {
    close(raw->downstream);
    close(raw->upstream);
    delete raw;
    return;
  }
  relays_.insert(raw);
  // Edge-triggered: every wake-up pumps both directions until the kernel says EAGAIN.
  epoll_event event{};
  event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  event.data.ptr = raw;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, raw->downstream, &event) != 0 ||
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, raw->upstream, &event) != 0) {
    Log(LogLevel::kError, raw->description,
        " refused reason=", ErrnoStatus(errno, "epoll_ctl").ToString());
    relays_.erase(raw);
    close(raw->upstream);
    CloseWithReset(raw->downstream);
    delete raw;
  }
}

bool PassthroughHandler::Pump(Relay& relay, std::string* close_reason) {
  if (relay.connecting) {
    int error = 0;
    socklen_t length = sizeof(error);
    if (getsockopt(relay.upstream, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
      *close_reason = absl::StrCat("connect failed: ", std::strerror(error));
      return false;
    }
    sockaddr_storage peer;
    socklen_t peer_length = sizeof(peer);
    if (getpeername(relay.upstream, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) {
      return true;  // still connecting
    }
    relay.connecting = false;
  }
  for (Relay::Direction* direction : {&relay.to_upstream, &relay.to_downstream}) {
    bool progress = true;
    while (progress) {
      progress = false;
      if (direction->end > direction->begin) {
        ssize_t sent = send(direction->to, direction->buffer.get() + direction->begin,
                            direction->end - direction->begin, MSG_NOSIGNAL);
        if (sent > 0) {
          direction->begin += sent;
          direction->bytes += sent;
          progress = true;
        } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
          *close_reason = absl::StrCat("send: ", std::strerror(errno));
          return false;
        }
      }
      if (direction->begin == direction->end) direction->begin = direction->end = 0;
      if (!direction->read_closed && direction->end < options_.buffer_bytes) {
        ssize_t received = recv(direction->from, direction->buffer.get() + direction->end,
                                options_.buffer_bytes - direction->end, 0);
        if (received > 0) {
          direction->end += received;
          progress = true;
        } else if (received == 0) {
          direction->read_closed = true;
          progress = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          *close_reason = absl::StrCat("recv: ", std::strerror(errno));
          return false;
        }
      }
      if (direction->read_closed && direction->begin == direction->end && !direction->write_shut) {
        shutdown(direction->to, SHUT_WR);
        direction->write_shut = true;
      }
    }
  }
  if (relay.to_upstream.write_shut && relay.to_downstream.write_shut) {
    *close_reason = "done";
    return false;
  }
  return true;
}

void PassthroughHandler::Finish(Relay* relay, const std::string& reason, bool reset) {
  relay->finished = true;
  Log(reset ? LogLevel::kWarning : LogLevel::kInfo, relay->description, " closed reason=", reason,
      " bytes_out=", relay->to_upstream.bytes, " bytes_in=", relay->to_downstream.bytes);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, relay->downstream, nullptr);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, relay->upstream, nullptr);
  if (reset) {
    CloseWithReset(relay->downstream);
    CloseWithReset(relay->upstream);
  } else {
    close(relay->downstream);
    close(relay->upstream);
  }
}

void PassthroughHandler::ExpireConnects() {
  const absl::Time now = absl::Now();
  std::vector<Relay*> expired;
  {
    absl::MutexLock lock(&mutex_);
    for (Relay* relay : relays_) {
      if (relay->connecting && now > relay->connect_deadline) expired.push_back(relay);
    }
    for (Relay* relay : expired) relays_.erase(relay);
  }
  for (Relay* relay : expired) {
    Finish(relay, "connect timeout", true);
    delete relay;
  }
}

void PassthroughHandler::Loop() {
  epoll_event events[64];
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      if (stopping_) return;
    }
    int count = epoll_wait(epoll_fd_, events, 64, 500);
    if (count < 0) {
      if (errno == EINTR) continue;
      Log(LogLevel::kError, "relay loop stopped: ", ErrnoStatus(errno, "epoll_wait").ToString());
      return;
    }
    // A relay finished early in this batch may still have events later in it: delete after.
    // The lock keeps a relay being registered by another thread out of reach until both of its
    // sockets are in the epoll set.
    std::vector<Relay*> finished;
    absl::ReleasableMutexLock lock(&mutex_);
    for (int i = 0; i < count; ++i) {
      auto* relay = static_cast<Relay*>(events[i].data.ptr);
      if (relay == nullptr) {
        uint64_t value;
        (void)!read(wake_fd_, &value, sizeof(value));
        continue;
      }
      if (relay->finished) continue;
      std::string reason;
      if (!Pump(*relay, &reason)) {
        Finish(relay, reason, reason != "done");
        finished.push_back(relay);
      }
    }
    for (Relay* relay : finished) relays_.erase(relay);
    lock.Release();
    for (Relay* relay : finished) delete relay;
    ExpireConnects();
  }
}

}  // namespace nodeward::capture
