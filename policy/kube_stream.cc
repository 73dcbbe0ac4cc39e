#include "policy/kube_stream.h"

#include <netdb.h>

namespace nodeward::policy::internal {
namespace {

bool IsIpv6Literal(absl::string_view host) { return host.find(':') != absl::string_view::npos; }

}  // namespace

std::string HostHeader(const KubeSourceOptions& options) {
  std::string host =
      IsIpv6Literal(options.host) ? absl::StrCat("[", options.host, "]") : options.host;
  return absl::StrCat(host, ":", options.port);
}

absl::StatusOr<std::unique_ptr<Socket>> Connect(const KubeSourceOptions& options,
                                                const std::atomic<bool>& stopping) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  std::string port = absl::StrCat(options.port);
  if (int error = getaddrinfo(options.host.c_str(), port.c_str(), &hints, &addresses); error != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolving ", options.host, ": ", gai_strerror(error)));
  }
  absl::Status last = absl::UnavailableError(absl::StrCat("no address for ", options.host));
  for (addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    int fd = socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    address->ai_protocol);
    if (fd < 0) {
      last = absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
      continue;
    }
    auto connection = std::make_unique<Socket>(fd, stopping);
    if (connect(fd, address->ai_addr, address->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = absl::UnavailableError(
          absl::StrCat("connect to ", HostHeader(options), ": ", std::strerror(errno)));
      continue;
    }
    if (absl::Status status = connection->Wait(POLLOUT, options.io_timeout); !status.ok()) {
      last = status;
      continue;
    }
    int error = 0;
    socklen_t length = sizeof(error);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) {
      last = absl::UnavailableError(
          absl::StrCat("connect to ", HostHeader(options), ": ", std::strerror(error)));
      continue;
    }
    freeaddrinfo(addresses);
    return connection;
  }
  freeaddrinfo(addresses);
  return last;
}

}  // namespace nodeward::policy::internal
