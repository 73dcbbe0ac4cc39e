#include "agent/capture/captured_pod.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "agent/capture/test_netns.h"
#include "bpf/nodeward_maps.h"
#include "gtest/gtest.h"

namespace nodeward::capture {
namespace {

PodMetadata TestPod() {
  PodMetadata metadata;
  metadata.namespace_name = "ns";
  metadata.name = "pod";
  return metadata;
}

int MarkOf(int fd) {
  int mark = 0;
  socklen_t length = sizeof(mark);
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &length) != 0) return -1;
  return mark;
}

// More sockets than one batch: each is distinct, lives in the pod's netns, is non-blocking and
// carries the agent's mark, whichever refill it came from.
TEST(CapturedPodTest, AgentSocketsComeFromThePodNetnsAcrossRefills) {
  absl::StatusOr<std::unique_ptr<TestNetns>> netns = TestNetns::Create();
  ASSERT_TRUE(netns.ok()) << netns.status();
  NetnsExecutor executor;
  absl::StatusOr<int> probe = executor.CreateSocket((*netns)->fd(), AF_INET, SOCK_STREAM);
  ASSERT_TRUE(probe.ok()) << probe.status();
  absl::StatusOr<uint64_t> pod_cookie = NetnsCookieOfSocket(*probe);
  close(*probe);
  ASSERT_TRUE(pod_cookie.ok()) << pod_cookie.status();

  const int netns_fd = dup((*netns)->fd());
  ASSERT_GE(netns_fd, 0);
  CapturedPod pod(TestPod(), netns_fd, *pod_cookie, &executor);
  absl::flat_hash_set<int> seen;
  for (int family : {AF_INET, AF_INET6}) {
    for (std::size_t i = 0; i < 2 * CapturedPod::kSocketBatch + 1; ++i) {
      absl::StatusOr<int> fd = pod.CreateAgentSocket(family);
      ASSERT_TRUE(fd.ok()) << fd.status();
      EXPECT_TRUE(seen.insert(*fd).second) << "socket handed out twice: " << *fd;
      EXPECT_EQ(NetnsCookieOfSocket(*fd).value_or(0), *pod_cookie);
      EXPECT_EQ(MarkOf(*fd), NW_AGENT_SOCKET_MARK);
      EXPECT_NE(fcntl(*fd, F_GETFL) & O_NONBLOCK, 0);
      int nodelay = 0;
      socklen_t nodelay_length = sizeof(nodelay);
      ASSERT_EQ(getsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &nodelay_length), 0);
      EXPECT_EQ(nodelay, 1);
      int domain = 0;
      socklen_t length = sizeof(domain);
      ASSERT_EQ(getsockopt(*fd, SOL_SOCKET, SO_DOMAIN, &domain, &length), 0);
      EXPECT_EQ(domain, family);
    }
  }
  for (int fd : seen) close(fd);
}

TEST(CapturedPodTest, ANetnsThatCannotBeEnteredIsAnError) {
  NetnsExecutor executor;
  const int not_a_netns = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(not_a_netns, 0);
  CapturedPod pod(TestPod(), not_a_netns, 0, &executor);
  absl::StatusOr<int> fd = pod.CreateAgentSocket(AF_INET);
  EXPECT_FALSE(fd.ok());
}

}  // namespace
}  // namespace nodeward::capture
