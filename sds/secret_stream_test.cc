// The protocol core of an SDS stream, without gRPC or sockets: a real IdentityManager with the
// built-in CA behind it, requests applied and responses taken one by one.
#include "sds/secret_stream.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "sds/certificate_signer.h"
#include "sds/sds_test_util.h"

namespace nodeward::sds {
namespace {

using testing::Id;
using testing::MakeCa;
using testing::ShortLived;
using testing::TempDir;

// Which identities this node may hold, changed by the test.
class SetAuthorizer : public IdentityAuthorizer {
 public:
  void Allow(const SpiffeId& identity) {
    absl::MutexLock lock(&mu_);
    allowed_.insert(identity);
  }
  void Withdraw(const SpiffeId& identity) {
    absl::MutexLock lock(&mu_);
    allowed_.erase(identity);
  }
  absl::Status Authorize(const SpiffeId& identity) override {
    absl::MutexLock lock(&mu_);
    if (allowed_.contains(identity)) return absl::OkStatus();
    return absl::PermissionDeniedError(absl::StrCat(identity.ToString(), " has no pod here"));
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<SpiffeId> allowed_ ABSL_GUARDED_BY(mu_);
};

class FixedResolver : public WorkloadResolver {
 public:
  absl::StatusOr<Workload> WorkloadOf(const PeerCredentials&) override {
    if (!workload.has_value()) return absl::NotFoundError("not in a pod");
    return *workload;
  }
  std::optional<Workload> workload;
};

class SecretStreamTest : public ::testing::Test {
 protected:
  SecretStreamTest()
      : signer_(std::make_shared<LocalCaSigner>(MakeCa(dir_.Sub("ca")))),
        manager_(signer_, ShortLived(absl::Minutes(10))) {
    authorizer_.Allow(web_);
    authorizer_.Allow(api_);
  }

  SdsCaller WebPod(CallerScope scope = CallerScope::kNode) {
    SdsCaller caller;
    caller.peer = {4242, 1337, 1337};
    caller.scope = scope;
    caller.workload = web_;
    caller.pod = "shop/web-1";
    return caller;
  }

  SecretStream Stream(SdsCaller caller,
                      SecretStream::Variant variant = SecretStream::Variant::kStateOfTheWorld) {
    return SecretStream(variant, &manager_, &authorizer_, std::move(caller), &counters_,
                        &resolver_);
  }

  // Waits for the manager to hold a certificate for each of `identities`, then drains the
  // stream's pending responses, as the server does after a publication.
  std::vector<SecretUpdate> Drain(SecretStream& stream,
                                  const std::vector<SpiffeId>& identities = {}) {
    for (const SpiffeId& identity : identities) {
      auto issued = manager_.WaitForCertificate(identity, absl::Now() + absl::Seconds(10));
      EXPECT_TRUE(issued.ok()) << issued.status();
      stream.CertificateChanged(identity);
    }
    std::vector<SecretUpdate> out;
    while (true) {
      const std::string nonce = absl::StrCat("n", ++nonce_);
      std::optional<SecretUpdate> update = stream.Next(nonce);
      if (!update.has_value()) return out;
      last_nonce_ = nonce;
      out.push_back(*std::move(update));
    }
  }

  std::int64_t Errors(ResourceError kind) {
    return counters_.resource_errors[static_cast<std::size_t>(kind)].load();
  }

  int Watchers(const SpiffeId& identity) {
    for (const ManagedIdentityStatus& status : manager_.Status()) {
      if (status.identity == identity) return status.watchers;
    }
    return 0;
  }

  TempDir dir_;
  const SpiffeId web_ = Id("shop", "web");
  const SpiffeId api_ = Id("shop", "api");
  const SpiffeId vault_ = Id("bank", "vault");
  std::shared_ptr<LocalCaSigner> signer_;
  IdentityManager manager_;
  SetAuthorizer authorizer_;
  SdsCounters counters_;
  FixedResolver resolver_;
  int nonce_ = 0;
  std::string last_nonce_;  // of the last response Drain took
};

TEST_F(SecretStreamTest, ServesWhatItCanAndCountsTheRest) {
  SecretStream stream = Stream(WebPod());
  stream.Replace({"default", "ROOTCA", api_.ToString(), vault_.ToString(), "bogus", "default"});
  std::vector<SecretUpdate> sent = Drain(stream, {web_, api_});
  ASSERT_EQ(sent.size(), 3u);
  // The bundle first, then the caller's own certificate under the name it asked for.
  EXPECT_EQ(sent[0].name, "ROOTCA");
  ASSERT_TRUE(sent[0].secret.has_value());
  EXPECT_TRUE(sent[0].secret->has_validation_context());
  absl::flat_hash_set<std::string> names = {sent[1].name, sent[2].name};
  EXPECT_EQ(names, (absl::flat_hash_set<std::string>{"default", api_.ToString()}));
  for (const SecretUpdate& update : sent) {
    if (update.name != "default") continue;
    auto leaf = crypto::InspectCertificate(
        update.secret->tls_certificate().certificate_chain().inline_bytes());
    ASSERT_TRUE(leaf.ok());
    EXPECT_EQ(*leaf->spiffe_id, web_);
    EXPECT_EQ(update.secret->name(), "default");
  }
  EXPECT_EQ(Errors(ResourceError::kRefused), 1);
  EXPECT_EQ(Errors(ResourceError::kInvalidName), 1);

  // The same set again (every ACK repeats it) changes and counts nothing.
  stream.Replace({"default", "ROOTCA", api_.ToString(), vault_.ToString(), "bogus"});
  EXPECT_TRUE(Drain(stream).empty());
  EXPECT_EQ(Errors(ResourceError::kRefused), 1);

  // Dropping a name gives up the interest in its identity.
  EXPECT_EQ(Watchers(api_), 1);
  stream.Replace({"default", "ROOTCA"});
  EXPECT_EQ(Watchers(api_), 0);
  EXPECT_EQ(Watchers(web_), 1);
}

TEST_F(SecretStreamTest, DefaultWaitsForTheCallersPodToBeKnown) {
  SdsCaller stranger = WebPod();
  stranger.workload.reset();
  stranger.pod.clear();
  stranger.unattributed_reason = "pid 4242: its cgroups name no Kubernetes pod";
  SecretStream stream = Stream(stranger);
  stream.Replace({"ROOTCA", "default"});
  std::vector<SecretUpdate> sent = Drain(stream);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "ROOTCA");
  EXPECT_EQ(Errors(ResourceError::kUnknownCaller), 1);
  EXPECT_EQ(Watchers(web_), 0);

  // Still unknown: nothing changes, nothing is counted again.
  stream.Recheck();
  EXPECT_TRUE(Drain(stream).empty());
  EXPECT_EQ(Errors(ResourceError::kUnknownCaller), 1);

  // The inventory learnt the pod: "default" is served from the next recheck on.
  resolver_.workload = WorkloadResolver::Workload{web_, "shop/web-1"};
  stream.Recheck();
  sent = Drain(stream, {web_});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "default");
  EXPECT_EQ(stream.caller().pod, "shop/web-1");
}

TEST_F(SecretStreamTest, WorkloadSocketServesOnlyTheCallersOwnIdentity) {
  SecretStream stream = Stream(WebPod(CallerScope::kWorkload));
  stream.Replace({"ROOTCA", "default", web_.ToString(), api_.ToString()});
  std::vector<SecretUpdate> sent = Drain(stream, {web_});
  absl::flat_hash_set<std::string> names;
  for (const SecretUpdate& update : sent) names.insert(update.name);
  EXPECT_EQ(names, (absl::flat_hash_set<std::string>{"ROOTCA", "default", web_.ToString()}));
  EXPECT_EQ(Errors(ResourceError::kOutsideScope), 1);
  EXPECT_EQ(Watchers(api_), 0);
}

TEST_F(SecretStreamTest, RefusalsAreAskedAgainAndWithdrawalsStopThePushes) {
  SecretStream stream = Stream(WebPod());
  stream.Replace({"ROOTCA", vault_.ToString()});
  EXPECT_EQ(Drain(stream).size(), 1u);  // ROOTCA only
  authorizer_.Allow(vault_);
  stream.Recheck();
  std::vector<SecretUpdate> sent = Drain(stream, {vault_});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, vault_.ToString());

  // Withdrawn from the node: the next certificate is not pushed, and interest is given up.
  authorizer_.Withdraw(vault_);
  signer_->Replace(MakeCa(dir_.Sub("other-ca")));
  ASSERT_TRUE(manager_.OnSignerChanged().ok());
  ASSERT_TRUE(testing::Eventually(
      [&] {
        auto current = manager_.Current(vault_);
        return current != nullptr && current->version != sent[0].version;
      },
      absl::Seconds(10)));
  stream.CertificateChanged(vault_);
  stream.BundleChanged();
  sent = Drain(stream);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "ROOTCA");
  EXPECT_EQ(Watchers(vault_), 0);
  EXPECT_EQ(Errors(ResourceError::kRefused), 2);
}

TEST_F(SecretStreamTest, NackedVersionIsNotSentAgainButTheNextIs) {
  SecretStream stream = Stream(WebPod());
  stream.Replace({"default"});
  std::vector<SecretUpdate> sent = Drain(stream, {web_});
  ASSERT_EQ(sent.size(), 1u);
  google::rpc::Status rejected;
  rejected.set_code(3);
  rejected.set_message(std::string(4096, 'z'));  // echoed cut in the log
  stream.Acknowledge(last_nonce_, &rejected);
  EXPECT_EQ(counters_.nacks.load(), 1);
  // A reconnecting client's stale nonce is ignored.
  stream.Acknowledge("n999", &rejected);
  EXPECT_EQ(counters_.nacks.load(), 1);
  stream.Replace({});
  stream.Replace({"default"});
  EXPECT_EQ(Drain(stream, {web_}).size(), 1u) << "a new subscription starts afresh";
}

TEST_F(SecretStreamTest, DeltaSaysWhatDoesNotExistAndSkipsWhatTheClientHas) {
  SecretStream first = Stream(WebPod(), SecretStream::Variant::kDelta);
  first.Subscribe({"ROOTCA", "default", vault_.ToString()}, {});
  std::vector<SecretUpdate> sent = Drain(first, {web_});
  ASSERT_EQ(sent.size(), 3u);
  std::string default_version;
  for (const SecretUpdate& update : sent) {
    if (update.name == vault_.ToString()) {
      EXPECT_FALSE(update.secret.has_value()) << "refused: sent as removed";
    } else {
      EXPECT_TRUE(update.secret.has_value());
    }
    if (update.name == "default") default_version = update.version;
  }
  first.Unsubscribe({"default"});
  EXPECT_EQ(Watchers(web_), 0);

  // A reconnected client says what it holds: unchanged resources are not sent again.
  SecretStream second = Stream(WebPod(), SecretStream::Variant::kDelta);
  second.Subscribe({"ROOTCA", "default"}, {{"default", default_version}});
  sent = Drain(second, {web_});
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "ROOTCA");
  // Subscribing again to a name means sending it again.
  second.Subscribe({"default"}, {});
  sent = Drain(second);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].name, "default");
  EXPECT_EQ(sent[0].version, default_version);
}

TEST_F(SecretStreamTest, BoundsTheNamesOfOneStream) {
  SecretStream stream = Stream(WebPod());
  std::vector<std::string> names;
  for (std::size_t i = 0; i <= SecretStream::kMaxNames; ++i) {
    names.push_back(Id("many", absl::StrCat("sa", i)).ToString());
  }
  names.push_back(std::string(kMaxSpiffeIdLength + 1, 'n'));
  stream.Replace(names);
  stream.Replace(names);
  EXPECT_EQ(stream.subscribed(), SecretStream::kMaxNames);
  EXPECT_EQ(Errors(ResourceError::kTooManyNames), 1);
  EXPECT_EQ(Errors(ResourceError::kInvalidName), 1);
  EXPECT_EQ(Errors(ResourceError::kRefused), static_cast<std::int64_t>(SecretStream::kMaxNames));
}

}  // namespace
}  // namespace nodeward::sds
