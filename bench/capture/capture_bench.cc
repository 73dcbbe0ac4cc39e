// capture_bench: connections per second (connect + accept + close) from a pod netns through
// the capture redirect, against the same connections with no BPF attached, in one run. Each
// round measures, in order:
//   1. no BPF: the client dials 127.0.0.1:15001 directly;
//   2. programs attached, netns not enrolled: the cost of the hooks for opted-out pods;
//   3. enrolled: the client dials 10.99.0.1:8080 and is redirected to 127.0.0.1:15001;
//   4. as 3, with the server recovering each original destination as the agent does.
// Needs root; everything it creates is named with its pid and removed at exit.
//
//   capture_bench [--connections=20000] [--rounds=3]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "agent/capture/netns_executor.h"
#include "agent/capture/test_netns.h"
#include "bpf/capture_loader.h"
#include "bpf/nodeward_maps.h"

ABSL_FLAG(int, connections, 20000, "connections per round");
ABSL_FLAG(int, rounds, 3, "rounds per mode; the median is reported");

namespace nodeward {
namespace {

double Seconds() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec + now.tv_nsec / 1e9;
}

// Forks a client that joins `cgroup` and `netns_fd`, then opens `count` connections to
// `target` one after another. Returns the connections per second it saw, or -errno when a
// connect failed.
double RunClient(const std::string& cgroup, int netns_fd, const SocketAddress& target, int count) {
  int result_pipe[2];
  if (pipe(result_pipe) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(result_pipe[0]);
    double rate = -EPERM;
    std::string procs = absl::StrCat(cgroup, "/cgroup.procs");
    int procs_fd = open(procs.c_str(), O_WRONLY);
    if (procs_fd >= 0 && write(procs_fd, "0", 1) == 1 && setns(netns_fd, CLONE_NEWNET) == 0) {
      sockaddr_storage storage;
      socklen_t length = target.ToSockaddr(&storage);
      const double start = Seconds();
      int done = 0;
      for (; done < count; ++done) {
        int fd = socket(target.ip.family, SOCK_STREAM, 0);
        if (connect(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
          rate = -errno;
          close(fd);
          break;
        }
        // Wait for the server's close, so every connection is accepted (and its original
        // destination looked up) before the next one starts.
        char byte;
        (void)!recv(fd, &byte, 1, 0);
        linger reset{1, 0};  // no TIME_WAIT pile-up over many rounds
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
        close(fd);
      }
      if (done == count) rate = count / (Seconds() - start);
    }
    (void)!write(result_pipe[1], &rate, sizeof(rate));
    _exit(0);
  }
  close(result_pipe[1]);
  double rate = -1;
  if (read(result_pipe[0], &rate, sizeof(rate)) != sizeof(rate)) rate = -1;
  close(result_pipe[0]);
  waitpid(pid, nullptr, 0);
  return rate;
}

// Accepts and closes until stopped; with a loader, also recovers each original destination
// as the agent does, so the redirected figure includes that lookup.
class Acceptor {
 public:
  Acceptor(int listen_fd, bpf::CaptureLoader* loader) : listen_fd_(listen_fd), loader_(loader) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        // Polled rather than shut down: shutdown() would stop the listener for the next round.
        pollfd entry{listen_fd_, POLLIN, 0};
        if (poll(&entry, 1, 20) != 1) continue;
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        if (loader_ != nullptr && !loader_->TakeOriginalDestination(fd).ok()) lookup_failures_++;
        close(fd);
      }
    });
  }
  ~Acceptor() {
    stop_.store(true);
    thread_.join();
  }
  int lookup_failures() const { return lookup_failures_.load(); }

 private:
  const int listen_fd_;
  bpf::CaptureLoader* const loader_;
  std::atomic<bool> stop_{false};
  std::atomic<int> lookup_failures_{0};
  std::thread thread_;
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

int Main() {
  if (geteuid() != 0) {
    std::fprintf(stderr, "capture_bench needs root\n");
    return 1;
  }
  const int connections = absl::GetFlag(FLAGS_connections);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const std::string cgroup = absl::StrCat("/sys/fs/cgroup/unified/nodeward-bench-", getpid());
  const std::string pin_path = absl::StrCat("/sys/fs/bpf/nodeward-bench-", getpid());
  if (mkdir(cgroup.c_str(), 0755) != 0) {
    std::fprintf(stderr, "mkdir %s: %s\n", cgroup.c_str(), std::strerror(errno));
    return 1;
  }
  int exit_code = 0;
  {
    absl::StatusOr<std::unique_ptr<capture::TestNetns>> netns = capture::TestNetns::Create();
    capture::NetnsExecutor executor;
    absl::StatusOr<int> listener = netns.ok()
                                       ? executor.CreateSocket((*netns)->fd(), AF_INET, SOCK_STREAM)
                                       : absl::StatusOr<int>(netns.status());
    SocketAddress listener_address{IpAddress::V4(htonl(INADDR_LOOPBACK)), NW_PORT_OUTBOUND};
    sockaddr_storage storage;
    socklen_t length = listener_address.ToSockaddr(&storage);
    if (!listener.ok() || bind(*listener, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
        listen(*listener, 4096) != 0) {
      std::fprintf(stderr, "setting up the pod netns failed\n");
      rmdir(cgroup.c_str());
      return 1;
    }
    const SocketAddress remote = *SocketAddress::Parse("10.99.0.1:8080");
    std::vector<double> direct, attached_not_enrolled, redirected_no_lookup, redirected;
    int lookup_failures = 0;
    for (int round = 0; round < rounds && exit_code == 0; ++round) {
      {
        Acceptor acceptor(*listener, nullptr);
        direct.push_back(RunClient(cgroup, (*netns)->fd(), listener_address, connections));
      }
      absl::StatusOr<std::unique_ptr<bpf::CaptureLoader>> loader =
          bpf::CaptureLoader::Open({cgroup, pin_path});
      if (!loader.ok()) {
        std::fprintf(stderr, "%s\n", loader.status().ToString().c_str());
        exit_code = 1;
        break;
      }
      {
        Acceptor acceptor(*listener, nullptr);
        attached_not_enrolled.push_back(
            RunClient(cgroup, (*netns)->fd(), listener_address, connections));
      }
      absl::StatusOr<uint64_t> cookie = capture::NetnsCookieOfSocket(*listener);
      if (!cookie.ok() || !(*loader)->EnrollNetns(*cookie, 1).ok()) exit_code = 1;
      {
        Acceptor acceptor(*listener, nullptr);
        redirected_no_lookup.push_back(RunClient(cgroup, (*netns)->fd(), remote, connections));
      }
      {
        Acceptor acceptor(*listener, loader->get());
        redirected.push_back(RunClient(cgroup, (*netns)->fd(), remote, connections));
        lookup_failures += acceptor.lookup_failures();
      }
      if (!(*loader)->DetachAll().ok()) exit_code = 1;
    }
    close(*listener);
    if (exit_code == 0) {
      const char* names[] = {"direct", "attached", "redirected without lookup", "redirected"};
      int index = 0;
      for (const auto* series :
           {&direct, &attached_not_enrolled, &redirected_no_lookup, &redirected}) {
        for (double rate : *series) {
          if (rate <= 0) {
            std::fprintf(stderr, "%s round failed: %s\n", names[index],
                         std::strerror(static_cast<int>(-rate)));
            exit_code = 1;
          }
        }
        ++index;
      }
    }
    if (exit_code == 0) {
      const double base = Median(direct);
      std::printf("connections per round: %d, rounds: %d (median shown)\n", connections, rounds);
      std::printf("%-48s %10.0f conn/s\n", "no BPF, direct to 127.0.0.1:15001", base);
      std::printf("%-48s %10.0f conn/s  ratio %.3f\n", "hooks attached, pod not enrolled",
                  Median(attached_not_enrolled), Median(attached_not_enrolled) / base);
      std::printf("%-48s %10.0f conn/s  ratio %.3f\n", "redirected 10.99.0.1:8080 -> 15001",
                  Median(redirected_no_lookup), Median(redirected_no_lookup) / base);
      std::printf("%-48s %10.0f conn/s  ratio %.3f\n",
                  "redirected 10.99.0.1:8080 -> 15001 + orig dst", Median(redirected),
                  Median(redirected) / base);
      if (lookup_failures != 0) {
        std::printf("original destination lookups failed: %d\n", lookup_failures);
        exit_code = 1;
      }
    } else {
      std::fprintf(stderr, "a round failed\n");
    }
  }
  if (rmdir(cgroup.c_str()) != 0) {
    std::fprintf(stderr, "rmdir %s: %s\n", cgroup.c_str(), std::strerror(errno));
    exit_code = 1;
  }
  return exit_code;
}

}  // namespace
}  // namespace nodeward

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return nodeward::Main();
}
