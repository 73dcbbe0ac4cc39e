#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"

namespace nodeward::policy {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<ResourceSet> Parse(const std::string& spec, const std::string& version = "v1") {
  ResourceSet set;
  absl::Status status = AppendYamlResources(
      absl::StrCat("apiVersion: security.istio.io/", version,
                   "\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n",
                   spec, "\n"),
      "ap.yaml", set);
  if (!status.ok()) return status;
  return set;
}

TEST(AuthorizationPolicyParse, ReadsEveryL4Field) {
  absl::StatusOr<ResourceSet> set = Parse(R"(  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/a/sa/b", "*"]
        notPrincipals: ["prefix*"]
        namespaces: [a]
        notNamespaces: ["*-test"]
        ipBlocks: [10.0.0.0/8, 1.2.3.4]
        notIpBlocks: ["fd00::/8"]
    - source: {serviceAccounts: [other/sa, local]}
    to:
    - operation: {ports: ["8080"], notPorts: ["9090"]}
    when:
    - {key: source.ip, values: [10.1.0.0/16]}
    - {key: destination.port, notValues: ["22"]})");
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->authorization_policies.size(), 1u);
  const AuthorizationPolicy& p = set->authorization_policies[0];
  EXPECT_EQ(p.action, AuthorizationAction::kDeny);
  ASSERT_TRUE(p.selector.has_value());
  EXPECT_EQ(p.selector->at("app"), "reviews");
  ASSERT_EQ(p.rules.size(), 1u);
  const AuthorizationRule& rule = p.rules[0];
  ASSERT_EQ(rule.from.size(), 2u);
  EXPECT_EQ(rule.from[0].principals[1].kind, StringMatcher::Kind::kPresence);
  EXPECT_EQ(rule.from[0].not_principals[0].kind, StringMatcher::Kind::kPrefix);
  EXPECT_EQ(rule.from[0].not_principals[0].value, "prefix");
  EXPECT_EQ(rule.from[0].not_namespaces[0].kind, StringMatcher::Kind::kSuffix);
  EXPECT_EQ(rule.from[0].ip_blocks[1].prefix_length, 32);
  EXPECT_TRUE(rule.from[0].not_ip_blocks[0].v6);
  EXPECT_EQ(rule.from[1].service_accounts[0].ns, "other");
  EXPECT_EQ(rule.from[1].service_accounts[1].ns, "shop");  // relative to the policy
  EXPECT_EQ(rule.to[0].ports, std::vector<uint32_t>{8080});
  EXPECT_EQ(rule.to[0].not_ports, std::vector<uint32_t>{9090});
  ASSERT_EQ(rule.when.size(), 2u);
  EXPECT_EQ(rule.when[0].kind, AuthorizationCondition::Key::kSourceIp);
  EXPECT_EQ(rule.when[1].not_ports, std::vector<uint32_t>{22});
  EXPECT_TRUE(rule.http_attributes.empty());
}

TEST(AuthorizationPolicyParse, NamesHttpAttributes) {
  absl::StatusOr<ResourceSet> set = Parse(R"(  rules:
  - from: [{source: {requestPrincipals: ["*"], namespaces: [a]}}]
    to: [{operation: {methods: [GET], paths: ["/x"]}}]
    when: [{key: "request.auth.claims[iss]", values: [x]}])");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->authorization_policies[0].rules[0].http_attributes,
              ::testing::ElementsAre("spec.rules[0].from[0].source.requestPrincipals",
                                     "spec.rules[0].to[0].operation.methods",
                                     "spec.rules[0].to[0].operation.paths",
                                     "spec.rules[0].when[0] request.auth.claims[iss]"));
}

TEST(AuthorizationPolicyParse, AcceptsV1beta1AndTheAllowNothingForm) {
  absl::StatusOr<ResourceSet> set = Parse("  {}", "v1beta1");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->authorization_policies[0].action, AuthorizationAction::kAllow);
  EXPECT_TRUE(set->authorization_policies[0].rules.empty());
}

TEST(AuthorizationPolicyParse, ReadsDryRunAndTargetRefs) {
  ResourceSet set;
  ASSERT_TRUE(AppendYamlResources(R"(apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules: [{}]
)",
                                  "ap.yaml", set)
                  .ok());
  EXPECT_TRUE(set.authorization_policies[0].dry_run);
  EXPECT_TRUE(set.authorization_policies[0].targets_waypoint);
}

struct BadCase {
  std::string name;
  std::string spec;
  std::string field;    // expected in the error
  std::string problem;  // expected in the error
};

class AuthorizationPolicyRejects : public ::testing::TestWithParam<BadCase> {};

TEST_P(AuthorizationPolicyRejects, NamingTheResourceAndField) {
  const BadCase& c = GetParam();
  absl::StatusOr<ResourceSet> set = Parse(c.spec);
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("ap.yaml:"));
  EXPECT_THAT(set.status().message(), HasSubstr("AuthorizationPolicy shop/p"));
  EXPECT_THAT(set.status().message(), HasSubstr(c.field));
  EXPECT_THAT(set.status().message(), HasSubstr(c.problem));
}

// Istio's ValidateAuthorizationPolicy (pkg/config/validation) refuses each of these.
INSTANTIATE_TEST_SUITE_P(
    IstioValidation, AuthorizationPolicyRejects,
    ::testing::Values(
        BadCase{"UnknownAction", "  action: ALOW", "spec.action", "unknown action \"ALOW\""},
        BadCase{"BadCidr", "  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]",
                "spec.rules[0].from[0].source.ipBlocks", "prefix length is over 32"},
        BadCase{"NotAnIp", "  rules: [{from: [{source: {notIpBlocks: [10.0.0.x]}}]}]",
                "spec.rules[0].from[0].source.notIpBlocks", "not an IP address or CIDR"},
        BadCase{"BadRemoteIpBlock", "  rules: [{from: [{source: {remoteIpBlocks: [nope]}}]}]",
                "source.remoteIpBlocks", "not an IP address"},
        BadCase{"PortOutOfRange", "  rules: [{to: [{operation: {ports: [\"70000\"]}}]}]",
                "spec.rules[0].to[0].operation.ports", "\"70000\" is not a port number"},
        BadCase{"PortWithLeadingZero", "  rules: [{to: [{operation: {notPorts: [\"08080\"]}}]}]",
                "operation.notPorts", "\"08080\" is not a port number"},
        BadCase{"WhenPortBad", "  rules: [{when: [{key: destination.port, values: [\"0\"]}]}]",
                "spec.rules[0].when[0].values", "is not a port number"},
        BadCase{"WhenUnknownKey", "  rules: [{when: [{key: source.pod, values: [x]}]}]",
                "spec.rules[0].when[0].key", "unknown attribute \"source.pod\""},
        BadCase{"WhenWithoutValues", "  rules: [{when: [{key: source.namespace}]}]",
                "spec.rules[0].when[0]", "set values or notValues"},
        BadCase{"EmptyFrom", "  rules: [{from: []}]", "spec.rules[0].from", "must not be empty"},
        BadCase{"EmptySource", "  rules: [{from: [{source: {}}]}]", "spec.rules[0].from[0].source",
                "must not be empty"},
        BadCase{"MissingSource", "  rules: [{from: [{}]}]", "spec.rules[0].from[0].source",
                "missing"},
        BadCase{"EmptyOperation", "  rules: [{to: [{operation: {}}]}]",
                "spec.rules[0].to[0].operation", "must not be empty"},
        BadCase{"EmptyValue", "  rules: [{from: [{source: {principals: [\"\"]}}]}]",
                "source.principals", "an entry is empty"},
        BadCase{"AccountsWithPrincipals",
                "  rules: [{from: [{source: {serviceAccounts: [a/b], principals: [x]}}]}]",
                "spec.rules[0].from[0].source", "cannot set serviceAccounts with namespaces"},
        BadCase{"BadAccount", "  rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]",
                "source.serviceAccounts", "is not NAMESPACE/SERVICE-ACCOUNT"},
        BadCase{"DenyWithoutRules", "  action: DENY", "spec.rules", "DENY without rules"},
        BadCase{"CustomWithoutProvider", "  action: CUSTOM\n  rules: [{}]", "spec.provider.name",
                "needs a provider"},
        BadCase{"ProviderWithoutCustom", "  provider: {name: opa}\n  rules: [{}]", "spec.provider",
                "only a CUSTOM action takes a provider"},
        BadCase{"SelectorAndTargetRef",
                "  selector: {matchLabels: {a: b}}\n  targetRef: {kind: Gateway, name: w}", "spec",
                "selector cannot be combined with targetRef"},
        BadCase{"RulesNotAList", "  rules: {from: []}", "spec.rules", "expected a list"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST(IpBlockParse, ClearsHostBitsAndKeepsTheText) {
  absl::StatusOr<IpBlock> block = ParseIpBlock("10.1.2.3/8");
  ASSERT_TRUE(block.ok());
  EXPECT_EQ(block->address[0], 10);
  EXPECT_EQ(block->address[1], 0);
  EXPECT_EQ(block->text, "10.1.2.3/8");
  EXPECT_FALSE(ParseIpBlock("10.0.0.0/").ok());
  EXPECT_FALSE(ParseIpBlock("10.0.0.0/08").ok());
  EXPECT_FALSE(ParseIpBlock("10.0.0.0/+8").ok());
  EXPECT_FALSE(ParseIpBlock("::/129").ok());
  EXPECT_TRUE(ParseIpBlock("::/0").ok());
}

}  // namespace
}  // namespace nodeward::policy
