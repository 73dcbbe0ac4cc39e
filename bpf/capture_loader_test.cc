// Needs root (BPF, cgroups, bpffs): skipped otherwise. Every object the test creates is named
// with its pid and removed in TearDown, whatever the outcome.
#include "bpf/capture_loader.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "bpf/nodeward_maps.h"
#include "gtest/gtest.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

namespace nodeward::bpf {
namespace {

constexpr uint32_t kSkPass = 1;
constexpr uint32_t kSkDrop = 0;

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int ListenOnLoopback(int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_storage storage{};
  socklen_t length;
  if (family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    length = sizeof(*v4);
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_loopback;
    length = sizeof(*v6);
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, 8) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

uint64_t SocketCookie(int fd) {
  uint64_t cookie = 0;
  socklen_t length = sizeof(cookie);
  getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &length);
  return cookie;
}

struct LookupResult {
  uint32_t verdict = 0;
  uint64_t selected_socket_cookie = 0;
};

class CaptureLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for BPF, cgroups and bpffs";
    cgroup_path_ = absl::StrCat("/sys/fs/cgroup/unified/nodeward-unit-", getpid());
    pin_path_ = absl::StrCat("/sys/fs/bpf/nodeward-unit-", getpid());
    ASSERT_EQ(mkdir(cgroup_path_.c_str(), 0755), 0) << std::strerror(errno);
    cgroup_created_ = true;
    absl::StatusOr<std::unique_ptr<CaptureLoader>> loader = CaptureLoader::Open(Options());
    ASSERT_TRUE(loader.ok()) << loader.status();
    loader_ = std::move(*loader);
  }

  void TearDown() override {
    if (loader_ != nullptr) {
      EXPECT_TRUE(loader_->DetachAll().ok());
      loader_.reset();
    }
    if (cgroup_created_) {
      EXPECT_EQ(rmdir(cgroup_path_.c_str()), 0) << std::strerror(errno);
    }
    if (!pin_path_.empty()) {
      EXPECT_NE(access(pin_path_.c_str(), F_OK), 0) << "pin path left behind";
    }
  }

  CaptureLoaderOptions Options() const { return {cgroup_path_, pin_path_}; }

  LookupResult RunSkLookup(int family, const char* local_ip, uint32_t local_port) {
    bpf_sk_lookup context{};
    context.family = family;
    context.protocol = IPPROTO_TCP;
    context.local_port = local_port;
    context.remote_port = htons(40000);
    if (family == AF_INET) {
      inet_pton(AF_INET, local_ip, &context.local_ip4);
      inet_pton(AF_INET, "10.9.9.9", &context.remote_ip4);
    } else {
      inet_pton(AF_INET6, local_ip, context.local_ip6);
      inet_pton(AF_INET6, "fd09::9", context.remote_ip6);
    }
    bpf_sk_lookup out{};
    LIBBPF_OPTS(bpf_test_run_opts, options, .ctx_in = &context, .ctx_out = &out,
                .ctx_size_in = sizeof(context), .ctx_size_out = sizeof(out));
    int error = bpf_prog_test_run_opts(loader_->SkLookupProgramFd(), &options);
    EXPECT_EQ(error, 0) << std::strerror(errno);
    return {options.retval, out.cookie};
  }

  std::string cgroup_path_;
  std::string pin_path_;
  bool cgroup_created_ = false;
  std::unique_ptr<CaptureLoader> loader_;
};

TEST_F(CaptureLoaderTest, SkLookupSteersEveryPortOfAPodAddressToItsListener) {
  ScopedFd plaintext(ListenOnLoopback(AF_INET));
  ScopedFd tunnel(ListenOnLoopback(AF_INET));
  ASSERT_GE(plaintext.get(), 0);
  ASSERT_GE(tunnel.get(), 0);
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  ASSERT_TRUE(
      loader_->SetInboundListener(pod, ListenerSlot::kInboundPlaintext, plaintext.get()).ok());
  ASSERT_TRUE(loader_->SetInboundListener(pod, ListenerSlot::kTunnel, tunnel.get()).ok());

  for (uint32_t port : {80u, 8080u, 15006u, 65535u}) {
    LookupResult result = RunSkLookup(AF_INET, "10.1.2.3", port);
    EXPECT_EQ(result.verdict, kSkPass) << port;
    EXPECT_EQ(result.selected_socket_cookie, SocketCookie(plaintext.get())) << port;
  }
  LookupResult tunnel_result = RunSkLookup(AF_INET, "10.1.2.3", NW_PORT_TUNNEL);
  EXPECT_EQ(tunnel_result.verdict, kSkPass);
  EXPECT_EQ(tunnel_result.selected_socket_cookie, SocketCookie(tunnel.get()));
}

// In an enrolled pod's netns every non-loopback address is the pod's: one the agent has not
// registered (link-local, added a moment ago) is refused rather than left open.
TEST_F(CaptureLoaderTest, SkLookupLeavesLoopbackAloneAndRefusesUnknownAddresses) {
  ScopedFd plaintext(ListenOnLoopback(AF_INET));
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  ASSERT_TRUE(
      loader_->SetInboundListener(pod, ListenerSlot::kInboundPlaintext, plaintext.get()).ok());

  LookupResult loopback = RunSkLookup(AF_INET, "127.0.0.1", 8080);
  EXPECT_EQ(loopback.verdict, kSkPass);
  EXPECT_EQ(loopback.selected_socket_cookie, 0u);
  LookupResult loopback6 = RunSkLookup(AF_INET6, "::1", 8080);
  EXPECT_EQ(loopback6.verdict, kSkPass);
  LookupResult other = RunSkLookup(AF_INET, "10.1.2.4", 8080);
  EXPECT_EQ(other.verdict, kSkDrop);
  LookupResult link_local = RunSkLookup(AF_INET6, "fe80::1", 8080);
  EXPECT_EQ(link_local.verdict, kSkDrop);
}

// The agent's own delivery to the application passes, exactly that 4-tuple and only until it
// is forgotten; everything else to the address is still the agent's.
TEST_F(CaptureLoaderTest, SkLookupLetsAnAnnouncedDeliveryThrough) {
  ScopedFd plaintext(ListenOnLoopback(AF_INET));
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  ASSERT_TRUE(
      loader_->SetInboundListener(pod, ListenerSlot::kInboundPlaintext, plaintext.get()).ok());
  const SocketAddress application = *SocketAddress::Parse("10.1.2.3:8080");
  const SocketAddress agent_side = *SocketAddress::Parse("10.9.9.9:40000");
  ASSERT_TRUE(loader_->AnnounceDelivery(application, agent_side).ok());

  LookupResult delivered = RunSkLookup(AF_INET, "10.1.2.3", 8080);
  EXPECT_EQ(delivered.verdict, kSkPass);
  EXPECT_EQ(delivered.selected_socket_cookie, 0u) << "left to the application's listener";
  LookupResult other_port = RunSkLookup(AF_INET, "10.1.2.3", 8081);
  EXPECT_EQ(other_port.selected_socket_cookie, SocketCookie(plaintext.get()));

  ASSERT_TRUE(loader_->ForgetDelivery(application, agent_side).ok());
  EXPECT_TRUE(loader_->ForgetDelivery(application, agent_side).ok()) << "forgetting twice is fine";
  LookupResult after = RunSkLookup(AF_INET, "10.1.2.3", 8080);
  EXPECT_EQ(after.selected_socket_cookie, SocketCookie(plaintext.get()));

  EXPECT_FALSE(
      loader_->AnnounceDelivery(application, *SocketAddress::Parse("[fd09::9]:40000")).ok())
      << "families must agree";
}

TEST_F(CaptureLoaderTest, SkLookupRefusesEnrolledAddressWithoutListener) {
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  LookupResult result = RunSkLookup(AF_INET, "10.1.2.3", 8080);
  EXPECT_EQ(result.verdict, kSkDrop);
  absl::StatusOr<DataplaneSnapshot> snapshot = loader_->Snapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->counters["inbound_refused_no_listener"], 1u);
}

TEST_F(CaptureLoaderTest, SkLookupSteersIpv6) {
  ScopedFd plaintext(ListenOnLoopback(AF_INET6));
  ASSERT_GE(plaintext.get(), 0);
  IpAddress pod = *IpAddress::Parse("fd00:1::5");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 78).ok());
  ASSERT_TRUE(
      loader_->SetInboundListener(pod, ListenerSlot::kInboundPlaintext, plaintext.get()).ok());
  LookupResult result = RunSkLookup(AF_INET6, "fd00:1::5", 443);
  EXPECT_EQ(result.verdict, kSkPass);
  EXPECT_EQ(result.selected_socket_cookie, SocketCookie(plaintext.get()));
  LookupResult loopback = RunSkLookup(AF_INET6, "::1", 443);
  EXPECT_EQ(loopback.selected_socket_cookie, 0u);
}

TEST_F(CaptureLoaderTest, RemovingAnAddressRemovesItsListeners) {
  ScopedFd plaintext(ListenOnLoopback(AF_INET));
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  ASSERT_TRUE(
      loader_->SetInboundListener(pod, ListenerSlot::kInboundPlaintext, plaintext.get()).ok());
  ASSERT_TRUE(loader_->RemovePodAddress(pod).ok());
  absl::StatusOr<DataplaneSnapshot> snapshot = loader_->Snapshot();
  ASSERT_TRUE(snapshot.ok());
  EXPECT_TRUE(snapshot->pod_addresses.empty());
  EXPECT_TRUE(snapshot->inbound_listeners.empty());
  EXPECT_EQ(RunSkLookup(AF_INET, "10.1.2.3", 80).selected_socket_cookie, 0u);
}

TEST_F(CaptureLoaderTest, AnAddressBelongsToOnePod) {
  IpAddress pod = *IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  EXPECT_TRUE(loader_->AddPodAddress(pod, 77).ok());
  EXPECT_EQ(loader_->AddPodAddress(pod, 78).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(CaptureLoaderTest, EnrollmentAndLinksSurviveReopening) {
  ASSERT_TRUE(loader_->EnrollNetns(4242, 7).ok());
  int netns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(netns_fd, 0);
  ScopedFd netns(netns_fd);
  uint64_t cookie = 0;
  socklen_t length = sizeof(cookie);
  ScopedFd probe(socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_EQ(getsockopt(probe.get(), SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &length), 0);
  ASSERT_TRUE(loader_->LinkNetns(cookie, netns.get()).ok());

  loader_.reset();  // as if the agent stopped: pins keep everything
  EXPECT_EQ(access(absl::StrCat(pin_path_, "/links/connect4").c_str(), F_OK), 0);
  EXPECT_EQ(access(absl::StrCat(pin_path_, "/netns/", cookie).c_str(), F_OK), 0);

  absl::StatusOr<std::unique_ptr<CaptureLoader>> reopened = CaptureLoader::Open(Options());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  loader_ = std::move(*reopened);
  absl::StatusOr<DataplaneSnapshot> snapshot = loader_->Snapshot();
  ASSERT_TRUE(snapshot.ok());
  ASSERT_EQ(snapshot->enrolled.size(), 1u);
  EXPECT_EQ(snapshot->enrolled[0].netns_cookie, 4242u);
  EXPECT_EQ(snapshot->enrolled[0].pod_id, 7u);
  ASSERT_EQ(snapshot->linked_netns_cookies.size(), 1u);
  EXPECT_EQ(snapshot->linked_netns_cookies[0], cookie);
  // Adopting the pinned link (rather than adding a second one) keeps one program per netns.
  EXPECT_TRUE(loader_->LinkNetns(cookie, netns.get()).ok());
  EXPECT_TRUE(loader_->UnlinkNetns(cookie).ok());
  EXPECT_NE(access(absl::StrCat(pin_path_, "/netns/", cookie).c_str(), F_OK), 0);
  EXPECT_TRUE(loader_->UnenrollNetns(4242).ok());
  EXPECT_TRUE(loader_->UnenrollNetns(4242).ok());
}

TEST_F(CaptureLoaderTest, NoOriginalDestinationForAnUncapturedConnection) {
  ScopedFd listener(ListenOnLoopback(AF_INET));
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  ScopedFd client(socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_EQ(connect(client.get(), reinterpret_cast<sockaddr*>(&address), length), 0);
  ScopedFd accepted(accept(listener.get(), nullptr, nullptr));
  ASSERT_GE(accepted.get(), 0);
  EXPECT_EQ(loader_->TakeOriginalDestination(accepted.get()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(CaptureLoaderOptionsTest, RejectsBadOptions) {
  EXPECT_FALSE(CaptureLoader::Open({"", "/sys/fs/bpf/x"}).ok());
  EXPECT_FALSE(CaptureLoader::Open({"/tmp", "/sys/fs/bpf/x"}).ok());
  if (geteuid() == 0) {
    EXPECT_FALSE(CaptureLoader::Open({"/sys/fs/cgroup/unified", "relative/path"}).ok());
  }
}

}  // namespace
}  // namespace nodeward::bpf
