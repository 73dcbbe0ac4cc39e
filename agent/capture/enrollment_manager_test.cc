#include "agent/capture/enrollment_manager.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/capture/test_netns.h"
#include "bpf/nodeward_maps.h"
#include "common/testing/literals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::capture {
namespace {

using ::nodeward::bpf::ListenerSlot;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// Records what the manager asks of the kernel side, and can be told to fail one step.
class FakeDataplane : public bpf::CaptureDataplane {
 public:
  absl::Status EnrollNetns(uint64_t cookie, uint32_t pod_id) override {
    return Record(absl::StrCat("enroll ", cookie));
  }
  absl::Status UnenrollNetns(uint64_t cookie) override {
    return Record(absl::StrCat("unenroll ", cookie));
  }
  absl::Status LinkNetns(uint64_t cookie, int netns_fd) override {
    return Record(absl::StrCat("link ", cookie));
  }
  absl::Status UnlinkNetns(uint64_t cookie) override {
    return Record(absl::StrCat("unlink ", cookie));
  }
  absl::Status AddPodAddress(const IpAddress& address, uint64_t cookie) override {
    return Record(absl::StrCat("add ", address.ToString()));
  }
  absl::Status RemovePodAddress(const IpAddress& address) override {
    return Record(absl::StrCat("remove ", address.ToString()));
  }
  absl::Status SetInboundListener(const IpAddress& address, ListenerSlot slot,
                                  int listener_fd) override {
    if (listener_fd < 0) return absl::InvalidArgumentError("no listener");
    return Record(absl::StrCat("listener ", address.ToString(), " ", bpf::ListenerSlotName(slot)));
  }
  absl::Status AnnounceDelivery(const SocketAddress& application,
                                const SocketAddress& agent_side) override {
    return Record(absl::StrCat("announce ", agent_side.ToString(), "->", application.ToString()));
  }
  absl::Status ForgetDelivery(const SocketAddress& application,
                              const SocketAddress& agent_side) override {
    return Record(absl::StrCat("forget ", agent_side.ToString(), "->", application.ToString()));
  }
  absl::StatusOr<SocketAddress> TakeOriginalDestination(const SocketAddress& client,
                                                        uint64_t netns_cookie) override {
    absl::MutexLock lock(&mutex_);
    return original_destination_;
  }
  absl::StatusOr<bpf::DataplaneSnapshot> Snapshot() const override {
    absl::MutexLock lock(&mutex_);
    return snapshot_;
  }

  std::vector<std::string> TakeCalls() {
    absl::MutexLock lock(&mutex_);
    return std::exchange(calls_, {});
  }
  void FailOn(std::string prefix) {
    absl::MutexLock lock(&mutex_);
    fail_prefix_ = std::move(prefix);
  }
  void SetSnapshot(bpf::DataplaneSnapshot snapshot) {
    absl::MutexLock lock(&mutex_);
    snapshot_ = std::move(snapshot);
  }

 private:
  absl::Status Record(std::string call) {
    absl::MutexLock lock(&mutex_);
    if (!fail_prefix_.empty() && call.rfind(fail_prefix_, 0) == 0) {
      return absl::InternalError(absl::StrCat("injected failure: ", call));
    }
    calls_.push_back(std::move(call));
    return absl::OkStatus();
  }

  mutable absl::Mutex mutex_;
  std::vector<std::string> calls_;
  std::string fail_prefix_;
  SocketAddress original_destination_ = *SocketAddress::Parse("10.9.9.9:80");
  bpf::DataplaneSnapshot snapshot_;
};

// Keeps the listeners it is given and accepts on them when asked, resolving each connection
// as a data plane does on its loops.
class RecordingHandler : public ConnectionHandler {
 public:
  void ServeListener(std::shared_ptr<InPodListener> listener) override {
    absl::MutexLock lock(&mutex_);
    listeners_.push_back(std::move(listener));
  }
  std::vector<std::shared_ptr<InPodListener>> listeners() {
    absl::MutexLock lock(&mutex_);
    return listeners_;
  }
  // Accepts until `count` connections were seen (or two seconds passed) and returns what each
  // one was.
  std::vector<std::string> WaitFor(size_t count) {
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    while (events_.size() < count && absl::Now() < deadline) {
      for (const std::shared_ptr<InPodListener>& listener : listeners()) {
        if (listener->closed()) continue;
        sockaddr_storage peer{};
        socklen_t length = sizeof(peer);
        const int fd = accept4(listener->fd(), reinterpret_cast<sockaddr*>(&peer), &length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) continue;
        std::optional<InPodListener::Accepted> accepted = listener->Resolve(fd, [&] {
          return SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&peer), length);
        });
        if (!accepted.has_value()) continue;
        close(fd);
        const std::string& pod = listener->pod()->display_name();
        switch (listener->kind()) {
          case InPodListener::Kind::kOutbound:
            events_.push_back(
                absl::StrCat("outbound ", pod, " ", accepted->destination.ToString()));
            break;
          case InPodListener::Kind::kInboundPlaintext:
            events_.push_back(absl::StrCat("inbound ", pod, " ", accepted->port));
            break;
          case InPodListener::Kind::kTunnel:
            events_.push_back(absl::StrCat("inbound ", pod, " ", accepted->port, " tunnel"));
            break;
        }
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return events_;
  }

 private:
  absl::Mutex mutex_;
  std::vector<std::shared_ptr<InPodListener>> listeners_;
  std::vector<std::string> events_;
};

// Connects to 127.0.0.1:port inside the netns; returns the errno of a failed connect, 0 on
// success.
int ConnectLoopbackIn(NetnsExecutor& executor, int netns_fd, uint16_t port) {
  absl::StatusOr<int> fd = executor.CreateSocket(netns_fd, AF_INET, SOCK_STREAM);
  if (!fd.ok()) return EBADF;
  SocketAddress target{IpAddress::V4(htonl(INADDR_LOOPBACK)), port};
  sockaddr_storage storage;
  socklen_t length = target.ToSockaddr(&storage);
  int result = connect(*fd, reinterpret_cast<sockaddr*>(&storage), length) == 0 ? 0 : errno;
  close(*fd);
  return result;
}

v1::EnrollRequest Request(const TestNetns& netns, const std::string& uid) {
  v1::EnrollRequest request;
  request.set_netns_path(netns.path());
  request.set_uid(uid);
  request.set_namespace_("shop");
  request.set_name("cart-1");
  request.set_service_account("cart");
  request.add_ips("10.1.0.5");
  return request;
}

TEST(ValidateEnrollRequestTest, RejectsUnsafeOrMalformedFields) {
  v1::EnrollRequest request;
  request.set_netns_path("/var/run/netns/x");
  request.set_uid("abc-123");
  EXPECT_TRUE(ValidateEnrollRequest(request).ok());
  for (const char* uid : {"", "..", "a/b", "a b", "x\n"}) {
    v1::EnrollRequest bad = request;
    bad.set_uid(uid);
    EXPECT_FALSE(ValidateEnrollRequest(bad).ok()) << uid;
  }
  v1::EnrollRequest relative = request;
  relative.set_netns_path("netns/x");
  EXPECT_FALSE(ValidateEnrollRequest(relative).ok());
  for (const char* ip : {"10.0.0", "127.0.0.1", "::1", "::ffff:10.0.0.1", "host"}) {
    v1::EnrollRequest bad = request;
    bad.add_ips(ip);
    EXPECT_FALSE(ValidateEnrollRequest(bad).ok()) << ip;
  }
  v1::EnrollRequest good = request;
  good.add_ips("fd00:0:0::1");
  absl::StatusOr<PodMetadata> metadata = ValidateEnrollRequest(good);
  ASSERT_TRUE(metadata.ok());
  EXPECT_THAT(metadata->ips, ElementsAre(literals::IpOf("fd00::1")));
  EXPECT_EQ(metadata->name, "abc-123");
}

class EnrollmentManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    char pattern[] = "/tmp/nodeward-enroll-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    state_dir_ = pattern;
    absl::StatusOr<std::unique_ptr<TestNetns>> netns = TestNetns::Create();
    ASSERT_TRUE(netns.ok()) << netns.status();
    netns_ = std::move(*netns);
    manager_ = MakeManager();
    ASSERT_NE(manager_, nullptr);
  }

  void TearDown() override {
    manager_.reset();
    if (!state_dir_.empty()) {
      std::string command = absl::StrCat("rm -rf '", state_dir_, "'");
      EXPECT_EQ(std::system(command.c_str()), 0);
    }
  }

  std::unique_ptr<EnrollmentManager> MakeManager(ConnectionHandler* handler = nullptr) {
    absl::StatusOr<std::unique_ptr<EnrollmentManager>> manager = EnrollmentManager::Create(
        &dataplane_, handler != nullptr ? handler : &handler_, &executor_, {state_dir_});
    EXPECT_TRUE(manager.ok()) << manager.status();
    return manager.ok() ? std::move(*manager) : nullptr;
  }

  bool StateFileExists(const std::string& uid) {
    return access(absl::StrCat(state_dir_, "/", uid, ".binpb").c_str(), F_OK) == 0;
  }

  std::string state_dir_;
  FakeDataplane dataplane_;
  RecordingHandler handler_;
  NetnsExecutor executor_;
  std::unique_ptr<TestNetns> netns_;
  std::unique_ptr<EnrollmentManager> manager_;
};

TEST_F(EnrollmentManagerTest, EnrollSetsUpListenersAndKernelStateInOrder) {
  absl::StatusOr<v1::EnrolledPod> enrolled = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.status();
  const uint64_t cookie = enrolled->netns_cookie();
  EXPECT_NE(cookie, 0u);
  // Inbound listeners before the link, outbound redirect last, so nothing is refused while
  // enrollment is in progress.
  EXPECT_THAT(
      dataplane_.TakeCalls(),
      ElementsAre("add 10.1.0.5", "listener 10.1.0.5 inbound-plaintext", "listener 10.1.0.5 tunnel",
                  absl::StrCat("link ", cookie), absl::StrCat("enroll ", cookie)));
  EXPECT_THAT(enrolled->listeners(), Contains("127.0.0.1:15001"));
  EXPECT_THAT(enrolled->listeners(), Contains("127.0.0.1:15006"));
  EXPECT_THAT(enrolled->listeners(), Contains("127.0.0.1:15008"));
  EXPECT_TRUE(StateFileExists("uid-1"));
  ASSERT_EQ(manager_->List().size(), 1u);
  EXPECT_EQ(manager_->List()[0].pod().uid(), "uid-1");
}

// An address the pod gets after enrollment is steered as soon as the kernel says so, and
// released when it goes; the record follows.
TEST_F(EnrollmentManagerTest, AddressesAddedLaterAreSteeredAndReleased) {
  ASSERT_TRUE(manager_->Enroll(Request(*netns_, "uid-1")).ok());
  dataplane_.TakeCalls();
  auto ip = [&](const std::string& arguments) {
    const std::string command =
        absl::StrCat("nsenter --net=", netns_->path(), " ip ", arguments, " > /dev/null 2>&1");
    return std::system(command.c_str());
  };
  ASSERT_EQ(ip("addr add 10.2.0.7/32 dev lo"), 0);
  ASSERT_EQ(ip("-6 addr add fd00::7/128 dev lo"), 0);
  auto calls_contain = [&](std::vector<std::string> wanted) {
    std::vector<std::string> seen;
    for (int i = 0; i < 300; ++i) {
      for (std::string& call : dataplane_.TakeCalls()) seen.push_back(std::move(call));
      bool all = true;
      for (const std::string& want : wanted) {
        all = all && std::find(seen.begin(), seen.end(), want) != seen.end();
      }
      if (all) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "calls seen: " << absl::StrJoin(seen, "; ");
    return false;
  };
  EXPECT_TRUE(calls_contain({"add 10.2.0.7", "listener 10.2.0.7 inbound-plaintext",
                             "listener 10.2.0.7 tunnel", "add fd00::7",
                             "listener fd00::7 inbound-plaintext", "listener fd00::7 tunnel"}));
  ASSERT_EQ(manager_->List().size(), 1u);
  EXPECT_THAT(manager_->List()[0].addresses(), Contains("10.2.0.7"));
  EXPECT_THAT(manager_->List()[0].pod_ips(), ElementsAre("10.1.0.5"));

  ASSERT_EQ(ip("addr del 10.2.0.7/32 dev lo"), 0);
  EXPECT_TRUE(calls_contain({"remove 10.2.0.7"}));
  EXPECT_THAT(manager_->List()[0].addresses(), Not(Contains("10.2.0.7")));
  EXPECT_THAT(manager_->List()[0].addresses(), Contains("10.1.0.5")) << "listed ones stay";
}

TEST_F(EnrollmentManagerTest, AcceptedConnectionsReachTheHandler) {
  ASSERT_TRUE(manager_->Enroll(Request(*netns_, "uid-1")).ok());
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), 0);
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_INBOUND_PLAINTEXT), 0);
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_TUNNEL), 0);
  std::vector<std::string> events = handler_.WaitFor(3);
  EXPECT_THAT(events, Contains("outbound shop/cart-1 10.9.9.9:80"));
  EXPECT_THAT(events, Contains("inbound shop/cart-1 15006"));
  EXPECT_THAT(events, Contains("inbound shop/cart-1 15008 tunnel"));
}

TEST_F(EnrollmentManagerTest, TheHandlerGetsTheListenersAndTheirEnd) {
  RecordingHandler serving;
  manager_.reset();
  manager_ = MakeManager(&serving);
  ASSERT_NE(manager_, nullptr);
  ASSERT_TRUE(manager_->Enroll(Request(*netns_, "uid-1")).ok());
  std::vector<std::shared_ptr<InPodListener>> listeners = serving.listeners();
  ASSERT_EQ(listeners.size(), 6u);  // 15001, 15006 and 15008, IPv4 and IPv6
  std::shared_ptr<InPodListener> outbound;
  for (const auto& listener : listeners) {
    EXPECT_EQ(listener->pod()->display_name(), "shop/cart-1");
    EXPECT_FALSE(listener->closed());
    if (listener->address() == "127.0.0.1:15001") outbound = listener;
  }
  ASSERT_NE(outbound, nullptr);
  EXPECT_EQ(outbound->kind(), InPodListener::Kind::kOutbound);

  // The handler accepts the connection and resolves where it was going.
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), 0);
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  const int accepted = accept4(outbound->fd(), reinterpret_cast<sockaddr*>(&peer), &length,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0) << std::strerror(errno);
  int nodelay = 0;
  socklen_t nodelay_length = sizeof(nodelay);
  EXPECT_EQ(getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &nodelay, &nodelay_length), 0);
  EXPECT_EQ(nodelay, 1) << "accepted connections inherit TCP_NODELAY from the listener";
  close(accepted);
  absl::StatusOr<SocketAddress> client =
      SocketAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&peer), length);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<SocketAddress> destination = outbound->OriginalDestination(*client);
  ASSERT_TRUE(destination.ok()) << destination.status();
  EXPECT_EQ(destination->ToString(), "10.9.9.9:80");

  // Unenrolling closes them for the handler: accepts fail at once, while the descriptor stays
  // valid (not reusable) as long as the handler holds the listener.
  ASSERT_TRUE(manager_->Unenroll("uid-1").ok());
  for (const auto& listener : listeners) {
    EXPECT_TRUE(listener->closed());
    EXPECT_GE(fcntl(listener->fd(), F_GETFD), 0);
    EXPECT_LT(accept4(listener->fd(), nullptr, nullptr, SOCK_CLOEXEC), 0);
    EXPECT_EQ(errno, EINVAL);
  }
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), ECONNREFUSED);
  manager_.reset();
}

TEST_F(EnrollmentManagerTest, EnrollIsIdempotentAndOneNetnsIsOnePod) {
  absl::StatusOr<v1::EnrolledPod> first = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_TRUE(first.ok());
  dataplane_.TakeCalls();
  absl::StatusOr<v1::EnrolledPod> again = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->netns_cookie(), first->netns_cookie());
  EXPECT_TRUE(dataplane_.TakeCalls().empty());
  absl::StatusOr<v1::EnrolledPod> other = manager_->Enroll(Request(*netns_, "uid-2"));
  EXPECT_FALSE(other.ok());
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("already enrolled"));
}

TEST_F(EnrollmentManagerTest, UnenrollReversesEveryStep) {
  absl::StatusOr<v1::EnrolledPod> enrolled = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_TRUE(enrolled.ok());
  const uint64_t cookie = enrolled->netns_cookie();
  dataplane_.TakeCalls();
  ASSERT_TRUE(manager_->Unenroll("uid-1").ok());
  EXPECT_THAT(dataplane_.TakeCalls(),
              ElementsAre(absl::StrCat("unenroll ", cookie), "remove 10.1.0.5",
                          absl::StrCat("unlink ", cookie)));
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), ECONNREFUSED);
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_INBOUND_PLAINTEXT), ECONNREFUSED);
  EXPECT_FALSE(StateFileExists("uid-1"));
  EXPECT_TRUE(manager_->List().empty());
  EXPECT_EQ(manager_->Unenroll("uid-1").code(), absl::StatusCode::kNotFound);
}

TEST_F(EnrollmentManagerTest, FailedEnrollmentRollsBack) {
  dataplane_.FailOn("link");
  absl::StatusOr<v1::EnrolledPod> enrolled = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_FALSE(enrolled.ok());
  std::vector<std::string> calls = dataplane_.TakeCalls();
  EXPECT_THAT(calls, Contains("remove 10.1.0.5"));
  EXPECT_FALSE(StateFileExists("uid-1"));
  EXPECT_TRUE(manager_->List().empty());
  // The listeners were closed: the ports are free for the retry.
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), ECONNREFUSED);
  dataplane_.FailOn("");
  EXPECT_TRUE(manager_->Enroll(Request(*netns_, "uid-1")).ok());
}

TEST_F(EnrollmentManagerTest, RejectsWhatIsNotANetns) {
  v1::EnrollRequest request = Request(*netns_, "uid-1");
  request.set_netns_path("/tmp");
  EXPECT_EQ(manager_->Enroll(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_netns_path("/nonexistent/netns");
  EXPECT_EQ(manager_->Enroll(request).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(dataplane_.TakeCalls().empty());
}

TEST_F(EnrollmentManagerTest, RestoreTakesBackRecordedPodsAndDropsStaleKernelState) {
  absl::StatusOr<v1::EnrolledPod> enrolled = manager_->Enroll(Request(*netns_, "uid-1"));
  ASSERT_TRUE(enrolled.ok());
  const uint64_t cookie = enrolled->netns_cookie();
  manager_.reset();  // the agent stops; its state file stays
  ASSERT_TRUE(StateFileExists("uid-1"));
  dataplane_.TakeCalls();

  bpf::DataplaneSnapshot leftovers;
  leftovers.enrolled = {{cookie, 1}, {999, 2}};
  leftovers.pod_addresses = {{*IpAddress::Parse("10.1.0.5"), cookie},
                             {*IpAddress::Parse("10.1.0.77"), 999}};
  leftovers.linked_netns_cookies = {cookie, 999};
  dataplane_.SetSnapshot(leftovers);

  manager_ = MakeManager();
  ASSERT_TRUE(manager_->Restore().ok());
  ASSERT_EQ(manager_->List().size(), 1u);
  EXPECT_EQ(manager_->List()[0].netns_cookie(), cookie);
  std::vector<std::string> calls = dataplane_.TakeCalls();
  EXPECT_THAT(calls, Contains(absl::StrCat("enroll ", cookie)));
  EXPECT_THAT(calls, Contains("unenroll 999"));
  EXPECT_THAT(calls, Contains("remove 10.1.0.77"));
  EXPECT_THAT(calls, Contains("unlink 999"));
  EXPECT_EQ(ConnectLoopbackIn(executor_, netns_->fd(), NW_PORT_OUTBOUND), 0);
}

TEST_F(EnrollmentManagerTest, RestoreDropsPodsWhoseNetnsIsGone) {
  v1::EnrollRequest request = Request(*netns_, "uid-gone");
  {
    absl::StatusOr<std::unique_ptr<TestNetns>> short_lived = TestNetns::Create();
    ASSERT_TRUE(short_lived.ok());
    request.set_netns_path((*short_lived)->path());
    ASSERT_TRUE(manager_->Enroll(request).ok());
    manager_.reset();
  }
  // The fd behind the recorded path is closed: the netns no longer exists.
  manager_ = MakeManager();
  EXPECT_TRUE(manager_->Restore().ok());
  EXPECT_TRUE(manager_->List().empty());
  EXPECT_FALSE(StateFileExists("uid-gone"));
}

}  // namespace
}  // namespace nodeward::capture
