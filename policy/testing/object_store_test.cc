#include "policy/testing/object_store.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::policy::testing {
namespace {

using ::testing::HasSubstr;

std::string Pod(const std::string& name, const std::string& node) {
  return R"({"kind":"Pod","metadata":{"name":")" + name + R"("},"spec":{"nodeName":")" + node +
         R"("}})";
}

TEST(ObjectStoreTest, PathsNameCollectionsNamespacesAndObjects) {
  std::optional<ResourcePath> pod = ParseResourcePath("/api/v1/namespaces/shop/pods/web");
  ASSERT_TRUE(pod.has_value());
  EXPECT_EQ(pod->collection, "/api/v1/pods");
  EXPECT_EQ(pod->ns, "shop");
  EXPECT_EQ(pod->name, "web");
  std::optional<ResourcePath> ns = ParseResourcePath("/api/v1/namespaces/shop");
  ASSERT_TRUE(ns.has_value());
  EXPECT_EQ(ns->collection, "/api/v1/namespaces");
  EXPECT_EQ(ns->name, "shop");
  std::optional<ResourcePath> ds = ParseResourcePath("/apis/apps/v1/namespaces/s/daemonsets");
  ASSERT_TRUE(ds.has_value());
  EXPECT_EQ(ds->collection, "/apis/apps/v1/daemonsets");
  EXPECT_FALSE(ParseResourcePath("/healthz").has_value());
  EXPECT_FALSE(ParseResourcePath("/api/v1/namespaces/a/pods/b/c").has_value());
}

TEST(ObjectStoreTest, ChangesGetIncreasingVersionsAndWatchesReplayThem) {
  ObjectStore store;
  store.Serve("/api/v1/pods", "Pod", true);
  const ResourcePath pods{"/api/v1/pods", "shop", ""};
  const int64_t start = store.version();
  EXPECT_EQ(store.Create(pods, Pod("a", "n1")).status, 201);
  EXPECT_EQ(store.Create(pods, Pod("a", "n1")).status, 409);
  EXPECT_EQ(store.Create(pods, Pod("b", "n2")).status, 201);
  ObjectStore::Reply replaced = store.Replace({"/api/v1/pods", "shop", "a"}, Pod("a", "n1"));
  EXPECT_EQ(replaced.status, 200);
  EXPECT_THAT(replaced.body, HasSubstr(R"("uid":"fake-uid-1")"));  // kept across the replace
  EXPECT_EQ(store
                .Replace({"/api/v1/pods", "shop", "a"},
                         R"({"metadata":{"name":"a","resourceVersion":"1"}})")
                .status,
            409);
  EXPECT_EQ(store.Delete({"/api/v1/pods", "shop", "b"}).status, 200);
  EXPECT_EQ(store.Delete({"/api/v1/pods", "shop", "b"}).status, 404);

  absl::StatusOr<FieldSelector> everything = FieldSelector::Parse("");
  std::optional<std::vector<WatchEvent>> events = store.EventsAfter(pods, *everything, start);
  ASSERT_TRUE(events.has_value());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].type, "ADDED");
  EXPECT_EQ((*events)[2].type, "MODIFIED");
  EXPECT_EQ((*events)[3].type, "DELETED");
  EXPECT_EQ((*events)[3].resource_version, store.version());
  for (std::size_t i = 1; i < events->size(); ++i) {
    EXPECT_GT((*events)[i].resource_version, (*events)[i - 1].resource_version);
  }
  absl::StatusOr<FieldSelector> node1 = FieldSelector::Parse("spec.nodeName=n1");
  ASSERT_TRUE(node1.ok());
  EXPECT_EQ(store.EventsAfter(pods, *node1, start)->size(), 2u);
  EXPECT_EQ(store.CurrentAsAdded(pods, *node1).size(), 1u);
  EXPECT_THAT(store.List(pods, *node1).body, HasSubstr(R"("kind":"PodList")"));

  store.Compact();
  EXPECT_FALSE(store.EventsAfter(pods, *everything, start).has_value());  // 410: relist
  EXPECT_FALSE(store.EventsAfter(pods, *everything, store.version()).has_value());
  EXPECT_EQ(store.Create(pods, Pod("c", "n1")).status, 201);
  // Relisted at the new version, the client watches on from there.
  EXPECT_TRUE(store.EventsAfter(pods, *everything, store.version())->empty());
}

TEST(ObjectStoreTest, SelectorsAndBodiesAreChecked) {
  EXPECT_FALSE(FieldSelector::Parse("status.phase=Running").ok());
  EXPECT_FALSE(FieldSelector::Parse("spec.nodeName").ok());
  ObjectStore store;
  store.Serve("/api/v1/namespaces", "Namespace", false);
  const ResourcePath namespaces{"/api/v1/namespaces", "", ""};
  EXPECT_EQ(store.Create(namespaces, "{").status, 400);
  EXPECT_EQ(store.Create(namespaces, R"({"metadata":{}})").status, 422);
  EXPECT_EQ(store.Create(namespaces, R"({"metadata":{"name":"shop"}})").status, 201);
  EXPECT_THAT(store.Get({"/api/v1/namespaces", "", "shop"}).body, HasSubstr(R"("name":"shop")"));
  EXPECT_EQ(store.Create({"/api/v1/pods", "", ""}, "{}").status, 404);
}

}  // namespace
}  // namespace nodeward::policy::testing
