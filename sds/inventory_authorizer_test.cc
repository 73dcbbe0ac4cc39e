#include "sds/inventory_authorizer.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::sds {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::string PodYaml(const std::string& ns, const std::string& name, const std::string& sa,
                    const std::string& node, const std::string& phase = "Running") {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: " + ns +
         "}\nspec: {serviceAccountName: " + sa + ", nodeName: " + node +
         "}\nstatus: {phase: " + phase + "}\n---\n";
}

std::shared_ptr<const policy::Snapshot> SnapshotOf(const std::string& yaml, uint64_t generation) {
  policy::ResourceSet resources;
  absl::Status parsed = policy::AppendYamlResources(yaml, "pods.yaml", resources);
  EXPECT_TRUE(parsed.ok()) << parsed;
  policy::SnapshotOptions options;
  absl::StatusOr<std::shared_ptr<const policy::Snapshot>> snapshot =
      policy::Snapshot::Build(std::move(resources), options, generation);
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return snapshot.ok() ? *snapshot : nullptr;
}

SpiffeId Id(const std::string& ns, const std::string& sa) {
  return *SpiffeId::Make("cluster.local", ns, sa);
}

TEST(IdentitiesScheduledOn, PodsOfThisNodeThatMayStillRun) {
  auto snapshot =
      SnapshotOf(PodYaml("shop", "web-1", "web", "a") + PodYaml("shop", "web-2", "web", "a") +
                     PodYaml("shop", "api-1", "api", "b") +
                     PodYaml("batch", "job-1", "runner", "a", "Succeeded") +
                     PodYaml("batch", "job-2", "failed", "a", "Failed") +
                     PodYaml("shop", "db-1", "db", "a", "Pending"),
                 1);
  ASSERT_NE(snapshot, nullptr);
  EXPECT_THAT(IdentitiesScheduledOn(*snapshot, "a", "cluster.local"),
              UnorderedElementsAre(Id("shop", "web"), Id("shop", "db")));
  EXPECT_THAT(IdentitiesScheduledOn(*snapshot, "b", "cluster.local"),
              UnorderedElementsAre(Id("shop", "api")));
  EXPECT_TRUE(IdentitiesScheduledOn(*snapshot, "c", "cluster.local").empty());
}

TEST(InventoryAuthorizer, FollowsTheInventoryAndFallsBackToTheAllowList) {
  policy::SnapshotPublisher source("test inventory");
  AllowListAuthorizer allow_list({Id("gateway", "ingress")}, std::nullopt);
  InventoryAuthorizer authorizer(&source, "a", "cluster.local", &allow_list);

  absl::Status before = authorizer.Authorize(Id("shop", "web"));
  EXPECT_EQ(before.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(before.message(), HasSubstr("has not loaded yet"));
  EXPECT_TRUE(authorizer.Authorize(Id("gateway", "ingress")).ok());

  source.Publish(
      SnapshotOf(PodYaml("shop", "web-1", "web", "a") + PodYaml("shop", "api-1", "api", "b"), 7));
  EXPECT_TRUE(authorizer.Authorize(Id("shop", "web")).ok());
  absl::Status other_node = authorizer.Authorize(Id("shop", "api"));
  EXPECT_EQ(other_node.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(other_node.message(), HasSubstr("no pod scheduled on node a"));
  EXPECT_THAT(other_node.message(), HasSubstr("generation 7"));
  EXPECT_TRUE(authorizer.Authorize(Id("gateway", "ingress")).ok());

  // The web pod moves to node b, api comes to a.
  source.Publish(
      SnapshotOf(PodYaml("shop", "web-1", "web", "b") + PodYaml("shop", "api-2", "api", "a"), 8));
  EXPECT_FALSE(authorizer.Authorize(Id("shop", "web")).ok());
  EXPECT_TRUE(authorizer.Authorize(Id("shop", "api")).ok());
}

}  // namespace
}  // namespace nodeward::sds
