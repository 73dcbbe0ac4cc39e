// What the tests of nodeward-sds from outside share: clients built from Envoy's and Istio's own
// API definitions (proto/ here, with upstream's packages, messages and field numbers, fields
// nodeward does not use included), never from nodeward's, and the binary as a child process.
#pragma once

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

namespace nodeward::sds::interop {

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

inline constexpr char kSecretType[] =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
inline constexpr char kWebUid[] = "7d3c5a10-2b4e-4f6a-9c8d-1e2f3a4b5c6d";
inline constexpr char kWeb[] = "spiffe://cluster.local/ns/shop/sa/web";
inline constexpr char kApi[] = "spiffe://cluster.local/ns/shop/sa/api";
inline constexpr char kVault[] = "spiffe://cluster.local/ns/bank/sa/vault";

// Whether something accepts TCP connections on the loopback port.
inline bool Listening(int port) {
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
inline std::string Scrape(int port) {
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

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// As Envoy configured by Istio fills it.
inline envoy::config::core::v3::Node EnvoyNode() {
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

inline DiscoveryRequest Request(const std::vector<std::string>& names) {
  DiscoveryRequest request;
  request.set_type_url(kSecretType);
  *request.mutable_node() = EnvoyNode();
  for (const std::string& name : names) request.add_resource_names(name);
  return request;
}

inline std::unique_ptr<SecretDiscoveryService::Stub> Sds(const std::string& socket) {
  return SecretDiscoveryService::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

inline Secret Unpack(const google::protobuf::Any& any) {
  EXPECT_EQ(any.type_url(), kSecretType);
  Secret secret;
  EXPECT_TRUE(any.UnpackTo(&secret));
  return secret;
}

using SotwStream = grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>;

// Reads responses, ACKing each as Envoy does, until every name in `want` has arrived (or the
// stream's deadline passes).
inline std::map<std::string, Secret> ReadUntil(SotwStream& stream, DiscoveryRequest request,
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
inline void ExpectCertificateFor(const Secret& secret, const std::string& bundle_pem,
                                 const std::string& identity) {
  ASSERT_TRUE(secret.has_tls_certificate()) << secret.name();
  auto bundle = crypto::TrustBundle::FromPem(bundle_pem);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  auto key = crypto::PrivateKey::FromPem(secret.tls_certificate().private_key().inline_bytes());
  ASSERT_TRUE(key.ok()) << key.status();
  auto id = SpiffeId::Parse(identity);
  ASSERT_TRUE(id.ok());
  auto leaf = crypto::ValidateWorkloadCertificate(
      secret.tls_certificate().certificate_chain().inline_bytes(), *key, *bundle, *id, absl::Now());
  EXPECT_TRUE(leaf.ok()) << secret.name() << ": " << leaf.status();
}

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

}  // namespace nodeward::sds::interop
