#include "agent/cni/state_files.h"

#include <fstream>

#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::cni {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(StateFilesTest, PodRecordsRoundTripAndAreListedOldestFirst) {
  crypto::testing::TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string records = dir.Sub("pods/deeper");
  PodRecord a{"c1", "/run/netns/a", "shop", "web", "u1", "eth0", {"10.0.0.2"}, 200};
  PodRecord b{"c2", "/run/netns/b", "shop", "db", "u2", "eth0", {}, 100};
  ASSERT_TRUE(WritePodRecord(records, a).ok());
  ASSERT_TRUE(WritePodRecord(records, b).ok());
  std::ofstream(records + "/broken.json") << "{";
  absl::StatusOr<PodRecord> read = ReadPodRecord(records, "c1");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->netns, "/run/netns/a");
  EXPECT_THAT(read->ips, ElementsAre("10.0.0.2"));
  EXPECT_EQ(read->added_unix_ms, 200);
  PodRecords all = ReadPodRecords(records);
  ASSERT_EQ(all.records.size(), 2u);
  EXPECT_EQ(all.records[0].container_id, "c2");
  ASSERT_EQ(all.unreadable.size(), 1u);
  EXPECT_THAT(all.unreadable[0], HasSubstr("broken.json"));
  ASSERT_TRUE(RemovePodRecord(records, "c1").ok());
  ASSERT_TRUE(RemovePodRecord(records, "c1").ok());
  EXPECT_EQ(ReadPodRecords(records).records.size(), 1u);
  EXPECT_TRUE(ReadPodRecords(dir.Sub("missing")).records.empty());
}

TEST(StateFilesTest, PodRecordsMustNameTheirNetns) {
  EXPECT_FALSE(ParsePodRecord(R"({"containerId":"c"})").ok());
  EXPECT_FALSE(ParsePodRecord(R"({"containerId":"c","netns":"rel"})").ok());
  EXPECT_FALSE(ParsePodRecord(R"({"containerId":"c","netns":"/n","ips":[1]})").ok());
  EXPECT_FALSE(ParsePodRecord(R"({"containerId":"c","netns":"/n","addedUnixMs":"x"})").ok());
  EXPECT_FALSE(ParsePodRecord("[]").ok());
}

TEST(StateFilesTest, EnrolledNamespacesFile) {
  crypto::testing::TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.Sub("lib/enrolled-namespaces");
  EXPECT_EQ(ReadEnrolledNamespaces(path).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteEnrolledNamespaces(path, {"shop", "bank"}).ok());
  absl::StatusOr<std::set<std::string>> read = ReadEnrolledNamespaces(path);
  ASSERT_TRUE(read.ok());
  EXPECT_THAT(*read, ElementsAre("bank", "shop"));
  EXPECT_THAT(*ParseEnrolledNamespaces(" a # comment\n\n#only\nb\n"), ElementsAre("a", "b"));
  std::ofstream(path) << "shop\nNot/A-Name\n";
  EXPECT_THAT(std::string(ReadEnrolledNamespaces(path).status().message()),
              HasSubstr("line 2: \"Not/A-Name\" is not a namespace name"));
}

}  // namespace
}  // namespace nodeward::cni
