// The SDS server, the agent's certificate cache and the CA service talking real gRPC: Unix
// sockets in a temporary directory (and TLS on loopback for the CA), no mocked transport.
#include <sys/stat.h>

#include <atomic>
#include <deque>
#include <fstream>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "policy/testing/fake_api_server.h"
#include "sds/certificate_cache.h"
#include "sds/sds_test_util.h"
#include "sds/token_review.h"

namespace nodeward::sds {
namespace {

using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;
using testing::CacheOptions;
using testing::Eventually;
using testing::Id;
using testing::IssueDirectly;
using testing::MakeCa;
using testing::SdsServerFixture;
using testing::ShortLived;
using testing::TempDir;

std::unique_ptr<envoy::service::secret::v3::SecretDiscoveryService::Stub> RawStub(
    const std::string& socket) {
  return envoy::service::secret::v3::SecretDiscoveryService::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

TEST(SdsEndToEndTest, IssuesAndRotatesShortLivedCertificates) {
  TempDir dir;
  const auto alice = Id("shop", "alice");
  auto signer = std::make_shared<LocalCaSigner>(MakeCa(dir.Sub("ca")));
  SdsServerFixture fixture(signer, dir.Sub("sds.sock"), {alice}, ShortLived(absl::Seconds(3)));
  ASSERT_TRUE(fixture.server->Start().ok());

  struct stat info;
  ASSERT_EQ(::stat(dir.Sub("sds.sock").c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0660u);

  CertificateCache cache(CacheOptions(dir.Sub("sds.sock")));
  std::atomic<int> certificate_changes{0};
  cache.AddListener([&](const CertificateChange& change) {
    if (change.kind == CertificateChange::Kind::kCertificate && change.identity == alice) {
      ++certificate_changes;
    }
  });
  cache.Start();
  cache.Acquire(alice);
  auto first = cache.WaitForCredentials(alice, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->leaf.spiffe_id.has_value());
  EXPECT_EQ(*first->leaf.spiffe_id, alice);
  EXPECT_LE(first->leaf.not_after, absl::Now() + absl::Seconds(3));
  // The material is usable as is: the agent builds its mesh context from it.
  EXPECT_TRUE(crypto::TlsContext::MeshServer(first->credentials, first->bundle).ok());

  // Rotation at half of a 3 s lifetime: two new certificates within ~3.5 s, each pushed
  // before the previous one expired.
  absl::flat_hash_set<std::string> serials = {first->leaf.serial_hex};
  absl::Time deadline = absl::Now() + absl::Seconds(4);
  while (absl::Now() < deadline && serials.size() < 3) {
    auto current = cache.Get(alice);
    ASSERT_TRUE(current.ok()) << "an identity went without a valid certificate: "
                              << current.status();
    serials.insert(current->leaf.serial_hex);
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_GE(serials.size(), 3u);
  EXPECT_GE(certificate_changes.load(), 3);
  EXPECT_EQ(cache.rejected_secrets(), 0);

  auto status = cache.Status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].state, IdentityStatus::State::kReady);
  EXPECT_FALSE(status[0].serial_hex.empty());
  EXPECT_GT(status[0].next_refresh, status[0].last_update);
  EXPECT_LT(status[0].next_refresh, status[0].not_after);
  cache.Stop();
}

// A CA that can be made to fail, to see renewals retried and the old certificate kept.
class FlakySigner : public CertificateSigner {
 public:
  explicit FlakySigner(std::shared_ptr<CertificateSigner> inner) : inner_(std::move(inner)) {}
  std::atomic<bool> failing{false};
  std::atomic<int> refused{0};
  absl::StatusOr<SignedChain> Sign(const std::string& csr_pem, const SpiffeId& identity,
                                   absl::Duration lifetime) override {
    if (failing) {
      ++refused;
      return absl::UnavailableError("CA is down");
    }
    return inner_->Sign(csr_pem, identity, lifetime);
  }
  std::optional<std::string> KnownRoots() override { return inner_->KnownRoots(); }
  absl::StatusOr<bool> Reload() override { return false; }

 private:
  std::shared_ptr<CertificateSigner> inner_;
};

TEST(SdsEndToEndTest, FailedRenewalsAreRetriedAndNeverServeAnExpiredCertificate) {
  TempDir dir;
  const auto gina = Id("shop", "gina");
  auto flaky =
      std::make_shared<FlakySigner>(std::make_shared<LocalCaSigner>(MakeCa(dir.Sub("ca"))));
  SdsServerFixture fixture(flaky, dir.Sub("sds.sock"), {gina}, ShortLived(absl::Seconds(3)));
  ASSERT_TRUE(fixture.server->Start().ok());
  CertificateCache cache(CacheOptions(dir.Sub("sds.sock")));
  std::atomic<int> expirations{0};
  cache.AddListener([&](const CertificateChange& change) {
    if (change.kind == CertificateChange::Kind::kExpired) ++expirations;
  });
  cache.Start();
  cache.Acquire(gina);
  auto first = cache.WaitForCredentials(gina, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();

  // The CA goes down: renewal (due at about 1.5 s) fails and is retried with backoff, while
  // the certificate in hand stays in use.
  flaky->failing = true;
  ASSERT_TRUE(Eventually([&] { return flaky->refused.load() >= 3; }, absl::Seconds(3)));
  auto kept = cache.Get(gina);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->leaf.serial_hex, first->leaf.serial_hex);
  auto server_status = fixture.manager->Status();
  ASSERT_EQ(server_status.size(), 1u);
  EXPECT_NE(server_status[0].last_error.find("CA is down"), std::string::npos);

  // The CA comes back before expiry: the next retry succeeds.
  flaky->failing = false;
  ASSERT_TRUE(Eventually(
      [&] {
        auto now = cache.Get(gina);
        return now.ok() && now->leaf.serial_hex != first->leaf.serial_hex;
      },
      absl::Seconds(2)));

  // Down again for good: once the certificate expires the cache refuses to hand it out.
  flaky->failing = true;
  auto last = cache.Get(gina);
  ASSERT_TRUE(last.ok());
  ASSERT_TRUE(Eventually([&] { return expirations.load() >= 1; }, absl::Seconds(5)));
  auto expired = cache.Get(gina);
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.status().message().find("expired"), absl::string_view::npos);
  EXPECT_GE(absl::Now(), last->leaf.not_after);
  EXPECT_EQ(cache.Status()[0].state, IdentityStatus::State::kExpired);
  cache.Stop();
}

TEST(SdsEndToEndTest, ClientSurvivesServerRestart) {
  TempDir dir;
  const auto bob = Id("shop", "bob");
  const std::string socket = dir.Sub("run/sds.sock");
  auto signer = std::make_shared<LocalCaSigner>(MakeCa(dir.Sub("ca")));
  auto fixture = std::make_unique<SdsServerFixture>(signer, socket, std::vector{bob},
                                                    ShortLived(absl::Minutes(10)));
  ASSERT_TRUE(fixture->server->Start().ok());

  CertificateCache cache(CacheOptions(socket));
  cache.Start();
  cache.Acquire(bob);
  auto before = cache.WaitForCredentials(bob, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(before.ok()) << before.status();

  fixture.reset();  // server gone: the cache keeps serving the certificate it has
  absl::SleepFor(absl::Milliseconds(300));
  auto during = cache.Get(bob);
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(during->leaf.serial_hex, before->leaf.serial_hex);

  fixture = std::make_unique<SdsServerFixture>(signer, socket, std::vector{bob},
                                               ShortLived(absl::Minutes(10)));
  ASSERT_TRUE(fixture->server->Start().ok());
  // The restarted server holds no key: it issues a new certificate, which reaches the client.
  ASSERT_TRUE(Eventually(
      [&] {
        auto now = cache.Get(bob);
        return now.ok() && now->leaf.serial_hex != before->leaf.serial_hex;
      },
      absl::Seconds(10)));
  EXPECT_GE(cache.sds_connections(), 2);
  EXPECT_EQ(fixture->server->active_streams(), 1);
  cache.Stop();
}

TEST(SdsEndToEndTest, RefusesIdentitiesNotScheduledOnTheNode) {
  TempDir dir;
  const auto allowed = Id("shop", "allowed");
  const auto stranger = Id("bank", "vault");
  const std::string socket = dir.Sub("sds.sock");
  auto signer = std::make_shared<LocalCaSigner>(MakeCa(dir.Sub("ca")));
  SdsServerFixture fixture(signer, socket, {allowed}, ShortLived(absl::Minutes(10)));
  ASSERT_TRUE(fixture.server->Start().ok());

  // Raw stream, as any Envoy-compatible client: the refused name is not served, the others
  // on the same stream are, and the stream stays open.
  auto stub = RawStub(socket);
  {
    grpc::ClientContext context;
    auto stream = stub->StreamSecrets(&context);
    DiscoveryRequest request;
    request.set_type_url(std::string(kSecretTypeUrl));
    request.add_resource_names(stranger.ToString());
    request.add_resource_names("not-a-spiffe-id");
    request.add_resource_names(allowed.ToString());
    request.add_resource_names("ROOTCA");
    ASSERT_TRUE(stream->Write(request));
    absl::flat_hash_set<std::string> served;
    DiscoveryResponse response;
    while (served.size() < 2 && stream->Read(&response)) {
      for (const auto& resource : response.resources()) {
        auto secret = UnpackSecret(resource);
        ASSERT_TRUE(secret.ok()) << secret.status();
        served.insert(std::holds_alternative<ReceivedBundle>(*secret)
                          ? std::string(kRootCaResourceName)
                          : std::get<ReceivedCertificate>(*secret).name);
      }
      DiscoveryRequest ack = request;
      ack.set_response_nonce(response.nonce());
      ack.set_version_info(response.version_info());
      ASSERT_TRUE(stream->Write(ack));
    }
    EXPECT_EQ(served, (absl::flat_hash_set<std::string>{"ROOTCA", allowed.ToString()}));
    SdsServerStats stats = fixture.server->Stats();
    EXPECT_EQ(stats.resource_errors[static_cast<int>(ResourceError::kRefused)], 1);
    EXPECT_EQ(stats.resource_errors[static_cast<int>(ResourceError::kInvalidName)], 1);
    EXPECT_EQ(fixture.server->active_streams(), 1);
    context.TryCancel();
    stream->Finish();
  }
  {
    // FetchSecrets, a single answer, carries the refusal: PERMISSION_DENIED with an ErrorInfo
    // naming the resource.
    grpc::ClientContext context;
    DiscoveryRequest request;
    request.add_resource_names(stranger.ToString());
    DiscoveryResponse response;
    grpc::Status status = stub->FetchSecrets(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(status.error_message().find(stranger.ToString()), std::string::npos);
    google::rpc::Status detail;
    ASSERT_TRUE(detail.ParseFromString(status.error_details()));
    ASSERT_EQ(detail.details_size(), 1);
    google::rpc::ErrorInfo info;
    ASSERT_TRUE(detail.details(0).UnpackTo(&info));
    EXPECT_EQ(info.reason(), kReasonIdentityNotAllowed);
    EXPECT_EQ(info.metadata().at("resource"), stranger.ToString());
  }
  {
    grpc::ClientContext context;
    DiscoveryRequest request;
    request.add_resource_names("not-a-spiffe-id");
    DiscoveryResponse response;
    EXPECT_EQ(stub->FetchSecrets(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    // FetchSecrets of an allowed identity and the bundle works.
    grpc::ClientContext context;
    DiscoveryRequest request;
    request.add_resource_names(allowed.ToString());
    request.add_resource_names("ROOTCA");
    DiscoveryResponse response;
    ASSERT_TRUE(stub->FetchSecrets(&context, request, &response).ok());
    ASSERT_EQ(response.resources_size(), 2);
    EXPECT_TRUE(std::holds_alternative<ReceivedCertificate>(*UnpackSecret(response.resources(0))));
    EXPECT_TRUE(std::holds_alternative<ReceivedBundle>(*UnpackSecret(response.resources(1))));
  }

  // The cache drops only the refused identity and keeps the allowed one served.
  CertificateCache cache(CacheOptions(socket));
  cache.Start();
  cache.Acquire(stranger);
  cache.Acquire(allowed);
  ASSERT_TRUE(cache.WaitForCredentials(allowed, absl::Now() + absl::Seconds(5)).ok());
  ASSERT_TRUE(Eventually(
      [&] {
        for (const IdentityStatus& status : cache.Status()) {
          if (status.identity == stranger) return status.state == IdentityStatus::State::kRefused;
        }
        return false;
      },
      absl::Seconds(5)));
  auto refused = cache.Get(stranger);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("refused"), absl::string_view::npos);
  cache.Stop();
}

// An SDS server under the test's control: pushes what it is told to, records every request.
class ScriptedSdsService final
    : public envoy::service::secret::v3::SecretDiscoveryService::Service {
 public:
  void Push(DiscoveryResponse response) {
    absl::MutexLock lock(&mu_);
    to_send_.push_back(std::move(response));
  }
  std::vector<DiscoveryRequest> Requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

  grpc::Status StreamSecrets(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) override {
    std::atomic<bool> done{false};
    std::thread reader([&] {
      DiscoveryRequest request;
      while (stream->Read(&request)) {
        absl::MutexLock lock(&mu_);
        requests_.push_back(request);
      }
      done = true;
    });
    while (!done && !context->IsCancelled()) {
      std::optional<DiscoveryResponse> next;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(
            absl::Condition(
                +[](std::deque<DiscoveryResponse>* queue) { return !queue->empty(); }, &to_send_),
            absl::Milliseconds(50));
        if (!to_send_.empty()) {
          next = std::move(to_send_.front());
          to_send_.pop_front();
        }
      }
      if (next.has_value() && !stream->Write(*next)) break;
    }
    context->TryCancel();
    reader.join();
    return grpc::Status::OK;
  }

 private:
  absl::Mutex mu_;
  std::deque<DiscoveryResponse> to_send_ ABSL_GUARDED_BY(mu_);
  std::vector<DiscoveryRequest> requests_ ABSL_GUARDED_BY(mu_);
};

DiscoveryResponse Response(const SecretProto& secret, const std::string& version,
                           const std::string& nonce) {
  DiscoveryResponse response;
  response.set_type_url(std::string(kSecretTypeUrl));
  response.set_version_info(version);
  response.set_nonce(nonce);
  *response.add_resources() = PackSecret(secret);
  return response;
}

TEST(SdsEndToEndTest, CorruptSecretIsNackedAndTheLastGoodKept) {
  TempDir dir;
  const auto carol = Id("shop", "carol");
  auto ca = MakeCa(dir.Sub("ca"));
  auto other_ca = MakeCa(dir.Sub("other-ca"));
  const std::string socket = dir.Sub("sds.sock");
  ScriptedSdsService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  CertificateCache cache(CacheOptions(socket));
  cache.Start();
  cache.Acquire(carol);
  ASSERT_TRUE(Eventually(
      [&] {
        for (const auto& request : service.Requests()) {
          if (request.resource_names_size() == 2) return true;
        }
        return false;
      },
      absl::Seconds(5)));

  const crypto::TlsCredentials good = IssueDirectly(*ca, carol);
  service.Push(Response(MakeValidationContextSecret(ca->RootsPem()), "roots-1", "n1"));
  service.Push(Response(
      MakeTlsCertificateSecret(carol.ToString(), good.cert_chain_pem, good.private_key_pem),
      "good-1", "n2"));
  auto kept = cache.WaitForCredentials(carol, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(kept.ok()) << kept.status();
  const std::string good_serial = kept->leaf.serial_hex;

  // Four corruptions: a key that does not match, a chain from an untrusted CA, a certificate
  // for another identity, and bytes that are not PEM at all.
  const crypto::TlsCredentials other_key = IssueDirectly(*ca, carol);
  const crypto::TlsCredentials untrusted = IssueDirectly(*other_ca, carol);
  const crypto::TlsCredentials wrong_identity = IssueDirectly(*ca, Id("shop", "mallory"));
  service.Push(Response(
      MakeTlsCertificateSecret(carol.ToString(), good.cert_chain_pem, other_key.private_key_pem),
      "bad-key", "n3"));
  service.Push(Response(MakeTlsCertificateSecret(carol.ToString(), untrusted.cert_chain_pem,
                                                 untrusted.private_key_pem),
                        "bad-ca", "n4"));
  service.Push(Response(MakeTlsCertificateSecret(carol.ToString(), wrong_identity.cert_chain_pem,
                                                 wrong_identity.private_key_pem),
                        "bad-san", "n5"));
  service.Push(Response(MakeTlsCertificateSecret(carol.ToString(),
                                                 "-----BEGIN CERTIFICATE-----\n"
                                                 "garbage\n-----END CERTIFICATE-----\n",
                                                 "junk"),
                        "bad-pem", "n6"));
  // And a corrupt bundle, which must not replace the good one.
  service.Push(Response(MakeValidationContextSecret("not a root"), "roots-bad", "n7"));

  ASSERT_TRUE(Eventually(
      [&] {
        int nacks = 0;
        for (const auto& request : service.Requests()) {
          if (request.has_error_detail()) ++nacks;
        }
        return nacks == 5;
      },
      absl::Seconds(5)));
  for (const auto& request : service.Requests()) {
    if (request.response_nonce() == "n2") {
      EXPECT_FALSE(request.has_error_detail());  // the ACK of the good certificate
      EXPECT_EQ(request.version_info(), "good-1");
    }
    if (request.response_nonce() >= "n3" && request.response_nonce() <= "n7") {
      ASSERT_TRUE(request.has_error_detail()) << request.response_nonce();
      EXPECT_NE(request.error_detail().code(), 0);
      EXPECT_FALSE(request.error_detail().message().empty());
      // A NACK names the version still in use.
      EXPECT_EQ(request.version_info(), "good-1");
    }
  }
  auto still = cache.Get(carol);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->leaf.serial_hex, good_serial);
  EXPECT_EQ(cache.rejected_secrets(), 5);
  auto bundle = cache.Bundle();
  ASSERT_TRUE(bundle.ok());
  EXPECT_EQ(bundle->size(), 1u);
  auto status = cache.Status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_NE(status[0].last_error.find("rejected"), std::string::npos);
  cache.Stop();
  server->Shutdown(std::chrono::system_clock::now());
}

TEST(SdsEndToEndTest, RootRotationKeepsBothRootsTrustedDuringTheOverlap) {
  TempDir dir;
  const auto dave = Id("shop", "dave");
  auto old_ca = MakeCa(dir.Sub("old-ca"));
  auto new_ca = MakeCa(dir.Sub("new-ca"));
  auto signer = std::make_shared<LocalCaSigner>(old_ca);
  SdsServerFixture fixture(signer, dir.Sub("sds.sock"), {dave}, ShortLived(absl::Seconds(4)));
  ASSERT_TRUE(fixture.server->Start().ok());
  CertificateCache cache(CacheOptions(dir.Sub("sds.sock")));
  cache.Start();
  cache.Acquire(dave);
  auto before = cache.WaitForCredentials(dave, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(before.ok()) << before.status();
  auto old_roots = crypto::TrustBundle::FromPem(old_ca->RootsPem());
  auto new_roots = crypto::TrustBundle::FromPem(new_ca->RootsPem());
  ASSERT_TRUE(old_roots.ok() && new_roots.ok());

  signer->Replace(new_ca);
  ASSERT_TRUE(fixture.manager->OnSignerChanged().ok());

  // Both roots are pushed, then the certificate moves to the new root.
  ASSERT_TRUE(Eventually(
      [&] {
        auto current = cache.Get(dave);
        return current.ok() && current->bundle.size() == 2 &&
               crypto::VerifySpiffeChain(current->credentials.cert_chain_pem, *new_roots).ok();
      },
      absl::Seconds(5)));
  auto overlap = cache.Get(dave);
  ASSERT_TRUE(overlap.ok());
  // During the overlap a peer still holding a certificate from the old root is trusted, and
  // so is one from the new root.
  EXPECT_TRUE(crypto::VerifySpiffeChain(before->credentials.cert_chain_pem, overlap->bundle).ok());
  EXPECT_TRUE(crypto::VerifySpiffeChain(overlap->credentials.cert_chain_pem, overlap->bundle).ok());
  EXPECT_FALSE(crypto::VerifySpiffeChain(overlap->credentials.cert_chain_pem, *old_roots).ok());

  // Once the last certificate from the old root has expired, the old root leaves the bundle.
  ASSERT_TRUE(Eventually(
      [&] {
        auto bundle = cache.Bundle();
        return bundle.ok() && bundle->size() == 1;
      },
      absl::Seconds(8)));
  auto after = cache.Get(dave);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(crypto::VerifySpiffeChain(after->credentials.cert_chain_pem, *new_roots).ok());
  EXPECT_FALSE(crypto::VerifySpiffeChain(before->credentials.cert_chain_pem, after->bundle).ok());
  cache.Stop();
}

TEST(SdsEndToEndTest, TwoHundredIdentitiesAtOnceAreAllServed) {
  TempDir dir;
  std::vector<SpiffeId> identities;
  for (int i = 0; i < 200; ++i)
    identities.push_back(Id("ns" + std::to_string(i % 7), "sa" + std::to_string(i)));
  auto signer = std::make_shared<LocalCaSigner>(MakeCa(dir.Sub("ca")));
  SdsServerFixture fixture(signer, dir.Sub("sds.sock"), identities, ShortLived(absl::Minutes(10)));
  ASSERT_TRUE(fixture.server->Start().ok());
  CertificateCacheOptions options = CacheOptions(dir.Sub("sds.sock"));
  options.max_outstanding_requests = 32;
  CertificateCache cache(options);
  cache.Start();
  absl::Time started = absl::Now();
  for (const auto& identity : identities) cache.Acquire(identity);
  // Never more than the bound is outstanding at once; the rest wait their turn.
  for (int sample = 0; sample < 5; ++sample) {
    int requested = 0;
    for (const IdentityStatus& status : cache.Status()) {
      if (status.state == IdentityStatus::State::kRequested) ++requested;
    }
    EXPECT_LE(requested, 32);
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::flat_hash_set<std::string> serials;
  for (const auto& identity : identities) {
    auto credentials = cache.WaitForCredentials(identity, started + absl::Seconds(30));
    ASSERT_TRUE(credentials.ok()) << identity.ToString() << ": " << credentials.status();
    EXPECT_EQ(*credentials->leaf.spiffe_id, identity);
    serials.insert(credentials->leaf.serial_hex);
  }
  EXPECT_EQ(serials.size(), 200u);
  EXPECT_EQ(fixture.manager->issued_count(), 200);
  std::cerr << "200 identities served in " << absl::FormatDuration(absl::Now() - started) << "\n";

  // Released identities leave after the grace period.
  for (const auto& identity : identities) cache.Release(identity);
  ASSERT_TRUE(Eventually([&] { return cache.Status().empty(); }, absl::Seconds(5)));
  cache.Stop();
}

}  // namespace
}  // namespace nodeward::sds
