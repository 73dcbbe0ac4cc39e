// nodeward_pod_helper: plays a pod's application in integration tests. It joins a cgroup and
// a network namespace first (as a pod's processes are), then either
//   connect --to=IP:PORT --send=TEXT: prints "local=<addr> peer=<addr> reply=<text>", or
//                                     "error=<reason>" and exits 1;
//   serve --port=N: answers every connection, after reading it to the end, with
//                   "from=<peer> to=<local> got=<text>"; prints "ready" once listening.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/net_address.h"

ABSL_FLAG(std::string, netns, "", "network namespace to enter");
ABSL_FLAG(std::string, cgroup, "", "cgroup-v2 directory to join before creating sockets");
ABSL_FLAG(std::string, to, "", "connect: destination ip:port");
ABSL_FLAG(std::string, send, "", "connect: bytes to send before half-closing");
ABSL_FLAG(int, port, 0, "serve: port to listen on (all addresses, IPv4 and IPv6)");
ABSL_FLAG(int, mark, 0, "connect: SO_MARK of the socket");
ABSL_FLAG(int, timeout_ms, 3000, "connect: give up after this long");

namespace {

using ::nodeward::SocketAddress;


std::string Describe(absl::StatusOr<SocketAddress> address) {
  return address.ok() ? address->ToString() : "?";
}

bool WaitFor(int fd, short events, int timeout_ms) {
  pollfd entry{fd, events, 0};
  return poll(&entry, 1, timeout_ms) == 1;
}

std::string ReadToEnd(int fd, int timeout_ms) {
  std::string data;
  char buffer[4096];
  while (WaitFor(fd, POLLIN, timeout_ms)) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    data.append(buffer, n);
  }
  return data;
}

int Connect() {
  absl::StatusOr<SocketAddress> target = SocketAddress::Parse(absl::GetFlag(FLAGS_to));
  if (!target.ok()) {
    std::printf("error=%s\n", target.status().ToString().c_str());
    return 2;
  }
  int fd = socket(target->ip.family, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (int mark = absl::GetFlag(FLAGS_mark); mark != 0) {
    setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
  }
  sockaddr_storage storage;
  socklen_t length = target->ToSockaddr(&storage);
  const int timeout = absl::GetFlag(FLAGS_timeout_ms);
  if (connect(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    if (errno != EINPROGRESS) {
      std::printf("error=%s\n", std::strerror(errno));
      return 1;
    }
    if (!WaitFor(fd, POLLOUT, timeout)) {
      std::printf("error=connect timeout\n");
      return 1;
    }
    int error = 0;
    socklen_t error_length = sizeof(error);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_length);
    if (error != 0) {
      std::printf("error=%s\n", std::strerror(error));
      return 1;
    }
  }
  std::string local = Describe(SocketAddress::LocalOf(fd));
  std::string peer = Describe(SocketAddress::PeerOf(fd));
  const std::string payload = absl::GetFlag(FLAGS_send);
  size_t sent = 0;
  while (sent < payload.size() && WaitFor(fd, POLLOUT, timeout)) {
    ssize_t n = send(fd, payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += n;
  }
  shutdown(fd, SHUT_WR);
  std::string reply = ReadToEnd(fd, timeout);
  close(fd);
  std::printf("local=%s peer=%s reply=%s\n", local.c_str(), peer.c_str(), reply.c_str());
  return reply.empty() ? 1 : 0;
}

int Serve() {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  int zero = 0;
  int one = 1;
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_addr = in6addr_any;
  address.sin6_port = htons(absl::GetFlag(FLAGS_port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, 64) != 0) {
    std::printf("error=%s\n", std::strerror(errno));
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  while (true) {
    int connection = accept(fd, nullptr, nullptr);
    if (connection < 0) continue;
    std::thread([connection] {
      std::string data = ReadToEnd(connection, 5000);
      auto unmapped = [](absl::StatusOr<SocketAddress> a) {
        if (a.ok()) a->ip = a->ip.Unmapped();
        return Describe(a);
      };
      std::string reply =
          absl::StrCat("from=", unmapped(SocketAddress::PeerOf(connection)),
                       " to=", unmapped(SocketAddress::LocalOf(connection)), " got=", data);
      send(connection, reply.data(), reply.size(), MSG_NOSIGNAL);
      close(connection);
    }).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) {
    std::fprintf(stderr, "usage: nodeward_pod_helper --netns=PATH [--cgroup=DIR] connect|serve\n");
    return 2;
  }
  // The cgroup first: a socket belongs to the cgroup its creator was in when creating it.
  if (std::string cgroup = absl::GetFlag(FLAGS_cgroup); !cgroup.empty()) {
    std::string procs = absl::StrCat(cgroup, "/cgroup.procs");
    int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) {
      std::printf("error=join cgroup %s: %s\n", cgroup.c_str(), std::strerror(errno));
      return 2;
    }
    close(fd);
  }
  if (std::string netns = absl::GetFlag(FLAGS_netns); !netns.empty()) {
    int fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      std::printf("error=enter netns %s: %s\n", netns.c_str(), std::strerror(errno));
      return 2;
    }
    close(fd);
  }
  const std::string command = positional[1];
  if (command == "connect") return Connect();
  if (command == "serve") return Serve();
  std::fprintf(stderr, "unknown command %s\n", command.c_str());
  return 2;
}
