// The node enroller driven the way a node drives it: this node's pods and their namespaces
// watched through KubeSource from the fake API server (stored objects, real watch semantics),
// the kernel side replaced by a recording PodEnrollment and netns found by a scripted locator.
#include "agent/capture/node_enroller.h"

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/capture/enrollment_plan.h"
#include "agent/cni/state_files.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/kube_source.h"
#include "policy/testing/test_api_server.h"

namespace nodeward::capture {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kToken[] = "enroller-token";
constexpr char kNamespaces[] = "/api/v1/namespaces";
constexpr char kPods[] = "/api/v1/pods";

class RecordingEnrollment : public PodEnrollment {
 public:
  absl::StatusOr<v1::EnrolledPod> Enroll(const v1::EnrollRequest& request) override {
    absl::MutexLock lock(&mutex_);
    if (!fail_with_.empty()) return absl::UnavailableError(fail_with_);
    v1::EnrolledPod& record = pods_[request.uid()];
    if (record.pod().netns_path() == request.netns_path()) {
      if (record.netns_cookie() != 0) return record;
    }
    *record.mutable_pod() = request;
    record.set_netns_cookie(next_cookie_++);
    return record;
  }
  absl::Status Unenroll(const std::string& uid) override {
    absl::MutexLock lock(&mutex_);
    if (pods_.erase(uid) == 0) return absl::NotFoundError(uid);
    return absl::OkStatus();
  }
  std::vector<v1::EnrolledPod> List() const override {
    absl::MutexLock lock(&mutex_);
    std::vector<v1::EnrolledPod> list;
    for (const auto& [uid, pod] : pods_) list.push_back(pod);
    return list;
  }

  void Preload(const std::string& uid, v1::EnrollmentOrigin origin) {
    absl::MutexLock lock(&mutex_);
    v1::EnrolledPod& record = pods_[uid];
    record.mutable_pod()->set_uid(uid);
    record.mutable_pod()->set_origin(origin);
    record.mutable_pod()->set_netns_path("/proc/1/ns/net");
    record.set_netns_cookie(next_cookie_++);
  }
  void FailWith(std::string reason) {
    absl::MutexLock lock(&mutex_);
    fail_with_ = std::move(reason);
  }
  // uid -> origin name, "" when not enrolled.
  std::string OriginOf(const std::string& uid) const {
    absl::MutexLock lock(&mutex_);
    auto it = pods_.find(uid);
    return it == pods_.end() ? "" : OriginName(it->second.pod().origin());
  }
  v1::EnrollRequest RequestOf(const std::string& uid) const {
    absl::MutexLock lock(&mutex_);
    auto it = pods_.find(uid);
    return it == pods_.end() ? v1::EnrollRequest() : it->second.pod();
  }

 private:
  mutable absl::Mutex mutex_;
  std::map<std::string, v1::EnrolledPod> pods_;
  uint64_t next_cookie_ = 100;
  std::string fail_with_;
};

class ScriptedLocator : public NetnsLocator {
 public:
  absl::flat_hash_map<std::string, NetnsLocation> Find(
      const absl::flat_hash_set<std::string>& uids) override {
    absl::MutexLock lock(&mutex_);
    absl::flat_hash_map<std::string, NetnsLocation> found;
    for (const std::string& uid : uids) {
      if (auto it = netns_.find(uid); it != netns_.end()) found[uid] = it->second;
    }
    return found;
  }
  void Place(const std::string& uid) {
    absl::MutexLock lock(&mutex_);
    netns_[uid] = {absl::StrCat("/run/netns/", uid), "", "cni record", absl::InfinitePast()};
  }

 private:
  absl::Mutex mutex_;
  std::map<std::string, NetnsLocation> netns_;
};

std::string Namespace(const std::string& name, const std::string& labels = "") {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"(","labels":{)", labels, "}}}");
}

std::string Pod(const std::string& name, const std::string& uid, const std::string& node,
                const std::string& labels = "", const std::string& phase = "Running") {
  return absl::StrCat(R"({"metadata":{"name":")", name, R"(","uid":")", uid, R"(","labels":{)",
                      labels, R"(}},"spec":{"serviceAccountName":")", name, R"(","nodeName":")",
                      node, R"("},"status":{"phase":")", phase,
                      R"(","podIP":"10.1.0.9","podIPs":[{"ip":"10.1.0.9"}]}})");
}

constexpr char kEnabled[] = R"("nodeward.io/dataplane-mode":"enabled")";
constexpr char kAmbient[] = R"("istio.io/dataplane-mode":"ambient")";

class NodeEnrollerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    policy::testing::FakeApiServer::Options options;
    options.bookmark_interval = absl::Milliseconds(200);
    absl::StatusOr<policy::testing::TestApiServer> api =
        policy::testing::StartTestApiServer(dir_.path(), kToken, options);
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = std::move(api->server);
    options_ = api->options;
    api_->ServeResource(kNamespaces, "Namespace", /*namespaced=*/false);
    api_->ServeResource(kPods, "Pod", /*namespaced=*/true);
  }

  void TearDown() override {
    enroller_.reset();
    source_.reset();
    api_.reset();
  }

  void CreatePod(const std::string& ns, const std::string& pod) {
    ASSERT_EQ(api_->CreateObject(absl::StrCat("/api/v1/namespaces/", ns, "/pods"), pod), 201);
  }

  void Start() {
    policy::KubeSourceOptions options = options_;
    options.kinds = {"Namespace", "Pod"};
    options.pod_field_selector = "spec.nodeName=node-a";
    absl::StatusOr<std::unique_ptr<policy::KubeSource>> source = policy::KubeSource::Start(options);
    ASSERT_TRUE(source.ok()) << source.status();
    source_ = *std::move(source);
    NodeEnrollerOptions enroller;
    enroller.node_name = "node-a";
    enroller.enrolled_namespaces_file = dir_.Sub("lib/enrolled-namespaces");
    enroller.resync_interval = absl::Milliseconds(100);
    enroller_ = std::make_unique<NodeEnroller>(source_.get(), &enrollment_, &locator_, enroller);
    enroller_->Start();
  }

  bool WaitFor(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return done();
  }

  std::set<std::string> EnrolledNamespaces() {
    absl::StatusOr<std::set<std::string>> read =
        cni::ReadEnrolledNamespaces(dir_.Sub("lib/enrolled-namespaces"));
    return read.ok() ? *read : std::set<std::string>{"<unreadable>"};
  }

  cni::v1::AddRequest AddRequest(const std::string& ns, const std::string& name,
                                 const std::string& uid, const std::string& container = "s1") {
    cni::v1::AddRequest add;
    add.set_container_id(container);
    add.set_netns(absl::StrCat("/run/netns/cni-", uid));
    add.mutable_pod()->set_namespace_(ns);
    add.mutable_pod()->set_name(name);
    add.mutable_pod()->set_uid(uid);
    add.add_ips("10.1.0.42");
    return add;
  }

  crypto::testing::TempDir dir_;
  std::unique_ptr<policy::testing::FakeApiServer> api_;
  policy::KubeSourceOptions options_;
  std::unique_ptr<policy::KubeSource> source_;
  RecordingEnrollment enrollment_;
  ScriptedLocator locator_;
  std::unique_ptr<NodeEnroller> enroller_;
};

TEST_F(NodeEnrollerTest, FollowsStartAndLabelsAndPodsThroughTheWatch) {
  ASSERT_EQ(api_->CreateObject(kNamespaces, Namespace("shop", kEnabled)), 201);
  ASSERT_EQ(api_->CreateObject(kNamespaces, Namespace("legacy")), 201);
  ASSERT_EQ(
      api_->CreateObject(kNamespaces, Namespace("typo", R"("nodeward.io/dataplane-mode":"on")")),
      201);
  CreatePod("shop", Pod("web", "u-web", "node-a"));
  CreatePod("shop", Pod("elsewhere", "u-else", "node-b"));
  CreatePod("shop", Pod("batch", "u-batch", "node-a", "", "Succeeded"));
  CreatePod("legacy", Pod("old", "u-old", "node-a"));
  CreatePod("typo", Pod("t", "u-typo", "node-a"));
  for (const char* uid : {"u-web", "u-else", "u-batch", "u-old", "u-typo"}) locator_.Place(uid);
  // Left by the previous run: a pod deleted while the agent was down, and one enrolled by hand.
  enrollment_.Preload("u-deleted", v1::ORIGIN_CNI);
  enrollment_.Preload("u-by-hand", v1::ORIGIN_API);

  Start();
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-web") == "sync at start"; }));
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-deleted").empty(); }));
  EXPECT_EQ(enrollment_.OriginOf("u-by-hand"), "api");
  EXPECT_EQ(enrollment_.OriginOf("u-else"), "");   // another node's
  EXPECT_EQ(enrollment_.OriginOf("u-batch"), "");  // finished
  EXPECT_EQ(enrollment_.OriginOf("u-old"), "");    // namespace not enrolled
  EXPECT_EQ(enrollment_.OriginOf("u-typo"), "");   // an unknown value enrolls nothing
  const v1::EnrollRequest web = enrollment_.RequestOf("u-web");
  EXPECT_EQ(web.service_account(), "web");
  EXPECT_EQ(web.netns_path(), "/run/netns/u-web");
  EXPECT_THAT(web.ips(), ElementsAre("10.1.0.9"));
  ASSERT_TRUE(WaitFor([&] { return EnrolledNamespaces() == std::set<std::string>{"shop"}; }));

  // Labels flip, live: a namespace joins (istio's label works too), another leaves.
  ASSERT_EQ(api_->ReplaceObject("/api/v1/namespaces/legacy", Namespace("legacy", kAmbient)), 200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-old") == "label change"; }));
  ASSERT_EQ(api_->ReplaceObject("/api/v1/namespaces/shop", Namespace("shop")), 200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-web").empty(); }));
  ASSERT_TRUE(WaitFor([&] { return EnrolledNamespaces() == std::set<std::string>{"legacy"}; }));

  // A pod opts out, and back in.
  ASSERT_EQ(
      api_->ReplaceObject("/api/v1/namespaces/legacy/pods/old",
                          Pod("old", "u-old", "node-a", R"("nodeward.io/dataplane-mode":"none")")),
      200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-old").empty(); }));
  ASSERT_EQ(
      api_->ReplaceObject("/api/v1/namespaces/legacy/pods/old", Pod("old", "u-old", "node-a")),
      200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-old") == "label change"; }));

  // Pods come and go.
  locator_.Place("u-new");
  CreatePod("legacy", Pod("new", "u-new", "node-a"));
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-new") == "watch"; }));
  ASSERT_EQ(api_->DeleteObject("/api/v1/namespaces/legacy/pods/new"), 200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-new").empty(); }));

  // The watch history is compacted and the connections cut: the source relists (410 Gone) and
  // the enroller keeps following.
  api_->Compact();
  api_->DropStoredWatches();
  ASSERT_EQ(api_->ReplaceObject("/api/v1/namespaces/shop", Namespace("shop", kEnabled)), 200);
  ASSERT_TRUE(WaitFor([&] { return enrollment_.OriginOf("u-web") == "label change"; }));
  EXPECT_GE(api_->Count(absl::StrCat(kNamespaces, "?limit=")), 2);
  EXPECT_EQ(enrollment_.OriginOf("u-by-hand"), "api");
}

TEST_F(NodeEnrollerTest, SaysWhichPodsAreNotEnrolledAndWhy) {
  ASSERT_EQ(api_->CreateObject(kNamespaces, Namespace("shop", kEnabled)), 201);
  CreatePod("shop", Pod("pending", "u-pending", "node-a", "", "Pending"));
  CreatePod("shop", Pod("broken", "u-broken", "node-a"));
  locator_.Place("u-broken");
  enrollment_.FailWith("open netns: No such file or directory");
  Start();
  ASSERT_TRUE(WaitFor([&] { return enroller_->Gaps().size() == 2; }));
  std::map<std::string, EnrollmentGap> gaps;
  for (const EnrollmentGap& gap : enroller_->Gaps()) gaps[gap.name] = gap;
  EXPECT_THAT(gaps["pending"].reason, HasSubstr("waiting for its sandbox"));
  EXPECT_EQ(gaps["pending"].attempts, 0);
  EXPECT_THAT(gaps["broken"].reason, HasSubstr("enrolling failed: UNAVAILABLE: open netns"));
  ASSERT_TRUE(WaitFor([&] { return enroller_->FailureCounts()["sync at start"] >= 1; }));
  // Retried at each resync; once it works the gap closes.
  enrollment_.FailWith("");
  ASSERT_TRUE(WaitFor([&] { return !enrollment_.OriginOf("u-broken").empty(); }));
  ASSERT_TRUE(WaitFor([&] { return enroller_->Gaps().size() == 1; }));
}

TEST_F(NodeEnrollerTest, CniAddCapturesOrSaysWhyNot) {
  ASSERT_EQ(api_->CreateObject(kNamespaces, Namespace("shop", kEnabled)), 201);
  ASSERT_EQ(api_->CreateObject(kNamespaces, Namespace("legacy")), 201);
  CreatePod("shop", Pod("optout", "u-optout", "node-a", R"("istio.io/dataplane-mode":"none")"));
  Start();
  ASSERT_TRUE(source_->WaitForSync(absl::Seconds(15)));

  // A pod the watch has not shown yet is waited for, then captured.
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(300));
    CreatePod("shop", Pod("web", "u-web", "node-a", "", "Pending"));
  });
  cni::v1::Response added =
      enroller_->Add(AddRequest("shop", "web", "u-web"), absl::Now() + absl::Seconds(10));
  later.join();
  EXPECT_EQ(added.outcome(), cni::v1::ENROLLED) << added.reason();
  EXPECT_NE(added.netns_cookie(), 0u);
  const v1::EnrollRequest web = enrollment_.RequestOf("u-web");
  EXPECT_STREQ(OriginName(web.origin()), "cni");
  EXPECT_EQ(web.netns_path(), "/run/netns/cni-u-web");
  EXPECT_THAT(web.ips(), ElementsAre("10.1.0.42"));  // the chain's, not yet in the pod status
  EXPECT_EQ(web.container_id(), "s1");

  cni::v1::CheckRequest check;
  check.set_netns("/run/netns/cni-u-web");
  *check.mutable_pod() = AddRequest("shop", "web", "u-web").pod();
  EXPECT_EQ(enroller_->Check(check).outcome(), cni::v1::ENROLLED);
  check.set_netns("/run/netns/other");
  EXPECT_EQ(enroller_->Check(check).outcome(), cni::v1::FAILED);

  // Outside enrolled namespaces the answer comes at once, pod known or not.
  const absl::Time start = absl::Now();
  cni::v1::Response legacy =
      enroller_->Add(AddRequest("legacy", "x", "u-x"), absl::Now() + absl::Seconds(10));
  EXPECT_EQ(legacy.outcome(), cni::v1::NOT_ENROLLED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(enroller_->Add(AddRequest("shop", "optout", "u-optout"), absl::Now() + absl::Seconds(5))
                .outcome(),
            cni::v1::NOT_ENROLLED);
  // What it cannot know by the deadline, it says so: the plugin then decides as without it.
  cni::v1::Response unknown =
      enroller_->Add(AddRequest("nowhere", "x", "u-y"), absl::Now() + absl::Milliseconds(300));
  EXPECT_EQ(unknown.outcome(), cni::v1::UNDECIDED);
  EXPECT_THAT(unknown.reason(), HasSubstr("namespace nowhere not seen yet"));

  // A capture that fails is reported and leaves nothing enrolled.
  CreatePod("shop", Pod("db", "u-db", "node-a", "", "Pending"));
  enrollment_.FailWith("netns vanished");
  cni::v1::Response failed =
      enroller_->Add(AddRequest("shop", "db", "u-db"), absl::Now() + absl::Seconds(10));
  EXPECT_EQ(failed.outcome(), cni::v1::FAILED);
  EXPECT_THAT(failed.reason(), HasSubstr("netns vanished"));
  EXPECT_EQ(enrollment_.OriginOf("u-db"), "");
  EXPECT_EQ(enroller_->FailureCounts()["cni"], 1u);
  enrollment_.FailWith("");

  // DEL of an older sandbox leaves the enrollment; DEL of the pod's own releases it.
  cni::v1::DelRequest del;
  del.set_container_id("s0");
  del.mutable_pod()->set_uid("u-web");
  EXPECT_EQ(enroller_->Del(del).outcome(), cni::v1::NOT_ENROLLED);
  EXPECT_EQ(enrollment_.OriginOf("u-web"), "cni");
  del.set_container_id("s1");
  del.mutable_pod()->clear_uid();  // found by its sandbox
  EXPECT_EQ(enroller_->Del(del).outcome(), cni::v1::ENROLLED);
  EXPECT_EQ(enrollment_.OriginOf("u-web"), "");
}

TEST(EnrollmentPlanTest, NamespacesEnrollByEitherLabel) {
  policy::ResourceSet resources;
  for (auto [name, key, value] : std::vector<std::tuple<const char*, const char*, const char*>>{
           {"a", "nodeward.io/dataplane-mode", "enabled"},
           {"b", "istio.io/dataplane-mode", "ambient"},
           {"c", "nodeward.io/dataplane-mode", "Enabled"},
           {"d", "istio.io/dataplane-mode", "none"}}) {
    policy::Namespace ns;
    ns.meta.name = name;
    ns.meta.labels[key] = value;
    resources.namespaces.push_back(ns);
  }
  absl::StatusOr<std::shared_ptr<const policy::Snapshot>> snapshot =
      policy::Snapshot::Build(resources, {});
  ASSERT_TRUE(snapshot.ok());
  PlanInput input;
  input.snapshot = snapshot->get();
  input.node_name = "n";
  EXPECT_THAT(PlanEnrollment(input).enrolled_namespaces, ElementsAre("a", "b"));
  EXPECT_THAT(PlanEnrollment(input).enroll, IsEmpty());
}

}  // namespace
}  // namespace nodeward::capture
