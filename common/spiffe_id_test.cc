#include "common/spiffe_id.h"

#include <string>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward {
namespace {

using ::testing::HasSubstr;

TEST(SpiffeIdTest, ParsesTheKubernetesForm) {
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse("spiffe://cluster.local/ns/default/sa/bookinfo");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->trust_domain(), "cluster.local");
  EXPECT_EQ(id->ns(), "default");
  EXPECT_EQ(id->service_account(), "bookinfo");
  EXPECT_EQ(id->ToString(), "spiffe://cluster.local/ns/default/sa/bookinfo");
}

TEST(SpiffeIdTest, MakeMatchesParse) {
  absl::StatusOr<SpiffeId> made = SpiffeId::Make("td.example", "ns-1", "sa_2.x");
  ASSERT_TRUE(made.ok()) << made.status();
  absl::StatusOr<SpiffeId> parsed = SpiffeId::Parse(made->ToString());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*made, *parsed);
  absl::flat_hash_set<SpiffeId> set = {*made, *parsed};
  EXPECT_EQ(set.size(), 1u);
}

struct BadCase {
  std::string uri;
  std::string reason;
};

class SpiffeIdRejectTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(SpiffeIdRejectTest, RejectsWithReason) {
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(GetParam().uri);
  ASSERT_FALSE(id.ok()) << GetParam().uri;
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr(GetParam().reason));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SpiffeIdRejectTest,
    ::testing::Values(BadCase{"", "empty"},
                      BadCase{"SPIFFE://cluster.local/ns/a/sa/b", "spiffe://"},
                      BadCase{"https://cluster.local/ns/a/sa/b", "spiffe://"},
                      BadCase{"spiffe:///ns/a/sa/b", "empty trust domain"},
                      BadCase{"spiffe://Cluster.local/ns/a/sa/b", "illegal character 'C'"},
                      BadCase{"spiffe://cluster.local:443/ns/a/sa/b", "port"},
                      BadCase{"spiffe://user@cluster.local/ns/a/sa/b", "userinfo"},
                      BadCase{"spiffe://cluster.local", "no path"},
                      BadCase{"spiffe://cluster.local/", "path must be exactly"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/b/", "path must be exactly"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/b/c", "path must be exactly"},
                      BadCase{"spiffe://cluster.local/ns//sa/b", "namespace is empty"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/", "service account is empty"},
                      BadCase{"spiffe://cluster.local/ns/../sa/b", "'.' or '..'"},
                      BadCase{"spiffe://cluster.local/ns/./sa/b", "'.' or '..'"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/b%2Fc", "percent-encoding"},
                      BadCase{"spiffe://cluster.local/ns/%61/sa/b", "percent-encoding"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/b?x=1", "query"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/b#frag", "fragment"},
                      BadCase{"spiffe://cluster.local/ns/a b/sa/b", "illegal character ' '"},
                      BadCase{"spiffe://cluster.local/sa/b/ns/a", "path must be exactly"},
                      BadCase{"spiffe://cluster.local/ns/a/sa/" + std::string(2100, 'x'),
                              "longer than"}));

TEST(SpiffeIdTest, MakeRejectsIllegalSegments) {
  EXPECT_FALSE(SpiffeId::Make("cluster.local", "a/b", "sa").ok());
  EXPECT_FALSE(SpiffeId::Make("cluster.local", "", "sa").ok());
  EXPECT_FALSE(SpiffeId::Make("cluster.local", "ns", "..").ok());
  EXPECT_FALSE(SpiffeId::Make("Cluster", "ns", "sa").ok());
  EXPECT_FALSE(SpiffeId::Make("cluster.local", "ns", std::string(2100, 'a')).ok());
}

// The trust domain alone, by the rules Parse and Make apply to it.
TEST(SpiffeIdTest, ChecksATrustDomainAlone) {
  EXPECT_TRUE(SpiffeId::CheckTrustDomain("cluster.local").ok());
  EXPECT_TRUE(SpiffeId::CheckTrustDomain("prod-1.example_com").ok());
  EXPECT_THAT(std::string(SpiffeId::CheckTrustDomain("td:8080").message()),
              ::testing::HasSubstr("port"));
  for (const char* bad : {"", "Cluster.Local", "a/b", "user@td"}) {
    EXPECT_FALSE(SpiffeId::CheckTrustDomain(bad).ok()) << bad;
    EXPECT_FALSE(SpiffeId::Make(bad, "ns", "sa").ok()) << bad;
  }
}

TEST(SpiffeIdTest, AcceptsLongestAllowedId) {
  const std::string prefix = "spiffe://cluster.local/ns/a/sa/";
  const std::string uri = prefix + std::string(kMaxSpiffeIdLength - prefix.size(), 'x');
  EXPECT_TRUE(SpiffeId::Parse(uri).ok());
  EXPECT_FALSE(SpiffeId::Parse(uri + "x").ok());
}

}  // namespace
}  // namespace nodeward
