// KubeSource against a fake API server: a thread in this process speaking HTTPS on 127.0.0.1
// with the real list/watch wire format (JSON lists, chunked watch streams of
// {"type":...,"object":...} lines, bookmarks, 410 errors).
#include "policy/kube_source.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "crypto/certificate_authority.h"
#include "crypto/test_util.h"
#include "crypto/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/decisions.h"

namespace nodeward::policy {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "test-token-1";

// One accepted connection, TLS on a blocking socket.
class ServerConnection {
 public:
  ServerConnection(int fd, std::unique_ptr<crypto::TlsEngine> engine)
      : fd_(fd), engine_(std::move(engine)) {}
  ~ServerConnection() { close(fd_); }

  // Reads until a full request head arrived (handshaking on the way).
  bool ReadHead(std::string* head) {
    std::string plain;
    while (plain.find("\r\n\r\n") == std::string::npos) {
      if (!Pump()) return false;
      uint8_t buffer[4096];
      while (true) {
        absl::StatusOr<size_t> n = engine_->ReadPlaintext(absl::MakeSpan(buffer));
        if (!n.ok() || *n == 0) break;
        plain.append(reinterpret_cast<char*>(buffer), *n);
      }
    }
    *head = plain.substr(0, plain.find("\r\n\r\n"));
    return true;
  }

  bool Send(absl::string_view data) {
    while (!data.empty()) {
      absl::StatusOr<size_t> n = engine_->WritePlaintext(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
      if (!n.ok() || *n == 0) return false;
      data.remove_prefix(*n);
      if (!Flush()) return false;
    }
    return true;
  }

  void Close() {
    engine_->Shutdown();
    Flush();
    shutdown(fd_, SHUT_RDWR);
  }

 private:
  bool Flush() {
    uint8_t buffer[16384];
    while (engine_->PendingWire() > 0) {
      size_t n = engine_->ReadWire(absl::MakeSpan(buffer));
      for (size_t sent = 0; sent < n;) {
        ssize_t w = send(fd_, buffer + sent, n - sent, MSG_NOSIGNAL);
        if (w <= 0) return false;
        sent += static_cast<size_t>(w);
      }
    }
    return true;
  }
  // Moves one batch of bytes from the socket into the engine and answers it.
  bool Pump() {
    if (!engine_->Advance().ok() || !Flush()) return false;
    pollfd p = {fd_, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) return false;
    uint8_t buffer[16384];
    ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) return false;
    absl::Span<const uint8_t> data(buffer, static_cast<size_t>(n));
    while (!data.empty()) {
      size_t used = engine_->FeedWire(data);
      data.remove_prefix(used);
      if (!engine_->Advance().ok()) return false;
      if (used == 0 && !data.empty()) return false;
    }
    return Flush();
  }

  int fd_;
  std::unique_ptr<crypto::TlsEngine> engine_;
};

class FakeApiServer {
 public:
  explicit FakeApiServer(std::shared_ptr<const crypto::TlsContext> context)
      : context_(std::move(context)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
        listen(listen_fd_, 64) == 0) {
      socklen_t length = sizeof(address);
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
      port_ = ntohs(address.sin_port);
    }
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~FakeApiServer() {
    {
      absl::MutexLock lock(&mutex_);
      stopping_ = true;
    }
    acceptor_.join();
    for (std::thread& thread : handlers_) thread.join();
    close(listen_fd_);
  }

  uint16_t port() const { return port_; }

  void SetList(const std::string& path, const std::string& resource_version,
               std::vector<std::string> items) {
    absl::MutexLock lock(&mutex_);
    lists_[path] = {resource_version, std::move(items)};
  }
  void RemoveList(const std::string& path) {
    absl::MutexLock lock(&mutex_);
    lists_.erase(path);
  }
  void PushEvent(const std::string& path, const std::string& type, const std::string& object) {
    absl::MutexLock lock(&mutex_);
    events_[path].push_back(absl::StrCat(R"({"type":")", type, R"(","object":)", object, "}\n"));
  }
  // Ends the watches open on `path` normally (as the server's timeout does).
  void EndWatches(const std::string& path) {
    absl::MutexLock lock(&mutex_);
    ++watch_epoch_[path];
  }
  // Cuts the watches open on `path` mid-stream, without the terminating chunk.
  void DropWatches(const std::string& path) {
    absl::MutexLock lock(&mutex_);
    ++drop_epoch_[path];
  }
  // Count of requests whose target starts with `prefix`.
  int Count(const std::string& prefix) {
    absl::MutexLock lock(&mutex_);
    int count = 0;
    for (const std::string& target : requests_) count += absl::StartsWith(target, prefix);
    return count;
  }
  std::vector<std::string> Requests() {
    absl::MutexLock lock(&mutex_);
    return requests_;
  }

 private:
  void Accept() {
    while (true) {
      {
        absl::MutexLock lock(&mutex_);
        if (stopping_) return;
      }
      pollfd p = {listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      auto connection = std::make_shared<ServerConnection>(fd, crypto::TlsEngine::Server(context_));
      absl::MutexLock lock(&mutex_);
      handlers_.emplace_back([this, connection] { Serve(*connection); });
    }
  }

  void Respond(ServerConnection& connection, int status, const std::string& body) {
    connection.Send(absl::StrCat("HTTP/1.1 ", status,
                                 " X\r\nContent-Type: application/json\r\n"
                                 "Content-Length: ",
                                 body.size(), "\r\n\r\n", body));
    connection.Close();
  }

  void Serve(ServerConnection& connection) {
    std::string head;
    if (!connection.ReadHead(&head)) return;
    std::vector<std::string> lines = absl::StrSplit(head, "\r\n");
    std::vector<std::string> request_line = absl::StrSplit(lines[0], ' ');
    if (request_line.size() != 3) return Respond(connection, 400, "{}");
    std::string target = request_line[1];
    bool authorized = false;
    for (const std::string& line : lines) {
      authorized |= line == absl::StrCat("Authorization: Bearer ", kToken);
    }
    std::string path = target.substr(0, target.find('?'));
    {
      absl::MutexLock lock(&mutex_);
      requests_.push_back(target);
    }
    if (!authorized) return Respond(connection, 401, R"({"kind":"Status","code":401})");
    bool watch = absl::StrContains(target, "watch=1");
    std::optional<std::pair<std::string, std::vector<std::string>>> list;
    {
      absl::MutexLock lock(&mutex_);
      auto it = lists_.find(path);
      if (it != lists_.end()) list = it->second;
    }
    if (!list.has_value()) return Respond(connection, 404, R"({"kind":"Status","code":404})");
    if (!watch) {
      return Respond(
          connection, 200,
          absl::StrCat(R"({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":")",
                       list->first, R"("},"items":[)", absl::StrJoin(list->second, ","), "]}"));
    }
    connection.Send(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    int epoch, drop_epoch;
    {
      absl::MutexLock lock(&mutex_);
      epoch = watch_epoch_[path];
      drop_epoch = drop_epoch_[path];
    }
    bool dropped = false;
    while (true) {
      std::deque<std::string> pending;
      {
        absl::MutexLock lock(&mutex_);
        auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
          return stopping_ || !events_[path].empty() || watch_epoch_[path] != epoch ||
                 drop_epoch_[path] != drop_epoch;
        };
        mutex_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
        dropped = drop_epoch_[path] != drop_epoch;
        if (stopping_ || dropped || watch_epoch_[path] != epoch) break;
        pending.swap(events_[path]);
      }
      for (const std::string& event : pending) {
        // Split each event over two chunks, as a real server's framing may.
        size_t half = event.size() / 2;
        connection.Send(absl::StrCat(absl::Hex(half), "\r\n", event.substr(0, half), "\r\n"));
        connection.Send(
            absl::StrCat(absl::Hex(event.size() - half), "\r\n", event.substr(half), "\r\n"));
      }
    }
    if (!dropped) connection.Send("0\r\n\r\n");
    connection.Close();
  }

  std::shared_ptr<const crypto::TlsContext> context_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> handlers_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> lists_
      ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::deque<std::string>> events_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> watch_epoch_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, int> drop_epoch_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mutex_);
};

constexpr char kNamespaces[] = "/api/v1/namespaces";
constexpr char kPods[] = "/api/v1/pods";
constexpr char kServices[] = "/api/v1/services";
constexpr char kSlices[] = "/apis/discovery.k8s.io/v1/endpointslices";
constexpr char kPeerAuthV1beta1[] = "/apis/security.istio.io/v1beta1/peerauthentications";
constexpr char kRules[] = "/apis/networking.istio.io/v1/destinationrules";

std::string PodJson(const std::string& name, const std::string& ip, const std::string& rv,
                    const std::string& app) {
  return absl::StrCat(
      R"({"metadata":{"name":")", name, R"(","namespace":"shop","uid":"u-)", name,
      R"(","resourceVersion":")", rv,
      R"(","creationTimestamp":"2024-05-01T10:00:00Z","labels":{"app":")", app,
      R"("}},"spec":{"serviceAccountName":")", app,
      R"(","nodeName":"node-a","containers":[{"name":"app","image":"x","ports":[{"name":"http","containerPort":9080,"protocol":"TCP"}]}]},"status":{"phase":"Running","podIP":")",
      ip, R"(","podIPs":[{"ip":")", ip,
      R"("}],"conditions":[{"type":"Ready","status":"True","lastTransitionTime":null}]}})");
}

std::string ServiceJson(const std::string& name, const std::string& ip, const std::string& rv) {
  return absl::StrCat(
      R"({"metadata":{"name":")", name, R"(","namespace":"shop","resourceVersion":")", rv,
      R"("},"spec":{"type":"ClusterIP","clusterIP":")", ip, R"(","clusterIPs":[")", ip,
      R"("],"selector":{"app":"reviews"},"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":"http"}]}})");
}

std::string PeerAuthJson(const std::string& mode, const std::string& rv) {
  return absl::StrCat(
      R"({"apiVersion":"security.istio.io/v1beta1","kind":"PeerAuthentication","metadata":{"name":"default","namespace":"shop","resourceVersion":")",
      rv, R"("},"spec":{"mtls":{"mode":")", mode, R"("}}})");
}

class KubeSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
        crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
    ASSERT_TRUE(ca.ok()) << ca.status();
    absl::StatusOr<crypto::testing::Workload> server = crypto::testing::IssueWorkload(
        **ca, crypto::testing::Id("cluster.local", "default", "kube-apiserver"));
    ASSERT_TRUE(server.ok()) << server.status();
    absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
        crypto::TlsContext::PlainServer(server->credentials());
    ASSERT_TRUE(context.ok()) << context.status();
    server_ = std::make_unique<FakeApiServer>(*context);
    ASSERT_NE(server_->port(), 0);
    std::ofstream(dir_.Sub("ca.crt")) << (*ca)->RootsPem();
    std::ofstream(dir_.Sub("token")) << kToken << "\n";

    server_->SetList(
        kNamespaces, "10",
        {R"({"metadata":{"name":"shop","resourceVersion":"3","labels":{"nodeward.io/dataplane-mode":"enabled"}}})"});
    server_->SetList(kPods, "10",
                     {PodJson("client", "10.0.1.1", "4", "client"),
                      PodJson("reviews-1", "10.0.1.2", "5", "reviews")});
    server_->SetList(kServices, "10", {ServiceJson("reviews", "10.96.1.1", "6")});
    server_->SetList(
        kSlices, "10",
        {R"({"metadata":{"name":"reviews-x","namespace":"shop","labels":{"kubernetes.io/service-name":"reviews"}},"addressType":"IPv4","ports":[{"name":"http","port":9080,"protocol":"TCP"}],"endpoints":[{"addresses":["10.0.1.2"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","name":"reviews-1","namespace":"shop"}}]})"});
    // Only the older PeerAuthentication version is served: v1 answers 404.
    server_->SetList(kPeerAuthV1beta1, "10", {});
    server_->SetList(kRules, "10", {});
  }

  // Runs on failure too: the source first (its threads), then the server, then the files.
  void TearDown() override {
    source_.reset();
    server_.reset();
  }

  KubeSourceOptions Options() {
    KubeSourceOptions options;
    options.host = "127.0.0.1";
    options.port = server_->port();
    options.token_path = dir_.Sub("token");
    options.ca_path = dir_.Sub("ca.crt");
    options.server_names = {"spiffe://cluster.local/ns/default/sa/kube-apiserver"};
    options.debounce = absl::Milliseconds(20);
    options.initial_backoff = absl::Milliseconds(50);
    options.max_backoff = absl::Milliseconds(500);
    options.io_timeout = absl::Seconds(5);
    options.watch_timeout_seconds = 30;
    return options;
  }

  bool WaitFor(const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return done();
  }

  crypto::testing::TempDir dir_;
  std::unique_ptr<FakeApiServer> server_;
  std::unique_ptr<KubeSource> source_;
};

TEST_F(KubeSourceTest, ListsWatchesAndFollowsChanges) {
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok()) << source.status();
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;

  // The initial lists make a working snapshot.
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  const Pod* client = snapshot->FindPod("shop", "client");
  ASSERT_NE(client, nullptr);
  OutboundDecision outbound = DecideOutbound(*snapshot, *client, "10.96.1.1", 80);
  EXPECT_EQ(outbound.action, OutboundAction::kHbone) << outbound.trace.ToString();
  EXPECT_EQ(outbound.expected_peer_identity, "spiffe://cluster.local/ns/shop/sa/reviews");
  EXPECT_EQ(absl::StrCat(outbound.address, ":", outbound.port), "10.0.1.2:9080");
  EXPECT_GE(server_->Count("/apis/security.istio.io/v1/peerauthentications?limit="), 1);

  // ADDED: a STRICT namespace policy arrives over the v1beta1 watch.
  ASSERT_TRUE(
      WaitFor([&] { return server_->Count(absl::StrCat(kPeerAuthV1beta1, "?watch=1")) > 0; }));
  server_->PushEvent(kPeerAuthV1beta1, "ADDED", PeerAuthJson("STRICT", "20"));
  ASSERT_TRUE(
      WaitFor([&] { return source_->Current()->resources().peer_authentications.size() == 1; }));
  snapshot = source_->Current();
  InboundDecision inbound = DecideInbound(*snapshot, *snapshot->FindPod("shop", "reviews-1"), 9080,
                                          InboundTransport::kPlaintext);
  EXPECT_FALSE(inbound.allow) << inbound.trace.ToString();

  // An invalid MODIFIED keeps the last good version and is reported.
  server_->PushEvent(kPeerAuthV1beta1, "MODIFIED", PeerAuthJson("BOGUS", "21"));
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(), "unknown mode \"BOGUS\"");
  }));
  EXPECT_EQ(source_->Current()->resources().peer_authentications.at(0).mode, MtlsMode::kStrict);
  server_->PushEvent(kPeerAuthV1beta1, "MODIFIED", PeerAuthJson("DISABLE", "22"));
  ASSERT_TRUE(WaitFor([&] {
    return source_->Current()->resources().peer_authentications.at(0).mode == MtlsMode::kDisable;
  }));

  // A bookmark moves the resourceVersion the next watch resumes from.
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kPods, "?watch=1")) > 0; }));
  server_->PushEvent(kPods, "BOOKMARK",
                     R"({"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"25"}})");
  absl::SleepFor(absl::Milliseconds(200));
  server_->EndWatches(kPods);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kPods, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=25")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_EQ(server_->Count(absl::StrCat(kPods, "?limit=")), 1);  // resumed, not relisted

  // DELETED removes the pod.
  server_->PushEvent(kPods, "DELETED", PodJson("client", "10.0.1.1", "26", "client"));
  ASSERT_TRUE(WaitFor([&] { return source_->Current()->FindPod("shop", "client") == nullptr; }));

  // A watch cut mid-stream is an error: reported, then resumed after a backoff from the last
  // resourceVersion seen (the DELETED event's), without relisting.
  server_->DropWatches(kPods);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kPods, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=26")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_THAT(std::string(source_->Status().last_error.message()),
              HasSubstr("pods: connection closed inside a chunked body"));
  EXPECT_EQ(server_->Count(absl::StrCat(kPods, "?limit=")), 1);

  // 410 Gone: the source relists and the new list replaces the old objects.
  ASSERT_TRUE(WaitFor([&] { return server_->Count(absl::StrCat(kServices, "?watch=1")) > 0; }));
  server_->SetList(kServices, "40", {ServiceJson("reviews-v2", "10.96.1.2", "39")});
  server_->PushEvent(
      kServices, "ERROR",
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410})");
  ASSERT_TRUE(WaitFor([&] {
    std::shared_ptr<const Snapshot> now = source_->Current();
    return now->FindService("shop", "reviews-v2") != nullptr &&
           now->FindService("shop", "reviews") == nullptr;
  }));
  EXPECT_EQ(server_->Count(absl::StrCat(kServices, "?limit=")), 2);
  ASSERT_TRUE(WaitFor([&] {
    for (const std::string& target : server_->Requests()) {
      if (absl::StartsWith(target, absl::StrCat(kServices, "?watch=1")) &&
          absl::StrContains(target, "resourceVersion=40")) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_GT(source_->Status().generation, 1u);
}

TEST_F(KubeSourceTest, MissingIstioResourcesMeanNone) {
  // Without Istio's CRDs every version answers 404: the source still syncs, with no policies.
  server_->RemoveList(kRules);
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15))) << source_->Status().last_error;
  EXPECT_TRUE(source_->Current()->resources().destination_rules.empty());
  for (const char* version : {"v1", "v1beta1", "v1alpha3"}) {
    EXPECT_GE(server_->Count(
                  absl::StrCat("/apis/networking.istio.io/", version, "/destinationrules?limit=")),
              1)
        << version;
  }
  EXPECT_NE(source_->Current()->FindPod("shop", "reviews-1"), nullptr);
}

TEST_F(KubeSourceTest, UntrustedServerNeverSyncs) {
  crypto::testing::TempDir other;
  absl::StatusOr<std::unique_ptr<crypto::CertificateAuthority>> ca =
      crypto::CertificateAuthority::LoadOrCreate(other.Sub("ca"));
  ASSERT_TRUE(ca.ok());
  std::ofstream(dir_.Sub("other-ca.crt")) << (*ca)->RootsPem();
  KubeSourceOptions options = Options();
  options.ca_path = dir_.Sub("other-ca.crt");
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(options);
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  EXPECT_FALSE(source_->WaitForSync(absl::Seconds(1)));
  ASSERT_TRUE(WaitFor([&] { return !source_->Status().last_error.ok(); }));
  EXPECT_THAT(std::string(source_->Status().last_error.message()), HasSubstr("TLS"));
  EXPECT_EQ(source_->Current(), nullptr);
}

TEST_F(KubeSourceTest, RejectedTokenIsReported) {
  std::ofstream(dir_.Sub("token"), std::ios::trunc) << "wrong";
  absl::StatusOr<std::unique_ptr<KubeSource>> source = KubeSource::Start(Options());
  ASSERT_TRUE(source.ok());
  source_ = *std::move(source);
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(source_->Status().last_error.message(), "HTTP 401"); }));
  EXPECT_EQ(source_->Current(), nullptr);
  // A rotated token is picked up on the next attempt.
  std::ofstream(dir_.Sub("token"), std::ios::trunc) << kToken;
  EXPECT_TRUE(source_->WaitForSync(absl::Seconds(15)));
}

TEST(KubeSourceOptionsTest, InClusterReadsTheEnvironment) {
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_EQ(KubeSourceOptions::InCluster().status().code(), absl::StatusCode::kFailedPrecondition);
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "6443", 1);
  absl::StatusOr<KubeSourceOptions> options = KubeSourceOptions::InCluster();
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->host, "10.96.0.1");
  EXPECT_EQ(options->port, 6443);
  setenv("KUBERNETES_SERVICE_PORT", "http", 1);
  EXPECT_FALSE(KubeSourceOptions::InCluster().ok());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

}  // namespace
}  // namespace nodeward::policy
