#include "agent/cni/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace nodeward::cni {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

// Waits for `events` on `fd` until `deadline`.
absl::Status Wait(int fd, short events, absl::Time deadline, absl::string_view what) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("the agent did not ", what, " in time"));
    }
    pollfd p = {fd, events, 0};
    const int ready =
        poll(&p, 1, static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    if (ready > 0) return absl::OkStatus();
    if (ready < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("poll: ", std::strerror(errno)));
    }
  }
}

}  // namespace

absl::StatusOr<v1::Response> CallAgent(const std::string& socket_path, const v1::Request& request,
                                       absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket_path, " is too long"));
  }
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  Fd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      return absl::UnavailableError(
          absl::StrCat("no agent at ", socket_path, ": ", std::strerror(errno)));
    }
    if (absl::Status status = Wait(fd.get(), POLLOUT, deadline, "accept the connection");
        !status.ok()) {
      return status;
    }
  }
  std::string wire;
  if (!request.SerializeToString(&wire) || wire.size() > kMaxMessage) {
    return absl::InvalidArgumentError("request does not encode within 64 KiB");
  }
  while (send(fd.get(), wire.data(), wire.size(), MSG_NOSIGNAL) < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("sending to the agent at ", socket_path, ": ", std::strerror(errno)));
    }
    if (absl::Status status = Wait(fd.get(), POLLOUT, deadline, "take the request"); !status.ok()) {
      return status;
    }
  }
  std::string buffer(kMaxMessage, '\0');
  while (true) {
    if (absl::Status status = Wait(fd.get(), POLLIN, deadline, "answer"); !status.ok()) {
      return status;
    }
    const ssize_t received = recv(fd.get(), buffer.data(), buffer.size(), MSG_TRUNC);
    if (received < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (received < 0) {
      return absl::UnavailableError(
          absl::StrCat("reading the agent's answer: ", std::strerror(errno)));
    }
    if (received == 0) {
      return absl::UnavailableError("the agent closed the connection without answering");
    }
    if (static_cast<std::size_t>(received) > buffer.size()) {
      return absl::DataLossError("the agent's answer is over 64 KiB");
    }
    v1::Response response;
    if (!response.ParseFromArray(buffer.data(), static_cast<int>(received))) {
      return absl::DataLossError("the agent's answer does not parse");
    }
    return response;
  }
}

}  // namespace nodeward::cni
