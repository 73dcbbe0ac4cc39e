#include "agent/cni/conflist.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::cni {
namespace {

using ::testing::HasSubstr;

constexpr char kConflist[] = R"({
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
)";

JsonValue Entry() {
  return JsonValue::Object({{"name", JsonValue::String("nodeward")},
                            {"agentSocket", JsonValue::String("/var/run/nodeward/cni.sock")}});
}

TEST(ConflistTest, AppendsOurEntryAndLeavesTheRestAsWritten) {
  absl::StatusOr<std::string> out = InsertPlugin(kConflist, Entry());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, absl::StrCat(R"({
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"name":"nodeward","agentSocket":"/var/run/nodeward/cni.sock","type":"nodeward-cni"}
  ]
}
)"));
  // Installing again replaces the entry rather than adding a second.
  JsonValue changed = Entry();
  changed.Set("timeoutSeconds", JsonValue::Number("5"));
  absl::StatusOr<std::string> again = InsertPlugin(*out, changed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->find("nodeward-cni"), again->rfind("nodeward-cni"));
  EXPECT_THAT(*again, HasSubstr(R"("timeoutSeconds":5)"));
  // Removing it gives back the file byte for byte.
  absl::StatusOr<std::optional<std::string>> removed = RemovePlugin(*again);
  ASSERT_TRUE(removed.ok());
  ASSERT_TRUE(removed->has_value());
  EXPECT_EQ(**removed, kConflist);
  absl::StatusOr<std::optional<std::string>> nothing = RemovePlugin(kConflist);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->has_value());
}

TEST(ConflistTest, OurEntryFirstOrAloneIsRemovedCleanly) {
  const std::string first =
      R"({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nodeward-cni"}, {"type":"bridge"}]})";
  EXPECT_EQ(**RemovePlugin(first),
            R"({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]})");
  const std::string alone =
      R"({"cniVersion":"1.0.0","name":"n","plugins":[ {"type":"nodeward-cni"} ]})";
  EXPECT_EQ(**RemovePlugin(alone), R"({"cniVersion":"1.0.0","name":"n","plugins":[  ]})");
  absl::StatusOr<std::string> into_empty =
      InsertPlugin(R"({"cniVersion":"1.0.0","name":"n","plugins":[]})", JsonValue::Object());
  ASSERT_TRUE(into_empty.ok());
  EXPECT_EQ(*into_empty,
            R"({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nodeward-cni"}]})");
}

TEST(ConflistTest, ASinglePluginConfigBecomesAChain) {
  absl::StatusOr<std::string> out = InsertPlugin(
      R"({"cniVersion":"0.4.0","name":"flannel","type":"flannel","delegate":{"isDefaultGateway":true}})",
      JsonValue::Object());
  ASSERT_TRUE(out.ok()) << out.status();
  absl::StatusOr<JsonValue> parsed = ParseJson(*out);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->StringAt("cniVersion"), "0.4.0");
  EXPECT_EQ(parsed->StringAt("name"), "flannel");
  const JsonValue* plugins = parsed->Find("plugins");
  ASSERT_NE(plugins, nullptr);
  ASSERT_EQ(plugins->items().size(), 2u);
  EXPECT_EQ(plugins->items()[0].StringAt("type"), "flannel");
  EXPECT_EQ(plugins->items()[1].StringAt("type"), "nodeward-cni");
}

TEST(ConflistTest, RefusesFilesItCannotUnderstand) {
  EXPECT_FALSE(InsertPlugin("{not json", JsonValue::Object()).ok());
  EXPECT_THAT(InsertPlugin(R"({"name":"n"})", JsonValue::Object()).status().message(),
              HasSubstr("neither a conflist"));
  EXPECT_THAT(InsertPlugin(R"({"plugins":{}})", JsonValue::Object()).status().message(),
              HasSubstr("not a list"));
}

class InstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    ASSERT_EQ(mkdir(dir_.Sub("net.d").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(dir_.Sub("bin").c_str(), 0755), 0);
    std::ofstream(dir_.Sub("plugin")) << "#!/bin/sh\necho plugin\n";
    options_.net_dir = dir_.Sub("net.d");
    options_.bin_dir = dir_.Sub("bin");
    options_.binary = dir_.Sub("plugin");
    options_.entry = Entry();
  }
  crypto::testing::TempDir dir_;
  InstallOptions options_;
};

TEST_F(InstallTest, InstallsIntoTheFirstConfigAndUninstallsCleanly) {
  EXPECT_EQ(Install(options_).code(), absl::StatusCode::kNotFound);  // nothing to join yet
  std::ofstream(dir_.Sub("net.d/10-pods.conflist")) << kConflist;
  std::ofstream(dir_.Sub("net.d/99-other.conflist")) << kConflist;
  std::ofstream(dir_.Sub("net.d/README")) << "not a config";
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_EQ(*ReadFile(dir_.Sub("bin/nodeward-cni")), "#!/bin/sh\necho plugin\n");
  struct stat st {};
  ASSERT_EQ(stat(dir_.Sub("bin/nodeward-cni").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_THAT(*ReadFile(dir_.Sub("net.d/10-pods.conflist")), HasSubstr("nodeward-cni"));
  EXPECT_EQ(*ReadFile(dir_.Sub("net.d/99-other.conflist")), kConflist);
  ASSERT_TRUE(Install(options_).ok());  // idempotent

  ASSERT_TRUE(Uninstall(options_.net_dir, options_.bin_dir).ok());
  EXPECT_EQ(*ReadFile(dir_.Sub("net.d/10-pods.conflist")), kConflist);
  EXPECT_NE(access(dir_.Sub("bin/nodeward-cni").c_str(), F_OK), 0);
  EXPECT_TRUE(Uninstall(options_.net_dir, options_.bin_dir).ok());  // idempotent
}

TEST_F(InstallTest, AnEntryTheNodesCniDroppedIsPutBackAsItWas) {
  std::ofstream(dir_.Sub("net.d/10-pods.conflist")) << kConflist;
  ASSERT_TRUE(Install(options_).ok());
  absl::StatusOr<std::optional<JsonValue>> entry = FindEntry(options_.net_dir);
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->StringAt("agentSocket"), "/var/run/nodeward/cni.sock");
  EXPECT_EQ(*EnsureEntry(options_.net_dir, **entry, EntryUpdate::kOnlyIfMissing), false);
  std::ofstream(dir_.Sub("net.d/10-pods.conflist"), std::ios::trunc) << kConflist;  // rewritten
  EXPECT_FALSE(FindEntry(options_.net_dir)->has_value());
  EXPECT_EQ(*EnsureEntry(options_.net_dir, **entry, EntryUpdate::kOnlyIfMissing), true);
  EXPECT_EQ(SerializeJson(**FindEntry(options_.net_dir)), SerializeJson(**entry));
}

TEST_F(InstallTest, ASingleConfBecomesAConflistOfTheSameName) {
  std::ofstream(dir_.Sub("net.d/10-flannel.conf"))
      << R"({"cniVersion":"0.4.0","name":"cbr0","type":"flannel"})";
  ASSERT_TRUE(Install(options_).ok());
  EXPECT_NE(access(dir_.Sub("net.d/10-flannel.conf").c_str(), F_OK), 0);
  EXPECT_THAT(*ReadFile(dir_.Sub("net.d/10-flannel.conflist")), HasSubstr("nodeward-cni"));
}

TEST_F(InstallTest, AnUnreadablePrimaryConfigIsNamed) {
  std::ofstream(dir_.Sub("net.d/10-bad.conflist")) << "{";
  absl::Status status = Install(options_);
  EXPECT_THAT(std::string(status.message()), HasSubstr("10-bad.conflist: invalid JSON"));
}

}  // namespace
}  // namespace nodeward::cni
