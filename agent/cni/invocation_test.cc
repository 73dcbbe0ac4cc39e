#include "agent/cni/invocation.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::cni {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// What podman's bridge + host-local give the next plugin of the chain.
constexpr char kPrevResult[] =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"br0","mac":"d6:d9:23:cd:ee:21"},)"
    R"({"name":"veth77","mac":"da:a5:5d:18:34:0a"},{"name":"eth0","mac":"5e:64:a0:d8:bc:92",)"
    R"("sandbox":"/run/netns/p1"}],"ips":[{"interface":2,"address":"10.250.1.2/24",)"
    R"("gateway":"10.250.1.1"},{"interface":0,"address":"10.250.1.1/24"}],"dns":{}})";

std::string Config(const std::string& extra = "", bool prev = true) {
  return absl::StrCat(R"({"cniVersion":"1.0.0","name":"podnet","type":"nodeward-cni")", extra,
                      prev ? absl::StrCat(R"(,"prevResult":)", kPrevResult) : "", "}");
}

Environment Env(const std::string& command = "ADD") {
  return {{"CNI_COMMAND", command},
          {"CNI_CONTAINERID", "0123abcd"},
          {"CNI_NETNS", "/run/netns/p1"},
          {"CNI_IFNAME", "eth0"},
          {"CNI_ARGS",
           "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=4b2c-11"}};
}

TEST(InvocationTest, ReadsAnAddOfAKubernetesPod) {
  absl::StatusOr<CniInvocation> call =
      ParseInvocation(Env(), Config(R"(,"agentSocket":"/run/a.sock","timeoutSeconds":3)"));
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->command, CniCommand::kAdd);
  EXPECT_EQ(call->container_id, "0123abcd");
  EXPECT_EQ(call->pod.namespace_name, "shop");
  EXPECT_EQ(call->pod.name, "web-1");
  EXPECT_EQ(call->pod.uid, "4b2c-11");
  EXPECT_EQ(call->config.agent_socket, "/run/a.sock");
  EXPECT_EQ(call->config.timeout, absl::Seconds(3));
  // Only the address of the interface inside the sandbox is the pod's.
  EXPECT_THAT(call->config.pod_ips, ElementsAre("10.250.1.2"));
  // prevResult is handed on byte for byte.
  EXPECT_EQ(*call->config.prev_result, kPrevResult);
}

TEST(InvocationTest, VersionNeedsNothingElse) {
  absl::StatusOr<CniInvocation> call = ParseInvocation({{"CNI_COMMAND", "VERSION"}}, "");
  ASSERT_TRUE(call.ok());
  EXPECT_EQ(call->command, CniCommand::kVersion);
  EXPECT_THAT(VersionResultJson(),
              HasSubstr(R"("supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"])"));
}

TEST(InvocationTest, DelWorksWithoutNetnsOrPodArguments) {
  Environment env = Env("DEL");
  env.erase("CNI_NETNS");
  env.erase("CNI_ARGS");
  absl::StatusOr<CniInvocation> call = ParseInvocation(env, Config("", /*prev=*/false));
  ASSERT_TRUE(call.ok()) << call.status();
  EXPECT_EQ(call->command, CniCommand::kDel);
  EXPECT_TRUE(call->pod.name.empty());
}

struct BadCase {
  const char* what;
  Environment env;
  std::string config;
  CniErrorCode code;
  const char* message;
};

TEST(InvocationTest, EveryBadInputGetsItsCodeAndAClearMessage) {
  auto env_without = [](const char* key) {
    Environment env = Env();
    env.erase(key);
    return env;
  };
  auto env_with = [](const char* key, const char* value) {
    Environment env = Env();
    env[key] = value;
    return env;
  };
  const BadCase cases[] = {
      {"no command", env_without("CNI_COMMAND"), Config(), CniErrorCode::kInvalidEnvironment,
       "CNI_COMMAND is not set"},
      {"unknown command", env_with("CNI_COMMAND", "GC"), Config(),
       CniErrorCode::kInvalidEnvironment, "unknown CNI_COMMAND \"GC\""},
      {"no CNI_ARGS", env_without("CNI_ARGS"), Config(), CniErrorCode::kInvalidEnvironment,
       "CNI_ARGS is not set"},
      {"CNI_ARGS without the pod", env_with("CNI_ARGS", "IgnoreUnknown=1"), Config(),
       CniErrorCode::kInvalidEnvironment, "lacks K8S_POD_NAMESPACE"},
      {"CNI_ARGS malformed", env_with("CNI_ARGS", "K8S_POD_NAMESPACE"), Config(),
       CniErrorCode::kInvalidEnvironment, "is not KEY=VALUE"},
      {"CNI_ARGS contradicting itself",
       env_with("CNI_ARGS", "K8S_POD_NAME=a;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=b"), Config(),
       CniErrorCode::kInvalidEnvironment, "gives K8S_POD_NAME twice"},
      {"namespace not a name", env_with("CNI_ARGS", "K8S_POD_NAMESPACE=../x;K8S_POD_NAME=a"),
       Config(), CniErrorCode::kInvalidEnvironment, "is not a namespace name"},
      {"uid not a uid",
       env_with("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a;K8S_POD_UID=a/b"), Config(),
       CniErrorCode::kInvalidEnvironment, "is not a uid"},
      {"container id", env_with("CNI_CONTAINERID", "a/../b"), Config(),
       CniErrorCode::kInvalidEnvironment, "CNI_CONTAINERID"},
      {"relative netns", env_with("CNI_NETNS", "netns"), Config(),
       CniErrorCode::kInvalidEnvironment, "CNI_NETNS must be an absolute path"},
      {"no ifname", env_without("CNI_IFNAME"), Config(), CniErrorCode::kInvalidEnvironment,
       "CNI_IFNAME"},
      {"not JSON", Env(), "{\"cniVersion\":", CniErrorCode::kDecodeFailure, "invalid JSON"},
      {"not an object", Env(), "[]", CniErrorCode::kDecodeFailure, "not a JSON object"},
      {"no version", Env(), R"({"name":"n","type":"t","prevResult":{}})",
       CniErrorCode::kInvalidConfig, "no cniVersion"},
      {"unknown version", Env(), R"({"cniVersion":"2.0.0","name":"n","type":"t"})",
       CniErrorCode::kIncompatibleVersion, "cniVersion 2.0.0 is not one of"},
      {"CHECK before 0.4.0", Env("CHECK"),
       absl::StrCat(R"({"cniVersion":"0.3.1","name":"n","type":"t","prevResult":)", kPrevResult,
                    "}"),
       CniErrorCode::kIncompatibleVersion, "CHECK needs cniVersion 0.4.0"},
      {"not chained", Env(), Config("", false), CniErrorCode::kInvalidConfig,
       "chained plugin and got no prevResult"},
      {"relative socket", Env(), Config(R"(,"agentSocket":"a.sock")"), CniErrorCode::kInvalidConfig,
       "\"agentSocket\" must be an absolute path"},
      {"timeout", Env(), Config(R"(,"timeoutSeconds":0)"), CniErrorCode::kInvalidConfig,
       "timeoutSeconds"},
      {"prevResult ip", Env(),
       R"({"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"x/24"}]}})",
       CniErrorCode::kInvalidConfig, "\"x/24\" is not an IP address"},
      {"prevResult interface", Env(),
       R"({"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":[{"address":"10.1.1.1/24","interface":3}]}})",
       CniErrorCode::kInvalidConfig, "names an interface prevResult does not list"},
  };
  for (const BadCase& bad : cases) {
    absl::StatusOr<CniInvocation> call = ParseInvocation(bad.env, bad.config);
    ASSERT_FALSE(call.ok()) << bad.what;
    EXPECT_EQ(CniErrorCodeOf(call.status()), bad.code) << bad.what << ": " << call.status();
    EXPECT_THAT(std::string(call.status().message()), HasSubstr(bad.message)) << bad.what;
  }
}

TEST(InvocationTest, ErrorsAreCniErrorJson) {
  absl::Status error = CniError(CniErrorCode::kTryAgainLater, "agent \"down\"");
  EXPECT_EQ(ErrorResultJson("0.4.0", error),
            "{\"cniVersion\":\"0.4.0\",\"code\":11,\"msg\":\"agent \\\"down\\\"\"}\n");
  EXPECT_EQ(CniErrorCodeOf(absl::InternalError("x")), CniErrorCode::kCaptureFailed);
  EXPECT_EQ(CniVersionOf(R"({"cniVersion":"0.3.1"})"), "0.3.1");
  EXPECT_EQ(CniVersionOf("garbage"), "1.0.0");
}

}  // namespace
}  // namespace nodeward::cni
