#include "sds/peer_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "sds/log.h"

namespace nodeward::sds {
namespace {

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
}

// A listening Unix socket at `socket.path`, or why not.
absl::StatusOr<int> Listen(const PeerListener::Socket& socket) {
  const std::filesystem::path path(socket.path);
  sockaddr_un address{};
  if (socket.path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", socket.path));
  }
  std::error_code error;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("creating ", path.parent_path().string(), ": ", error.message()));
  }
  struct stat info;
  if (::lstat(socket.path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrCat(socket.path, " exists and is not a socket; refusing to replace it"));
    }
    ::unlink(socket.path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("socket for", socket.path);
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socket.path.c_str(), socket.path.size() + 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    absl::Status status = Errno("listening on", socket.path);
    ::close(fd);
    return status;
  }
  // Who may connect is the socket's mode: the agent's group for the node socket, any pod's
  // proxy for the workload socket (whose callers are told apart by their pods).
  if (::chmod(socket.path.c_str(), socket.mode) != 0) {
    absl::Status status = Errno("chmod", socket.path);
    ::close(fd);
    ::unlink(socket.path.c_str());
    return status;
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PeerListener>> PeerListener::Bind(std::vector<Socket> sockets) {
  std::vector<int> fds;
  auto undo = [&] {
    for (std::size_t i = 0; i < fds.size(); ++i) {
      ::close(fds[i]);
      ::unlink(sockets[i].path.c_str());
    }
  };
  for (const Socket& socket : sockets) {
    absl::StatusOr<int> fd = Listen(socket);
    if (!fd.ok()) {
      undo();
      return fd.status();
    }
    fds.push_back(*fd);
  }
  int wake = ::eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    absl::Status status = absl::ErrnoToStatus(errno, "eventfd");
    undo();
    return status;
  }
  return std::unique_ptr<PeerListener>(new PeerListener(std::move(sockets), std::move(fds), wake));
}

PeerListener::PeerListener(std::vector<Socket> sockets, std::vector<int> fds, int wake_fd)
    : sockets_(std::move(sockets)), fds_(std::move(fds)), wake_fd_(wake_fd) {}

PeerListener::~PeerListener() {
  Stop();
  for (std::size_t i = 0; i < fds_.size(); ++i) {
    ::close(fds_[i]);
    ::unlink(sockets_[i].path.c_str());
  }
  ::close(wake_fd_);
}

void PeerListener::Start(Handoff handoff) {
  if (thread_.joinable()) return;
  handoff_ = std::move(handoff);
  thread_ = std::thread([this] { AcceptLoop(); });
}

void PeerListener::Stop() {
  if (!thread_.joinable()) return;
  std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

std::optional<AcceptedPeer> PeerListener::Lookup(absl::string_view grpc_peer) const {
  int fd = -1;
  if (!absl::ConsumePrefix(&grpc_peer, "fd:") || !absl::SimpleAtoi(grpc_peer, &fd)) {
    return std::nullopt;
  }
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(fd);
  if (it == peers_.end()) return std::nullopt;
  return it->second;
}

void PeerListener::AcceptLoop() {
  std::vector<pollfd> polled;
  for (int fd : fds_) polled.push_back({fd, POLLIN, 0});
  polled.push_back({wake_fd_, POLLIN, 0});
  while (true) {
    if (::poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      LogError("SDS: poll on the listening sockets: ", std::strerror(errno));
      return;
    }
    if (polled.back().revents != 0) return;
    for (std::size_t i = 0; i < fds_.size(); ++i) {
      if (polled[i].revents == 0) continue;
      while (true) {
        int fd = ::accept4(fds_[i], nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            // Out of descriptors or memory: the connection waits in the backlog, and the
            // socket stays readable, so pause rather than spin.
            LogWarning("SDS: accept on ", sockets_[i].path, ": ", std::strerror(errno));
            ::usleep(100 * 1000);
          }
          break;
        }
        ucred credentials{};
        socklen_t length = sizeof(credentials);
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
          LogWarning("SDS: SO_PEERCRED on ", sockets_[i].path, ": ", std::strerror(errno));
          ::close(fd);
          continue;
        }
        {
          absl::MutexLock lock(&mu_);
          peers_[fd] =
              AcceptedPeer{{credentials.pid, credentials.uid, credentials.gid}, sockets_[i].scope};
        }
        handoff_(fd);
      }
    }
  }
}

}  // namespace nodeward::sds
