// nodeward-sds as a stock Istio setup meets it: the binary, driven by clients built from
// Envoy's and Istio's own API definitions (proto/ here, with upstream's packages, messages and
// field numbers, fields nodeward does not use included), never from nodeward's. CSRs come from
// the openssl command line, as another implementation makes them; TokenReview is answered by
// the fake Kubernetes API server.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "crypto/certificate.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "crypto/tls.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "istio/v1/auth/ca.grpc.pb.h"
#include "policy/testing/fake_api_server.h"
#include "sds/testing/processes.h"

namespace nodeward::sds {
namespace {

using envoy::extensions::transport_sockets::tls::v3::Secret;
using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;
using envoy::service::secret::v3::SecretDiscoveryService;
using istio::v1::auth::IstioCertificateRequest;
using istio::v1::auth::IstioCertificateResponse;
using istio::v1::auth::IstioCertificateService;
using testing::Eventually;
using testing::FreeLoopbackPort;
using testing::Process;
using testing::ProcStatus;
using testing::TempDir;

constexpr char kSecretType[] =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
constexpr char kWebUid[] = "7d3c5a10-2b4e-4f6a-9c8d-1e2f3a4b5c6d";
constexpr char kWeb[] = "spiffe://cluster.local/ns/shop/sa/web";
constexpr char kApi[] = "spiffe://cluster.local/ns/shop/sa/api";
constexpr char kVault[] = "spiffe://cluster.local/ns/bank/sa/vault";

// Whether something accepts TCP connections on the loopback port.
bool Listening(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return open;
}

// GET /metrics on the loopback port, as a Prometheus scrape.
std::string Scrape(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) out.append(buffer, n);
  }
  ::close(fd);
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// As Envoy configured by Istio fills it.
envoy::config::core::v3::Node EnvoyNode() {
  envoy::config::core::v3::Node node;
  node.set_id("sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local");
  node.set_cluster("web.shop");
  node.set_user_agent_name("envoy");
  node.set_user_agent_version("1.28.0");
  node.add_client_features("envoy.lb.does_not_support_overprovisioning");
  (*node.mutable_metadata()->mutable_fields())["NAMESPACE"].set_string_value("shop");
  node.mutable_locality()->set_zone("zone-a");
  return node;
}

DiscoveryRequest Request(const std::vector<std::string>& names) {
  DiscoveryRequest request;
  request.set_type_url(kSecretType);
  *request.mutable_node() = EnvoyNode();
  for (const std::string& name : names) request.add_resource_names(name);
  return request;
}

std::unique_ptr<SecretDiscoveryService::Stub> Sds(const std::string& socket) {
  return SecretDiscoveryService::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

Secret Unpack(const google::protobuf::Any& any) {
  EXPECT_EQ(any.type_url(), kSecretType);
  Secret secret;
  EXPECT_TRUE(any.UnpackTo(&secret));
  return secret;
}

using SotwStream = grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>;

// Reads responses, ACKing each as Envoy does, until every name in `want` has arrived (or the
// stream's deadline passes).
std::map<std::string, Secret> ReadUntil(SotwStream& stream, DiscoveryRequest request,
                                        const std::vector<std::string>& want) {
  std::map<std::string, Secret> got;
  auto complete = [&] {
    for (const std::string& name : want) {
      if (!got.contains(name)) return false;
    }
    return true;
  };
  DiscoveryResponse response;
  while (!complete() && stream.Read(&response)) {
    for (const google::protobuf::Any& any : response.resources()) {
      Secret secret = Unpack(any);
      got[secret.name()] = secret;
    }
    request.set_version_info(response.version_info());
    request.set_response_nonce(response.nonce());
    EXPECT_TRUE(stream.Write(request));
  }
  return got;
}

// Verifies a served certificate as a TLS stack would: its key, its chain to the served
// bundle, its SPIFFE ID.
void ExpectCertificateFor(const Secret& secret, const std::string& bundle_pem,
                          const std::string& identity) {
  ASSERT_TRUE(secret.has_tls_certificate()) << secret.name();
  auto bundle = crypto::TrustBundle::FromPem(bundle_pem);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  auto key = crypto::PrivateKey::FromPem(secret.tls_certificate().private_key().inline_bytes());
  ASSERT_TRUE(key.ok()) << key.status();
  auto id = crypto::SpiffeId::Parse(identity);
  ASSERT_TRUE(id.ok());
  auto leaf = crypto::ValidateWorkloadCertificate(
      secret.tls_certificate().certificate_chain().inline_bytes(), *key, *bundle, *id, absl::Now());
  EXPECT_TRUE(leaf.ok()) << secret.name() << ": " << leaf.status();
}

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

class UpstreamInteropTest : public ::testing::Test {
 protected:
  std::string Bin() const { return NODEWARD_SDS_BINARY; }

  // Waits until `path` exists (a socket or the CA's files), or the process died.
  ::testing::AssertionResult Ready(Process& process, const std::string& path) {
    if (Eventually([&] { return std::filesystem::exists(path) || !process.Running(); },
                   absl::Seconds(15)) &&
        process.Running()) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "nodeward-sds did not come up (" << path << ")";
  }

  void WritePods() {
    std::filesystem::create_directories(dir_.Sub("config"));
    std::ofstream(dir_.Sub("config/pods.yaml"))
        << "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, uid: " << kWebUid
        << "}\nspec: {serviceAccountName: web, nodeName: node-1}\n---\n"
        << "apiVersion: v1\nkind: Pod\nmetadata: {name: api-1, namespace: shop, uid: "
           "11111111-2222-3333-4444-555555555555}\n"
        << "spec: {serviceAccountName: api, nodeName: node-1}\n";
  }

  // A key and CSR made by the openssl command line: `key` is "rsa:2048", "ec:P-384", ...
  std::string OpensslCsr(const std::string& key, const std::string& sans) {
    const std::string base = dir_.Sub(absl::StrCat("csr-", ++csrs_));
    std::string newkey = key;
    if (absl::StartsWith(key, "ec:")) {
      newkey = absl::StrCat("ec -pkeyopt ec_paramgen_curve:", key.substr(3));
    }
    const std::string command =
        absl::StrCat("openssl req -new -newkey ", newkey, " -nodes -keyout ", base, ".key -out ",
                     base, ".csr -subj / -addext subjectAltName=", sans, " >/dev/null 2>&1");
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return ReadAll(base + ".csr");
  }

  TempDir dir_;
  int csrs_ = 0;
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

// Point 4: with an upstream CA, ROOTCA is served from --ca-root-file at once, before any
// certificate was issued and even while the CA is unreachable; the certificates issued once
// it is up verify against that bundle.
TEST_F(UpstreamInteropTest, UpstreamModeServesRootcaBeforeAnyCertificate) {
  auto ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("ca"));
  ASSERT_TRUE(ca.ok()) << ca.status();
  const std::string root_file = dir_.Sub("ca/ca-cert.pem");
  std::ofstream(dir_.Sub("token")) << "node-token\n";
  std::ofstream(dir_.Sub("tokens")) << "node-token node-1\n";
  const std::string port = std::to_string(FreeLoopbackPort());
  const std::string socket = dir_.Sub("node.sock");
  Process node({Bin(), "--sds-socket=" + socket, "--ca-address=127.0.0.1:" + port,
                "--ca-root-file=" + root_file, "--ca-token-file=" + dir_.Sub("token"),
                "--ca-tls-server-name=istiod.istio-system.svc",
                std::string("--allowed-identity=") + kWeb});
  ASSERT_TRUE(Ready(node, socket));

  auto stub = Sds(socket);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  std::unique_ptr<SotwStream> stream = stub->StreamSecrets(&context);
  DiscoveryRequest request = Request({"ROOTCA"});
  ASSERT_TRUE(stream->Write(request));
  const absl::Time asked = absl::Now();
  std::map<std::string, Secret> got = ReadUntil(*stream, request, {"ROOTCA"});
  ASSERT_TRUE(got.contains("ROOTCA"));
  EXPECT_LT(absl::Now() - asked, absl::Seconds(5));
  EXPECT_EQ(got["ROOTCA"].validation_context().trusted_ca().inline_bytes(), ReadAll(root_file));

  // The CA comes up (istiod's names on its certificate, checked by host name): a certificate
  // follows, under the root already served.
  Process ca_process({Bin(), "--serve-ca=127.0.0.1:" + port, "--ca-dir=" + dir_.Sub("ca"),
                      "--ca-tokens-file=" + dir_.Sub("tokens"), "--sds-socket="});
  request = Request({"ROOTCA", kWeb});
  ASSERT_TRUE(stream->Write(request));
  got = ReadUntil(*stream, request, {kWeb});
  ASSERT_TRUE(got.contains(kWeb)) << "no certificate through the upstream CA";
  ExpectCertificateFor(got[kWeb], ReadAll(root_file), kWeb);
  context.TryCancel();
  stream->Finish();
}

// Points 2, 3 and 7: the CA as istio-agent and a stock gRPC client meet istiod. Its
// certificate passes host-name verification for istiod's name and for its IP; it signs the
// RSA 2048/3072/4096 and ECDSA P-256/P-384 CSRs of a workload authenticated by its
// service-account token through TokenReview, for that service account only; static node
// tokens go on working.
TEST_F(UpstreamInteropTest, CaPassesHostNameChecksAndSignsIstioAgentCsrs) {
  // The fake Kubernetes API server, with its own CA, reviewing one workload's token.
  auto api_ca = crypto::CertificateAuthority::LoadOrCreate(dir_.Sub("api-ca"));
  ASSERT_TRUE(api_ca.ok()) << api_ca.status();
  auto api_key = crypto::PrivateKey::GenerateP256();
  auto api_cert =
      (*api_ca)->IssueServerCertificate(*api_key, {"kubernetes.default.svc"}, absl::Hours(1));
  ASSERT_TRUE(api_cert.ok()) << api_cert.status();
  auto api_context = crypto::TlsContext::PlainServer({api_cert->chain_pem, *api_key->ToPem()});
  ASSERT_TRUE(api_context.ok());
  policy::testing::FakeApiServer api(*api_context, "ca-service-account-token");
  api.SetHandler("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                 [](const policy::testing::FakeApiServer::Request& request) {
                   const bool ours = request.authorization == "Bearer ca-service-account-token";
                   const bool web = absl::StrContains(request.body, "\"jwt-of-web\"") &&
                                    absl::StrContains(request.body, "\"istio-ca\"");
                   return policy::testing::FakeApiServer::Response{
                       ours ? 201 : 403,
                       web ? R"({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview",)"
                             R"("status":{"authenticated":true,"user":{"username":)"
                             R"("system:serviceaccount:shop:web","groups":[)"
                             R"("system:serviceaccounts"]},"audiences":["istio-ca"]}})"
                           : R"({"status":{"authenticated":false,"error":"invalid token"}})"};
                 });
  std::ofstream(dir_.Sub("kube-token")) << "ca-service-account-token\n";
  std::ofstream(dir_.Sub("kube-ca.crt")) << (*api_ca)->RootsPem();
  std::ofstream(dir_.Sub("tokens")) << "node-token node-1 " << kApi << "\n";

  const std::string port = std::to_string(FreeLoopbackPort());
  Process ca(
      {Bin(), "--serve-ca=127.0.0.1:" + port, "--ca-dir=" + dir_.Sub("ca"),
       "--ca-tokens-file=" + dir_.Sub("tokens"), "--ca-token-review",
       "--kube-token-file=" + dir_.Sub("kube-token"), "--kube-ca-file=" + dir_.Sub("kube-ca.crt"),
       "--sds-socket="},
      {"KUBERNETES_SERVICE_HOST=127.0.0.1", absl::StrCat("KUBERNETES_SERVICE_PORT=", api.port())});
  ASSERT_TRUE(Ready(ca, dir_.Sub("ca/ca-cert.pem")));
  ASSERT_TRUE(Eventually([&] { return Listening(std::stoi(port)); }, absl::Seconds(10)));
  const std::string roots = ReadAll(dir_.Sub("ca/ca-cert.pem"));
  auto bundle = crypto::TrustBundle::FromPem(roots);
  ASSERT_TRUE(bundle.ok());

  // A stock gRPC TLS client: verifies the chain and the host name of its target.
  auto stub_for = [&](const std::string& target_name) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = roots;
    grpc::ChannelArguments arguments;
    if (!target_name.empty()) arguments.SetSslTargetNameOverride(target_name);
    return IstioCertificateService::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + port, grpc::SslCredentials(ssl), arguments));
  };
  auto create = [&](IstioCertificateService::Stub& stub, const std::string& token,
                    const std::string& csr, IstioCertificateResponse* response) {
    IstioCertificateRequest request;
    request.set_csr(csr);
    request.set_validity_duration(3600);
    (*request.mutable_metadata()->mutable_fields())["ClusterID"].set_string_value("Kubernetes");
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    return stub.CreateCertificate(&context, request, response);
  };
  auto expect_issued_for = [&](const IstioCertificateResponse& response,
                               const std::string& identity) {
    ASSERT_GE(response.cert_chain_size(), 2);
    EXPECT_EQ(response.cert_chain(response.cert_chain_size() - 1), roots) << "root goes last";
    auto leaf = crypto::InspectCertificate(response.cert_chain(0));
    ASSERT_TRUE(leaf.ok()) << leaf.status();
    ASSERT_TRUE(leaf->spiffe_id.has_value());
    EXPECT_EQ(leaf->spiffe_id->ToString(), identity);
    EXPECT_TRUE(crypto::VerifySpiffeChain(response.cert_chain(0), *bundle).ok());
  };

  const std::string web_san = absl::StrCat("URI:", kWeb);
  for (const char* name : {"istiod.istio-system.svc", "istio-pilot.istio-system.svc", ""}) {
    SCOPED_TRACE(name);  // "": the IP 127.0.0.1 itself is checked
    auto stub = stub_for(name);
    IstioCertificateResponse response;
    grpc::Status status = create(*stub, "jwt-of-web", OpensslCsr("ec:P-256", web_san), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  {
    auto stub = stub_for("istiod.other.svc");
    IstioCertificateResponse response;
    EXPECT_EQ(create(*stub, "jwt-of-web", OpensslCsr("ec:P-256", web_san), &response).error_code(),
              grpc::StatusCode::UNAVAILABLE)
        << "a name the CA's certificate does not carry fails verification";
  }

  auto stub = stub_for("istiod.istio-system.svc");
  // istio-agent's default key is RSA 2048; the others are what operators set.
  for (const char* key : {"rsa:2048", "rsa:3072", "rsa:4096", "ec:P-384"}) {
    SCOPED_TRACE(key);
    IstioCertificateResponse response;
    grpc::Status status = create(*stub, "jwt-of-web", OpensslCsr(key, web_san), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  {
    // Names istiod would not certify are ignored; the identity is the token's.
    IstioCertificateResponse response;
    grpc::Status status =
        create(*stub, "jwt-of-web",
               OpensslCsr("rsa:2048", web_san + ",DNS:web.shop.svc,IP:10.1.2.3"), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kWeb);
  }
  struct Refusal {
    const char* token;
    const char* key;
    std::string sans;
    grpc::StatusCode code;
  };
  for (const Refusal& refusal : std::vector<Refusal>{
           // A CSR asking for another identity than the token's.
           {"jwt-of-web", "ec:P-256", absl::StrCat("URI:", kVault),
            grpc::StatusCode::PERMISSION_DENIED},
           // A key too weak to sign.
           {"jwt-of-web", "rsa:1024", web_san, grpc::StatusCode::INVALID_ARGUMENT},
           // A token the API server does not authenticate.
           {"jwt-of-nobody", "ec:P-256", web_san, grpc::StatusCode::UNAUTHENTICATED},
           // A node token asking beyond what its line allows.
           {"node-token", "ec:P-256", web_san, grpc::StatusCode::PERMISSION_DENIED}}) {
    SCOPED_TRACE(absl::StrCat(refusal.token, " ", refusal.key, " ", refusal.sans));
    IstioCertificateResponse response;
    EXPECT_EQ(
        create(*stub, refusal.token, OpensslCsr(refusal.key, refusal.sans), &response).error_code(),
        refusal.code);
  }
  {
    // A node token for what it may ask, with an RSA key.
    IstioCertificateResponse response;
    grpc::Status status =
        create(*stub, "node-token", OpensslCsr("rsa:2048", absl::StrCat("URI:", kApi)), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    expect_issued_for(response, kApi);
  }
}

}  // namespace
}  // namespace nodeward::sds
