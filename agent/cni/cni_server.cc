#include "agent/cni/cni_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "agent/cni/agent_client.h"

namespace nodeward::cni {
namespace {


void Answer(int fd, const v1::Response& response) {
  std::string wire;
  response.SerializeToString(&wire);
  if (send(fd, wire.data(), wire.size(), MSG_NOSIGNAL) < 0) {
    Log(LogLevel::kWarning, "cni: the plugin left before its answer: ", std::strerror(errno));
  }
}

v1::Response Refusal(v1::Outcome outcome, std::string reason) {
  v1::Response response;
  response.set_outcome(outcome);
  response.set_reason(std::move(reason));
  return response;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CniServer>> CniServer::Start(const std::string& socket_path,
                                                            CniHandler* handler) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CNI socket path \"", socket_path, "\" is empty or too long"));
  }
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "CNI socket");
  unlink(socket_path.c_str());  // a stale socket of a previous run
  // Only root may ask for captures: the socket is created owner-only.
  const mode_t previous = umask(0077);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  umask(previous);
  if (bound != 0 || listen(fd, kMaxCalls) != 0) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(error, absl::StrCat("serve CNI socket ", socket_path));
  }
  return std::unique_ptr<CniServer>(new CniServer(socket_path, fd, handler));
}

CniServer::CniServer(std::string socket_path, int listen_fd, CniHandler* handler)
    : socket_path_(std::move(socket_path)), listen_fd_(listen_fd), handler_(handler) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

CniServer::~CniServer() {
  stopping_.store(true);
  acceptor_.join();
  absl::MutexLock lock(&mutex_);
  mutex_.Await(absl::Condition(
      +[](int* calls) { return *calls == 0; }, &calls_));
  close(listen_fd_);
  unlink(socket_path_.c_str());
}

void CniServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p = {listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ucred peer{};
    socklen_t length = sizeof(peer);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.uid != 0) {
      Log(LogLevel::kWarning, "cni: refused a caller with uid ", peer.uid, " pid ", peer.pid);
      close(fd);
      continue;
    }
    {
      absl::MutexLock lock(&mutex_);
      if (calls_ >= kMaxCalls) {
        Answer(fd, Refusal(v1::UNDECIDED,
                           absl::StrCat("the agent is already serving ", kMaxCalls, " CNI calls")));
        close(fd);
        continue;
      }
      ++calls_;
    }
    std::thread([this, fd] {
      Serve(fd);
      close(fd);
      absl::MutexLock lock(&mutex_);
      --calls_;
    }).detach();
  }
}

void CniServer::Serve(int fd) {
  std::string buffer(kMaxMessage, '\0');
  pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 5000) <= 0) return;
  const ssize_t received = recv(fd, buffer.data(), buffer.size(), MSG_TRUNC);
  if (received <= 0) return;
  if (static_cast<std::size_t>(received) > buffer.size()) {
    Answer(fd, Refusal(v1::FAILED, "request over 64 KiB"));
    return;
  }
  v1::Request request;
  if (!request.ParseFromArray(buffer.data(), static_cast<int>(received))) {
    Answer(fd, Refusal(v1::FAILED, "request does not parse"));
    return;
  }
  const absl::Time start = absl::Now();
  v1::Response response;
  switch (request.call_case()) {
    case v1::Request::kAdd: {
      const uint32_t timeout_ms =
          request.add().timeout_ms() == 0 ? 10000 : request.add().timeout_ms();
      // Leaves the plugin time to read the answer before its own deadline.
      const absl::Duration budget = std::max(
          absl::Milliseconds(timeout_ms) - absl::Milliseconds(250), absl::Milliseconds(100));
      response = handler_->Add(request.add(), start + budget);
      break;
    }
    case v1::Request::kDel:
      response = handler_->Del(request.del());
      break;
    case v1::Request::kCheck:
      response = handler_->Check(request.check());
      break;
    default:
      response = Refusal(v1::FAILED, "request names no call");
  }
  response.set_took_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(absl::Now() - start)));
  Answer(fd, response);
}

}  // namespace nodeward::cni
