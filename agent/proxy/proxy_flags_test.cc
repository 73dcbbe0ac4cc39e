#include "agent/proxy/proxy_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::proxy {
namespace {

using ::testing::HasSubstr;

// The one trust domain setting: every SPIFFE ID the agent makes and checks is in it, so one
// that no SPIFFE ID can carry stops the agent at start rather than refusing every connection.
TEST(ProxyFlagsTest, TrustDomainMustBeOneASpiffeIdCanCarry) {
  const std::string saved = absl::GetFlag(FLAGS_trust_domain);
  for (const char* bad : {"", "Cluster.Local", "cluster.local:8080", "a/b"}) {
    absl::SetFlag(&FLAGS_trust_domain, bad);
    absl::StatusOr<ProxyOptions> options = ProxyOptionsFromFlags();
    ASSERT_FALSE(options.ok()) << bad;
    EXPECT_THAT(std::string(options.status().message()), HasSubstr("--trust-domain")) << bad;
  }
  absl::SetFlag(&FLAGS_trust_domain, "prod.example.com");
  absl::StatusOr<ProxyOptions> options = ProxyOptionsFromFlags();
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->trust_domain, "prod.example.com");
  absl::SetFlag(&FLAGS_trust_domain, saved);
}

}  // namespace
}  // namespace nodeward::proxy
