// Real-kernel tests of capture: two pod network namespaces joined by a veth pair, a cgroup
// holding only the "pod" processes, and the real nodeward-agent binary. Needs root. Every
// object is named with the test's pid and removed in TearDown, whether the test passed or not;
// TearDown also checks that no BPF link of the test remains.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kPodAddressA[] = "10.78.0.1";
constexpr char kPodAddressB[] = "10.78.0.2";
constexpr char kPodAddress6A[] = "fd78::1";
constexpr char kPodAddress6B[] = "fd78::2";

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs argv to completion (killed after `timeout`), stdout and stderr captured together.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(15)) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  CommandResult result;
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[4096];
  while (true) {
    int remaining = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd entry{pipe_fds[0], POLLIN, 0};
    if (remaining <= 0 || poll(&entry, 1, remaining) <= 0) {
      kill(pid, SIGKILL);
      result.output += "\n<timed out>";
      break;
    }
    ssize_t n = read(pipe_fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    result.output.append(buffer, n);
  }
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

uint64_t InodeOf(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 ? info.st_ino : 0;
}

class CaptureIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces, cgroups, BPF";
    const std::string id = absl::StrCat(getpid());
    netns_a_ = absl::StrCat("nwt", id, "a");
    netns_b_ = absl::StrCat("nwt", id, "b");
    cgroup_ = absl::StrCat("/sys/fs/cgroup/unified/nodeward-test-", id);
    pin_path_ = absl::StrCat("/sys/fs/bpf/nodeward-test-", id);
    work_dir_ = absl::StrCat("/tmp/nodeward-test-", id);
    socket_ = absl::StrCat(work_dir_, "/enroll.sock");

    ASSERT_EQ(mkdir(work_dir_.c_str(), 0700), 0) << std::strerror(errno);
    ASSERT_EQ(mkdir(cgroup_.c_str(), 0755), 0) << std::strerror(errno);
    cgroup_id_ = InodeOf(cgroup_);
    for (const std::string& ns : {netns_a_, netns_b_}) {
      Must({"ip", "netns", "add", ns});
      Must({"ip", "-n", ns, "link", "set", "lo", "up"});
      netns_inodes_.push_back(InodeOf(NetnsPath(ns)));
    }
    Must({"ip", "link", "add", netns_a_, "netns", netns_a_, "type", "veth", "peer", "name",
          netns_b_, "netns", netns_b_});
    for (auto [ns, v4, v6] : {std::tuple{netns_a_, kPodAddressA, kPodAddress6A},
                              std::tuple{netns_b_, kPodAddressB, kPodAddress6B}}) {
      Must({"ip", "-n", ns, "addr", "add", absl::StrCat(v4, "/24"), "dev", ns});
      Must({"ip", "-n", ns, "addr", "add", absl::StrCat(v6, "/64"), "dev", ns, "nodad"});
      Must({"ip", "-n", ns, "link", "set", ns, "up"});
    }
  }

  void TearDown() override {
    if (HasFailure() && Exists(AgentLog())) {
      std::cerr << "---- agent log ----\n" << ReadFile(AgentLog()) << "-------------------\n";
    }
    StopAgent();
    for (pid_t pid : servers_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    // The agent may have been stopped without cleanup (fail-closed tests): unpinning is what
    // detaches its links once no process holds them.
    if (!pin_path_.empty() && Exists(pin_path_)) RunCommand({"rm", "-rf", pin_path_});
    if (cgroup_id_ != 0) ExpectNoLinksLeft();
    if (!cgroup_.empty() && Exists(cgroup_)) {
      // Only our helpers can be in it; they have exited or were killed above.
      EXPECT_EQ(rmdir(cgroup_.c_str()), 0) << std::strerror(errno);
    }
    for (const std::string& ns : {netns_a_, netns_b_}) {
      if (!ns.empty() && Exists(NetnsPath(ns))) RunCommand({"ip", "netns", "del", ns});
    }
    if (!work_dir_.empty()) RunCommand({"rm", "-rf", work_dir_});
    if (!netns_a_.empty()) {
      EXPECT_FALSE(Exists(NetnsPath(netns_a_)));
      EXPECT_FALSE(Exists(NetnsPath(netns_b_)));
      EXPECT_FALSE(Exists(cgroup_));
      EXPECT_FALSE(Exists(pin_path_));
      EXPECT_NE(RunCommand({"ip", "link", "show", netns_a_}).exit_code, 0) << "veth left behind";
    }
  }

  void ExpectNoLinksLeft() {
    uint32_t id = 0;
    while (bpf_link_get_next_id(id, &id) == 0) {
      int fd = bpf_link_get_fd_by_id(id);
      if (fd < 0) continue;
      bpf_link_info info{};
      uint32_t length = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &length) == 0) {
        if (info.type == BPF_LINK_TYPE_CGROUP) {
          EXPECT_NE(info.cgroup.cgroup_id, cgroup_id_) << "cgroup link " << id << " left";
        }
        if (info.type == BPF_LINK_TYPE_NETNS) {
          for (uint64_t inode : netns_inodes_) {
            EXPECT_NE(info.netns.netns_ino, inode) << "netns link " << id << " left";
          }
        }
      }
      close(fd);
    }
  }

  static std::string NetnsPath(const std::string& name) {
    return absl::StrCat("/var/run/netns/", name);
  }
  std::string AgentLog() const { return absl::StrCat(work_dir_, "/agent.log"); }
  // The agent's log once it holds `text` (an access-log line is written when the connection
  // has ended on both sides, which may be just after the client saw its reply).
  std::string LogWith(const std::string& text) const {
    for (int i = 0; i < 300 && ReadFile(AgentLog()).find(text) == std::string::npos; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return ReadFile(AgentLog());
  }

  void Must(const std::vector<std::string>& argv) {
    CommandResult result = RunCommand(argv);
    ASSERT_EQ(result.exit_code, 0) << absl::StrJoin(argv, " ") << ": " << result.output;
  }

  void StartAgent(bool cleanup_on_exit) {
    ASSERT_EQ(agent_pid_, -1);
    agent_pid_ = fork();
    if (agent_pid_ == 0) {
      int log = open(AgentLog().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      dup2(log, 1);
      dup2(log, 2);
      std::vector<std::string> argv = {
          NODEWARD_AGENT_BINARY, absl::StrCat("--attach-cgroup=", cgroup_),
          absl::StrCat("--bpf-pin-path=", pin_path_), absl::StrCat("--enroll-socket=", socket_),
          absl::StrCat("--state-dir=", work_dir_, "/pods"), "--log-level=debug",
          "--mode=passthrough",
          // The test's agent shares the machine's network namespace: no loopback ports.
          "--admin-port=0", "--metrics-port=0", "--readiness-port=0",
          absl::StrCat("--cleanup-on-exit=", cleanup_on_exit ? "true" : "false")};
      std::vector<char*> args;
      for (std::string& arg : argv) args.push_back(arg.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (Exists(socket_) && Enroller({"list"}).exit_code == 0) return;
      int status = 0;
      if (waitpid(agent_pid_, &status, WNOHANG) == agent_pid_) {
        agent_pid_ = -1;
        FAIL() << "agent exited at start:\n" << ReadFile(AgentLog());
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "agent not ready:\n" << ReadFile(AgentLog());
  }

  // SIGTERM, as a node does; returns the agent's exit code.
  int StopAgent() {
    if (agent_pid_ <= 0) return 0;
    kill(agent_pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 100; ++i) {
      if (waitpid(agent_pid_, &status, WNOHANG) == agent_pid_) {
        agent_pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    kill(agent_pid_, SIGKILL);
    waitpid(agent_pid_, &status, 0);
    agent_pid_ = -1;
    ADD_FAILURE() << "agent did not stop on SIGTERM";
    return -1;
  }

  CommandResult Enroller(std::vector<std::string> args) {
    args.insert(args.begin(), {NODEWARD_ENROLL_BINARY, absl::StrCat("--socket=", socket_)});
    return RunCommand(args);
  }

  void EnrollPodA() {
    CommandResult result =
        Enroller({"enroll", absl::StrCat("--netns=", NetnsPath(netns_a_)), "--uid=pod-a-uid",
                  "--namespace=shop", "--name=pod-a", "--service_account=cart",
                  absl::StrCat("--ips=", kPodAddressA, ",", kPodAddress6A), "--labels=app=cart"});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    ASSERT_THAT(result.output, HasSubstr("shop/pod-a"));
  }

  // A server application in the pod, inside the test cgroup like the pod's other processes.
  void StartServer(const std::string& netns, int port) {
    int pipe_fds[2];
    ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
      dup2(pipe_fds[1], 1);
      std::string netns_flag = absl::StrCat("--netns=", NetnsPath(netns));
      std::string cgroup_flag = absl::StrCat("--cgroup=", cgroup_);
      std::string port_flag = absl::StrCat("--port=", port);
      execl(NODEWARD_POD_HELPER, NODEWARD_POD_HELPER, netns_flag.c_str(), cgroup_flag.c_str(),
            port_flag.c_str(), "serve", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(pipe_fds[1]);
    servers_.push_back(pid);
    pollfd entry{pipe_fds[0], POLLIN, 0};
    char buffer[64] = {};
    bool ready = poll(&entry, 1, 5000) == 1 && read(pipe_fds[0], buffer, sizeof(buffer) - 1) > 0;
    close(pipe_fds[0]);
    ASSERT_TRUE(ready && absl::StartsWith(buffer, "ready")) << buffer;
  }

  // An application in `netns` (and in the test cgroup) dialling `to`.
  CommandResult Client(const std::string& netns, const std::string& to, const std::string& data,
                       int mark = 0) {
    std::vector<std::string> argv = {NODEWARD_POD_HELPER,
                                     absl::StrCat("--netns=", NetnsPath(netns)),
                                     absl::StrCat("--cgroup=", cgroup_),
                                     absl::StrCat("--to=", to),
                                     absl::StrCat("--send=", data),
                                     "--timeout_ms=3000"};
    if (mark != 0) argv.push_back(absl::StrCat("--mark=", mark));
    argv.push_back("connect");
    return RunCommand(argv);
  }

  std::string netns_a_;
  std::string netns_b_;
  std::string cgroup_;
  std::string pin_path_;
  std::string work_dir_;
  std::string socket_;
  uint64_t cgroup_id_ = 0;
  std::vector<uint64_t> netns_inodes_;
  pid_t agent_pid_ = -1;
  std::vector<pid_t> servers_;
};

TEST_F(CaptureIntegrationTest, EnrolledPodOutboundReachesAgentWithOriginalDestination) {
  StartAgent(/*cleanup_on_exit=*/true);
  EnrollPodA();
  StartServer(netns_b_, 8080);
  CommandResult result = Client(netns_a_, "10.78.0.2:8080", "ping");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Redirected to the in-pod listener, while the application still sees its peer.
  EXPECT_THAT(result.output, StartsWith("local=127.0.0.1:"));
  EXPECT_THAT(result.output, HasSubstr("peer=10.78.0.2:8080"));
  // The agent dialled the original destination from inside pod A.
  EXPECT_THAT(result.output, HasSubstr("from=10.78.0.1:"));
  EXPECT_THAT(result.output, HasSubstr("to=10.78.0.2:8080 got=ping"));
  EXPECT_THAT(LogWith(R"("direction":"outbound")"),
              HasSubstr(R"("direction":"outbound","source_workload":"shop/pod-a")"));
  EXPECT_THAT(ReadFile(AgentLog()), HasSubstr(R"("source_address":"127.0.0.1:)"));
  EXPECT_THAT(ReadFile(AgentLog()), HasSubstr("destination=10.78.0.2:8080"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, EnrolledPodOutboundIpv6) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_b_, 8080);
  CommandResult result = Client(netns_a_, "[fd78::2]:8080", "ping6");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, StartsWith("local=[::1]:"));
  EXPECT_THAT(result.output, HasSubstr("peer=[fd78::2]:8080"));
  EXPECT_THAT(result.output, HasSubstr("from=[fd78::1]:"));
  EXPECT_THAT(result.output, HasSubstr("got=ping6"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, NonEnrolledPodIsUntouched) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_a_, 9090);
  // Pod B is in the capture cgroup but not enrolled: its connect leaves directly.
  CommandResult result = Client(netns_b_, "10.78.0.1:9090", "hi");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, StartsWith("local=10.78.0.2:"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, InPodLoopbackIsUntouched) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_a_, 7070);
  CommandResult result = Client(netns_a_, "127.0.0.1:7070", "local");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Same source port on both ends: the connection did not go through the agent.
  std::string local_port = std::string(absl::StripPrefix(
      std::string(result.output.substr(0, result.output.find(' '))), "local=127.0.0.1:"));
  EXPECT_THAT(result.output, HasSubstr(absl::StrCat("from=127.0.0.1:", local_port, " ")));
  EXPECT_THAT(result.output, HasSubstr("to=127.0.0.1:7070 got=local"));
  EXPECT_THAT(ReadFile(AgentLog()), Not(HasSubstr("destination=127.0.0.1:7070")));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, AgentMarkedSocketsAreUntouched) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_b_, 8080);
  CommandResult result = Client(netns_a_, "10.78.0.2:8080", "marked", /*mark=*/0x539);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, StartsWith("local=10.78.0.1:"));
  EXPECT_THAT(result.output, HasSubstr("got=marked"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, SecondAgentOnTheSameStateRefusesToStart) {
  StartAgent(true);
  CommandResult second =
      RunCommand({NODEWARD_AGENT_BINARY, absl::StrCat("--attach-cgroup=", cgroup_),
                  absl::StrCat("--bpf-pin-path=", pin_path_),
                  absl::StrCat("--enroll-socket=", work_dir_, "/other.sock"),
                  absl::StrCat("--state-dir=", work_dir_, "/pods")});
  EXPECT_EQ(second.exit_code, 1) << second.output;
  EXPECT_THAT(second.output, HasSubstr("another agent holds"));
  EXPECT_EQ(Enroller({"list"}).exit_code, 0) << "the first agent must keep serving";
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, AgentPortsAreDialledDirectly) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_b_, 15008);
  CommandResult result = Client(netns_a_, "10.78.0.2:15008", "tunnel");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output, StartsWith("local=10.78.0.1:"));
  EXPECT_THAT(result.output, HasSubstr("to=10.78.0.2:15008 got=tunnel"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, InboundOnAnyPortIsSteeredAndDelivered) {
  StartAgent(true);
  EnrollPodA();
  for (int port : {9090, 23456}) {
    StartServer(netns_a_, port);
    CommandResult result = Client(netns_b_, absl::StrCat("10.78.0.1:", port), "in");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    // Delivered by the agent inside the pod to the address and port the peer dialled (never
    // to loopback), from the peer's own address.
    EXPECT_THAT(result.output, HasSubstr("from=10.78.0.2:"));
    EXPECT_THAT(result.output, HasSubstr(absl::StrCat("to=10.78.0.1:", port, " got=in")));
    const std::string destination =
        absl::StrCat(R"("destination_address":"10.78.0.1:)", port, "\"");
    EXPECT_THAT(LogWith(destination), HasSubstr(destination));
    EXPECT_THAT(
        ReadFile(AgentLog()),
        HasSubstr(
            R"("direction":"inbound","source_workload":"","source_principal":"","source_address":"10.78.0.2:)"));
  }
  CommandResult v6 = Client(netns_b_, "[fd78::1]:9090", "in6");
  ASSERT_EQ(v6.exit_code, 0) << v6.output;
  EXPECT_THAT(v6.output, HasSubstr("from=[fd78::2]:"));
  EXPECT_THAT(v6.output, HasSubstr("to=[fd78::1]:9090 got=in6"));
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, UnenrollRestoresTheDirectPath) {
  StartAgent(true);
  EnrollPodA();
  StartServer(netns_a_, 9090);
  StartServer(netns_b_, 8080);
  ASSERT_THAT(Client(netns_a_, "10.78.0.2:8080", "x").output, StartsWith("local=127.0.0.1:"));

  CommandResult unenrolled = Enroller({"unenroll", "--uid=pod-a-uid"});
  ASSERT_EQ(unenrolled.exit_code, 0) << unenrolled.output;
  CommandResult outbound = Client(netns_a_, "10.78.0.2:8080", "direct");
  ASSERT_EQ(outbound.exit_code, 0) << outbound.output;
  EXPECT_THAT(outbound.output, StartsWith("local=10.78.0.1:"));
  EXPECT_THAT(outbound.output, HasSubstr("peer=10.78.0.2:8080"));
  CommandResult inbound = Client(netns_b_, "10.78.0.1:9090", "direct");
  ASSERT_EQ(inbound.exit_code, 0) << inbound.output;
  EXPECT_THAT(inbound.output, HasSubstr("from=10.78.0.2:"));
  EXPECT_THAT(inbound.output, HasSubstr("to=10.78.0.1:9090"));
  // Nothing of the pod is left in the kernel or on disk.
  EXPECT_FALSE(
      Exists(absl::StrCat(pin_path_, "/netns/")) &&
      !RunCommand({"sh", "-c", absl::StrCat("ls -A ", pin_path_, "/netns")}).output.empty());
  EXPECT_FALSE(Exists(absl::StrCat(work_dir_, "/pods/pod-a-uid.binpb")));
  EXPECT_EQ(Enroller({"list"}).output, "");
  EXPECT_EQ(StopAgent(), 0);
}

TEST_F(CaptureIntegrationTest, FailsClosedWhileAgentIsDownAndRecoversOnRestart) {
  StartAgent(/*cleanup_on_exit=*/false);
  EnrollPodA();
  StartServer(netns_a_, 9090);
  StartServer(netns_b_, 8080);
  ASSERT_EQ(Client(netns_a_, "10.78.0.2:8080", "up").exit_code, 0);
  ASSERT_EQ(StopAgent(), 0);

  // Pinned programs keep redirecting to 15001, where nothing listens: refused, not plaintext.
  CommandResult outbound = Client(netns_a_, "10.78.0.2:8080", "leak?");
  EXPECT_NE(outbound.exit_code, 0);
  EXPECT_THAT(outbound.output, HasSubstr("error=Connection refused"));
  CommandResult inbound = Client(netns_b_, "10.78.0.1:9090", "leak?");
  EXPECT_NE(inbound.exit_code, 0);
  EXPECT_THAT(inbound.output, HasSubstr("error=Connection refused"));

  StartAgent(/*cleanup_on_exit=*/true);
  EXPECT_THAT(Enroller({"list"}).output, HasSubstr("uid=pod-a-uid"));
  CommandResult outbound_again = Client(netns_a_, "10.78.0.2:8080", "back");
  ASSERT_EQ(outbound_again.exit_code, 0) << outbound_again.output;
  EXPECT_THAT(outbound_again.output, StartsWith("local=127.0.0.1:"));
  EXPECT_THAT(outbound_again.output, HasSubstr("got=back"));
  CommandResult inbound_again = Client(netns_b_, "10.78.0.1:9090", "back");
  ASSERT_EQ(inbound_again.exit_code, 0) << inbound_again.output;
  EXPECT_THAT(inbound_again.output, HasSubstr("to=10.78.0.1:9090 got=back"));
  EXPECT_EQ(StopAgent(), 0);
  EXPECT_FALSE(Exists(pin_path_)) << "--cleanup-on-exit left pinned state";
}

}  // namespace
}  // namespace nodeward
