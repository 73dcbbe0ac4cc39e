// nodeward-sds's SDS as Envoy configured by Istio meets it, from clients built from Envoy's
// own protos: "default" and ROOTCA, names that cannot be served, huge names, DeltaSecrets,
// and what open streams cost.
#include "sds/testing/upstream/interop.h"

namespace nodeward::sds::interop {
namespace {

// The test process in a pod's cgroup, as the kubelet places a pod's containers; moved back
// and the cgroups removed when the object dies.
class InPodCgroup {
 public:
  explicit InPodCgroup(const std::string& pod_uid) {
    std::ifstream self("/proc/self/cgroup");
    for (std::string line; std::getline(self, line);) {
      if (absl::StartsWith(line, "0::")) original_ = line.substr(3);
    }
    top_ = absl::StrCat(kUnified, "/nodeward-sds-interop-", ::getpid());
    dirs_ = {top_, top_ + "/kubepods.slice", top_ + "/kubepods.slice/kubepods-burstable.slice",
             absl::StrCat(top_, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
                          absl::StrReplaceAll(pod_uid, {{"-", "_"}}), ".slice")};
    for (const std::string& dir : dirs_) {
      if (::mkdir(dir.c_str(), 0755) != 0) return;
    }
    ok_ = Move(dirs_.back());
  }
  ~InPodCgroup() {
    Move(absl::StrCat(kUnified, original_));
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) ::rmdir(it->c_str());
  }
  bool ok() const { return ok_; }
  static bool Available() {
    return ::geteuid() == 0 && std::filesystem::exists(absl::StrCat(kUnified, "/cgroup.procs"));
  }

 private:
  static constexpr char kUnified[] = "/sys/fs/cgroup/unified";
  static bool Move(const std::string& dir) {
    std::ofstream procs(dir + "/cgroup.procs");
    procs << ::getpid() << "\n";
    procs.flush();
    return procs.good();
  }
  std::string original_ = "/";
  std::string top_;
  std::vector<std::string> dirs_;
  bool ok_ = false;
};

// Point 1: "default" is the certificate of the pod the caller runs in, next to ROOTCA, and a
// bad or refused name on the same stream neither ends it nor stops the others.
TEST_F(UpstreamInteropTest, DefaultIsTheCallingPodsCertificateAndBadNamesDoNotEndTheStream) {
  if (!InPodCgroup::Available()) GTEST_SKIP() << "placing the test in a pod's cgroup needs root";
  WritePods();
  const std::string node_socket = dir_.Sub("node.sock");
  const std::string pods_socket = dir_.Sub("pods.sock");
  Process sds({Bin(), "--sds-socket=" + node_socket, "--workload-sds-socket=" + pods_socket,
               "--ca-dir=" + dir_.Sub("ca"), "--config-dir=" + dir_.Sub("config"),
               "--node-name=node-1"});
  ASSERT_TRUE(Ready(sds, pods_socket));
  struct stat info;
  ASSERT_EQ(::stat(pods_socket.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0666u);

  InPodCgroup pod(kWebUid);
  ASSERT_TRUE(pod.ok());
  const std::string huge(1 << 20, 'n');
  for (const std::string& socket : {pods_socket, node_socket}) {
    SCOPED_TRACE(socket);
    auto stub = Sds(socket);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    std::unique_ptr<SotwStream> stream = stub->StreamSecrets(&context);
    DiscoveryRequest request =
        Request({"default", "ROOTCA", kVault, "not a resource name", huge, kApi});
    ASSERT_TRUE(stream->Write(request));
    const bool node = socket == node_socket;
    std::vector<std::string> want = {"default", "ROOTCA"};
    if (node) want.push_back(kApi);  // the node's agent may hold every identity of its pods
    std::map<std::string, Secret> got = ReadUntil(*stream, request, want);
    ASSERT_TRUE(got.contains("ROOTCA") && got.contains("default"));
    const std::string bundle = got["ROOTCA"].validation_context().trusted_ca().inline_bytes();
    ExpectCertificateFor(got["default"], bundle, kWeb);
    if (node) {
      ExpectCertificateFor(got[kApi], bundle, kApi);
    } else {
      EXPECT_FALSE(got.contains(kApi)) << "a pod gets only its own identity";
    }
    EXPECT_FALSE(got.contains(kVault));
    // The stream is still open: it ends only when this client cancels it.
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {
    // On the pods' socket another identity is refused to FetchSecrets, with its reason.
    grpc::ClientContext context;
    DiscoveryResponse response;
    grpc::Status status = Sds(pods_socket)->FetchSecrets(&context, Request({kApi}), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "only its own identity"))
        << status.error_message();
  }
}

// Point 1 outside a pod: "default" cannot be told and is refused, ROOTCA still comes.
TEST_F(UpstreamInteropTest, DefaultFromACallerInNoPodIsRefusedAlone) {
  WritePods();
  const std::string socket = dir_.Sub("node.sock");
  const int metrics = FreeLoopbackPort();
  Process sds({Bin(), "--sds-socket=" + socket, "--ca-dir=" + dir_.Sub("ca"),
               "--config-dir=" + dir_.Sub("config"), "--node-name=node-1",
               absl::StrCat("--metrics-address=127.0.0.1:", metrics)});
  ASSERT_TRUE(Ready(sds, socket));
  {
    grpc::ClientContext context;
    DiscoveryResponse response;
    grpc::Status status = Sds(socket)->FetchSecrets(&context, Request({"default"}), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "not known to run in a pod"))
        << status.error_message();
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto stub = Sds(socket);
  std::unique_ptr<SotwStream> stream = stub->StreamSecrets(&context);
  DiscoveryRequest request = Request({"default", "ROOTCA", kWeb});
  ASSERT_TRUE(stream->Write(request));
  std::map<std::string, Secret> got = ReadUntil(*stream, request, {"ROOTCA", kWeb});
  EXPECT_TRUE(got.contains("ROOTCA"));
  EXPECT_TRUE(got.contains(kWeb));
  EXPECT_FALSE(got.contains("default"));
  // Each refusal is counted, by reason: one for the fetch, one for the stream.
  const std::string scraped = Scrape(metrics);
  EXPECT_TRUE(absl::StrContains(scraped, "HTTP/1.1 200"));
  EXPECT_TRUE(
      absl::StrContains(scraped, "nodeward_sds_resource_errors_total{reason=\"unknown_caller\"} 2"))
      << scraped;
  EXPECT_TRUE(absl::StrContains(scraped, "nodeward_sds_open_calls 1")) << scraped;
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// Point 6: what a client sent comes back in errors escaped and cut, so a 1 MiB name or type
// makes a short grpc-message trailer that clients accept.
TEST_F(UpstreamInteropTest, HugeNamesComeBackCutInErrors) {
  const std::string socket = dir_.Sub("node.sock");
  Process sds({Bin(), "--sds-socket=" + socket, "--ca-dir=" + dir_.Sub("ca"),
               std::string("--allowed-identity=") + kWeb});
  ASSERT_TRUE(Ready(sds, socket));
  const std::string huge(1 << 20, 'x');
  {
    grpc::ClientContext context;
    DiscoveryResponse response;
    grpc::Status status = Sds(socket)->FetchSecrets(&context, Request({huge}), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_LT(status.error_message().size(), 1024u);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "(1048576 bytes)"));
  }
  {
    grpc::ClientContext context;
    auto stub = Sds(socket);
    std::unique_ptr<SotwStream> stream = stub->StreamSecrets(&context);
    DiscoveryRequest request = Request({"ROOTCA"});
    request.set_type_url(huge);
    ASSERT_TRUE(stream->Write(request));
    DiscoveryResponse response;
    EXPECT_FALSE(stream->Read(&response));
    grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_LT(status.error_message().size(), 1024u);
  }
}

// Point 8: DeltaSecrets, as Envoy configured for delta xDS uses it: per-resource versions,
// what cannot be served said as removed, ACK by nonce, and a reconnected client not sent
// again what it already holds.
TEST_F(UpstreamInteropTest, DeltaSecretsServesSaysWhatDoesNotExistAndResumes) {
  const std::string socket = dir_.Sub("node.sock");
  Process sds({Bin(), "--sds-socket=" + socket, "--ca-dir=" + dir_.Sub("ca"),
               std::string("--allowed-identity=") + kWeb});
  ASSERT_TRUE(Ready(sds, socket));
  auto stub = Sds(socket);
  std::map<std::string, std::string> versions;
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    auto stream = stub->DeltaSecrets(&context);
    DeltaDiscoveryRequest request;
    request.set_type_url(kSecretType);
    *request.mutable_node() = EnvoyNode();
    for (const char* name : {"ROOTCA", kWeb, kVault}) request.add_resource_names_subscribe(name);
    ASSERT_TRUE(stream->Write(request));
    std::map<std::string, Secret> got;
    std::vector<std::string> removed;
    DeltaDiscoveryResponse response;
    while ((got.size() < 2 || removed.empty()) && stream->Read(&response)) {
      EXPECT_EQ(response.type_url(), kSecretType);
      EXPECT_FALSE(response.nonce().empty());
      for (const auto& resource : response.resources()) {
        EXPECT_FALSE(resource.version().empty());
        versions[resource.name()] = resource.version();
        got[resource.name()] = Unpack(resource.resource());
      }
      for (const std::string& name : response.removed_resources()) removed.push_back(name);
      DeltaDiscoveryRequest ack;
      ack.set_type_url(kSecretType);
      ack.set_response_nonce(response.nonce());
      ASSERT_TRUE(stream->Write(ack));
    }
    ASSERT_TRUE(got.contains("ROOTCA") && got.contains(kWeb));
    ExpectCertificateFor(got[kWeb], got["ROOTCA"].validation_context().trusted_ca().inline_bytes(),
                         kWeb);
    EXPECT_EQ(removed, std::vector<std::string>{kVault});
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {
    // Reconnected, holding both at their versions: nothing is sent until something changes.
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    auto stream = stub->DeltaSecrets(&context);
    DeltaDiscoveryRequest request;
    request.set_type_url(kSecretType);
    *request.mutable_node() = EnvoyNode();
    for (const auto& [name, version] : versions) {
      request.add_resource_names_subscribe(name);
      (*request.mutable_initial_resource_versions())[name] = version;
    }
    ASSERT_TRUE(stream->Write(request));
    DeltaDiscoveryResponse response;
    EXPECT_FALSE(stream->Read(&response)) << response.DebugString();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
}

// One stream that wants ROOTCA, driven by gRPC's callback API (no thread per stream here
// either): records that the bundle came and how the stream ended.
class RootCaWatch : public grpc::ClientBidiReactor<DiscoveryRequest, DiscoveryResponse> {
 public:
  RootCaWatch(SecretDiscoveryService::Stub* stub) : request_(Request({"ROOTCA"})) {
    stub->async()->StreamSecrets(&context_, this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnWriteDone(bool) override {}
  void OnReadDone(bool ok) override {
    if (ok) served_ = true;
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }
  void Cancel() { context_.TryCancel(); }
  bool served() const { return served_; }
  // Waits for the end of the stream.
  grpc::Status Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  grpc::ClientContext context_;
  DiscoveryRequest request_;
  DiscoveryResponse response_;
  std::atomic<bool> served_{false};
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// Point 5: open streams cost the server no threads, and one caller may have only so many.
TEST_F(UpstreamInteropTest, StreamsCostNoThreadsAndEachCallerIsCapped) {
  constexpr int kCap = 300;
  const std::string socket = dir_.Sub("node.sock");
  Process sds({Bin(), "--sds-socket=" + socket, "--ca-dir=" + dir_.Sub("ca"),
               absl::StrCat("--sds-max-calls-per-caller=", kCap)});
  ASSERT_TRUE(Ready(sds, socket));
  std::vector<std::unique_ptr<SecretDiscoveryService::Stub>> stubs;
  for (int i = 0; i < 3; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("nodeward.test.channel", i);  // three connections, not one shared
    stubs.push_back(SecretDiscoveryService::NewStub(grpc::CreateCustomChannel(
        "unix:" + socket, grpc::InsecureChannelCredentials(), arguments)));
  }
  {
    // One stream first, so the threads gRPC starts on first use are counted in the baseline.
    RootCaWatch first(stubs[0].get());
    ASSERT_TRUE(Eventually([&] { return first.served(); }, absl::Seconds(10)));
    first.Cancel();
    first.Wait();
  }
  const long baseline = ProcStatus(sds.pid(), "Threads");
  std::vector<std::unique_ptr<RootCaWatch>> watches;
  for (int i = 0; i < kCap; ++i) {
    watches.push_back(std::make_unique<RootCaWatch>(stubs[i % stubs.size()].get()));
  }
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& watch : watches) {
          if (!watch->served()) return false;
        }
        return true;
      },
      absl::Seconds(30)));
  const long threads = ProcStatus(sds.pid(), "Threads");
  std::cerr << kCap << " open streams: " << threads << " threads (" << baseline
            << " with one), VmRSS " << ProcStatus(sds.pid(), "VmRSS") << " kB\n";
  EXPECT_LE(threads, baseline + 4);

  // One more from the same caller is turned away; the others are not disturbed.
  RootCaWatch over(stubs[0].get());
  grpc::Status refused = over.Wait();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_FALSE(over.served());
  for (const auto& watch : watches) EXPECT_FALSE(watch->done());

  // Once some close, the caller may open new ones.
  for (int i = 0; i < 10; ++i) {
    watches[i]->Cancel();
    watches[i]->Wait();
  }
  RootCaWatch again(stubs[1].get());
  EXPECT_TRUE(Eventually([&] { return again.served(); }, absl::Seconds(10)));
  again.Cancel();
  again.Wait();
  for (const auto& watch : watches) watch->Cancel();
  for (const auto& watch : watches) watch->Wait();
}

}  // namespace
}  // namespace nodeward::sds::interop
