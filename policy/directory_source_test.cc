#include "policy/directory_source.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::policy {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string NamespaceYaml(const std::string& name) {
  return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n";
}

class DirectorySourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "nodeward-policy-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
  }
  // Runs on failure too: the source (and its thread) go first, then the files.
  void TearDown() override {
    source_.reset();
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  void Write(const std::string& relative, const std::string& text) {
    fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    // Write then rename, as a ConfigMap update or a careful editor does.
    fs::path temporary = path.parent_path() / (".tmp-" + path.filename().string());
    {
      std::ofstream out(temporary, std::ios::trunc);
      out << text;
    }
    fs::rename(temporary, path);
  }

  absl::Status StartSource(ConfigLimits limits = {}) {
    DirectorySource::Options options;
    options.directory = root_.string();
    options.snapshot.limits = limits;
    options.debounce = absl::Milliseconds(50);
    absl::StatusOr<std::unique_ptr<DirectorySource>> source = DirectorySource::Start(options);
    if (!source.ok()) return source.status();
    source_ = *std::move(source);
    return absl::OkStatus();
  }

  // Waits up to 10 s for `done`.
  bool WaitFor(const std::function<bool()>& done) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return done();
  }

  bool HasNamespace(absl::string_view name) {
    std::shared_ptr<const Snapshot> snapshot = source_->Current();
    return snapshot != nullptr && snapshot->FindNamespace(name) != nullptr;
  }

  fs::path root_;
  std::unique_ptr<DirectorySource> source_;
};

TEST_F(DirectorySourceTest, LoadsYamlYmlAndJsonRecursivelySkippingHiddenAndOthers) {
  Write("a.yaml", NamespaceYaml("from-yaml"));
  Write("nested/b.yml", NamespaceYaml("from-yml"));
  Write("nested/deeper/c.json",
        R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"from-json"}})");
  Write(".hidden/d.yaml", NamespaceYaml("hidden"));
  Write("notes.txt", "not: [valid");
  ASSERT_TRUE(StartSource().ok());
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->generation(), 1u);
  EXPECT_NE(snapshot->FindNamespace("from-yaml"), nullptr);
  EXPECT_NE(snapshot->FindNamespace("from-yml"), nullptr);
  EXPECT_NE(snapshot->FindNamespace("from-json"), nullptr);
  EXPECT_EQ(snapshot->FindNamespace("hidden"), nullptr);
  EXPECT_TRUE(source_->Status().last_error.ok());
}

TEST_F(DirectorySourceTest, InvalidInitialConfigFailsWithFileAndLine) {
  Write("ok.yaml", NamespaceYaml("fine"));
  Write("zz-bad.yaml", NamespaceYaml("one") +
                           "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                           "metadata: {name: p, namespace: x}\nspec:\n  mtls: {mode: SRTICT}\n");
  absl::Status status = StartSource();
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("zz-bad.yaml:10: PeerAuthentication x/p: spec.mtls.mode"));
}

TEST_F(DirectorySourceTest, MissingDirectoryFails) {
  fs::remove_all(root_);
  EXPECT_EQ(StartSource().code(), absl::StatusCode::kNotFound);
}

TEST_F(DirectorySourceTest, AppliesValidChangesAndKeepsLastGoodOnInvalidOnes) {
  Write("a.yaml", NamespaceYaml("first"));
  ASSERT_TRUE(StartSource().ok());

  absl::Mutex mutex;
  std::vector<uint64_t> delivered;
  uint64_t subscription = source_->Subscribe([&](std::shared_ptr<const Snapshot> snapshot) {
    absl::MutexLock lock(&mutex);
    delivered.push_back(snapshot->generation());
  });
  {
    absl::MutexLock lock(&mutex);
    ASSERT_EQ(delivered.size(), 1u);  // the current snapshot, right away
  }

  // A valid change is picked up and swapped in.
  Write("b.yaml", NamespaceYaml("second"));
  ASSERT_TRUE(WaitFor([&] { return HasNamespace("second"); }));
  std::shared_ptr<const Snapshot> good = source_->Current();
  EXPECT_GE(good->generation(), 2u);
  EXPECT_TRUE(source_->Status().last_error.ok());

  // An invalid change is reported and the last good snapshot stays.
  Write("b.yaml", NamespaceYaml("third") + "  labels: [oops]\n");
  ASSERT_TRUE(WaitFor([&] { return !source_->Status().last_error.ok(); }));
  SourceStatus status = source_->Status();
  EXPECT_THAT(std::string(status.last_error.message()),
              HasSubstr("b.yaml:5: Namespace third: metadata.labels: expected a map"));
  EXPECT_EQ(source_->Current(), good);
  EXPECT_EQ(status.generation, good->generation());
  EXPECT_TRUE(HasNamespace("second"));

  // Two objects with one name across files is also an invalid change.
  Write("c.yaml", NamespaceYaml("first"));
  Write("b.yaml", NamespaceYaml("third"));
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(source_->Status().last_error.message(), "defined twice"); }));
  EXPECT_EQ(source_->Current(), good);

  // Fixing it recovers.
  fs::remove(root_ / "c.yaml");
  ASSERT_TRUE(WaitFor([&] { return HasNamespace("third"); }));
  EXPECT_TRUE(source_->Status().last_error.ok());
  EXPECT_FALSE(HasNamespace("second"));

  source_->Unsubscribe(subscription);
  absl::MutexLock lock(&mutex);
  ASSERT_GE(delivered.size(), 3u);
  for (size_t i = 1; i < delivered.size(); ++i) EXPECT_GT(delivered[i], delivered[i - 1]);
}

TEST_F(DirectorySourceTest, WatchesNewSubdirectoriesAndDeletions) {
  Write("a.yaml", NamespaceYaml("first"));
  ASSERT_TRUE(StartSource().ok());
  Write("team/x.yaml", NamespaceYaml("team-x"));
  ASSERT_TRUE(WaitFor([&] { return HasNamespace("team-x"); }));
  // A file created later inside the new subdirectory is seen too.
  Write("team/y.yaml", NamespaceYaml("team-y"));
  ASSERT_TRUE(WaitFor([&] { return HasNamespace("team-y"); }));
  fs::remove(root_ / "a.yaml");
  ASSERT_TRUE(WaitFor([&] { return !HasNamespace("first"); }));
}

TEST_F(DirectorySourceTest, ReloadReportsTheOutcome) {
  Write("a.yaml", NamespaceYaml("first"));
  ASSERT_TRUE(StartSource().ok());
  std::ofstream(root_ / "broken.yaml") << "kind: [";
  absl::Status status = source_->Reload();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("broken.yaml:1: invalid YAML"));
  EXPECT_TRUE(HasNamespace("first"));
}

TEST_F(DirectorySourceTest, OversizedFilesAndTooManyObjectsAreRefusedKeepingTheLastGood) {
  ConfigLimits limits;
  limits.max_file_bytes = 1024;
  limits.max_directory_bytes = 1536;
  limits.max_namespaces = 3;
  Write("a.yaml", NamespaceYaml("first"));
  ASSERT_TRUE(StartSource(limits).ok());
  std::shared_ptr<const Snapshot> good = source_->Current();

  // One file over the limit: refused before it is parsed.
  Write("big.yaml", "# " + std::string(2000, 'x') + "\n" + NamespaceYaml("big"));
  ASSERT_TRUE(WaitFor([&] { return !source_->Status().last_error.ok(); }));
  EXPECT_EQ(source_->Status().last_error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(source_->Status().last_error.message()), HasSubstr("big.yaml: 2"));
  EXPECT_THAT(std::string(source_->Status().last_error.message()),
              HasSubstr("over the limit of 1024 bytes for one configuration file"));
  EXPECT_EQ(source_->Current(), good);

  // Files each within the limit, over it together (never a valid state in between).
  Write("big2.yaml", "# " + std::string(900, 'x') + "\n");
  Write("big.yaml", "# " + std::string(900, 'x') + "\n");
  ASSERT_TRUE(WaitFor(
      [&] { return absl::StrContains(source_->Status().last_error.message(), "bytes together"); }));
  EXPECT_EQ(source_->Current(), good);

  // Small files, too many objects of one kind (again no valid state in between).
  Write("b.yaml", NamespaceYaml("b"));
  Write("big.yaml", NamespaceYaml("c") + "---\n" + NamespaceYaml("d"));
  fs::remove(root_ / "big2.yaml");
  ASSERT_TRUE(WaitFor([&] {
    return absl::StrContains(source_->Status().last_error.message(),
                             "too many Namespaces: 4 (at most 3 are loaded)");
  }));
  EXPECT_EQ(source_->Current(), good);
  EXPECT_FALSE(HasNamespace("b"));

  // Back within the limits: loaded.
  fs::remove(root_ / "big.yaml");
  ASSERT_TRUE(WaitFor([&] { return HasNamespace("b"); }));
  EXPECT_TRUE(source_->Status().last_error.ok());
}

TEST_F(DirectorySourceTest, LoadDirectoryRefusesAnOversizedFileAtOnce) {
  Write("huge.yaml", std::string(5000, '#'));
  ConfigLimits limits;
  limits.max_file_bytes = 4096;
  absl::StatusOr<ResourceSet> loaded = LoadDirectory(root_.string(), limits);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("huge.yaml: 5000 bytes"));
}

TEST_F(DirectorySourceTest, CarriesGatewaysVirtualServicesAndSecretsAndFollowsARotation) {
  Write("gateway.yaml", R"(apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: public, namespace: istio-ingress}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-ingress/public]
  tcp: [{route: [{destination: {host: web}}]}]
)");
  Write("secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-cert, namespace: istio-ingress}\n"
        "type: kubernetes.io/tls\nstringData: {tls.crt: OLD, tls.key: KEY}\n");
  ASSERT_TRUE(StartSource().ok());
  std::shared_ptr<const Snapshot> snapshot = source_->Current();
  ASSERT_EQ(snapshot->resources().gateways.size(), 1u);
  ASSERT_EQ(snapshot->resources().virtual_services.size(), 1u);
  ASSERT_NE(snapshot->FindSecret("istio-ingress", "shop-cert"), nullptr);

  Write("secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-cert, namespace: istio-ingress}\n"
        "type: kubernetes.io/tls\nstringData: {tls.crt: NEW, tls.key: KEY}\n");
  ASSERT_TRUE(WaitFor([&] {
    const Secret* secret = source_->Current()->FindSecret("istio-ingress", "shop-cert");
    return secret != nullptr && secret->data.at("tls.crt") == "NEW";
  }));
  // A Secret that does not parse keeps the last good configuration and says why.
  Write("secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-cert, namespace: istio-ingress}\n"
        "data: {tls.crt: \"not base64!\"}\n");
  ASSERT_TRUE(WaitFor([&] { return !source_->Status().last_error.ok(); }));
  EXPECT_THAT(std::string(source_->Status().last_error.message()),
              HasSubstr("Secret istio-ingress/shop-cert: data[tls.crt]: is not base64"));
  EXPECT_EQ(source_->Current()->FindSecret("istio-ingress", "shop-cert")->data.at("tls.crt"),
            "NEW");
}

}  // namespace
}  // namespace nodeward::policy
