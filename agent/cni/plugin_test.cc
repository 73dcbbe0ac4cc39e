// nodeward-cni against a real CNI socket served by CniServer, with the agent's decisions
// scripted by a fake handler.
#include "agent/cni/plugin.h"

#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/cni/cni_server.h"
#include "agent/cni/state_files.h"
#include "crypto/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::cni {
namespace {

using ::testing::HasSubstr;

constexpr char kPrevResult[] =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/p1"}],)"
    R"("ips":[{"interface":0,"address":"10.250.1.2/24"}]})";

class ScriptedAgent : public CniHandler {
 public:
  v1::Response Add(const v1::AddRequest& request, absl::Time deadline) override {
    absl::MutexLock lock(&mutex_);
    last_add_ = request;
    if (delay_ > absl::ZeroDuration()) absl::SleepFor(delay_);
    return answer_;
  }
  v1::Response Del(const v1::DelRequest& request) override {
    absl::MutexLock lock(&mutex_);
    last_del_ = request;
    return answer_;
  }
  v1::Response Check(const v1::CheckRequest& request) override {
    absl::MutexLock lock(&mutex_);
    return answer_;
  }
  void Answer(v1::Outcome outcome, std::string reason = "") {
    absl::MutexLock lock(&mutex_);
    answer_.set_outcome(outcome);
    answer_.set_reason(std::move(reason));
  }
  void Delay(absl::Duration delay) {
    absl::MutexLock lock(&mutex_);
    delay_ = delay;
  }
  v1::AddRequest last_add() {
    absl::MutexLock lock(&mutex_);
    return last_add_;
  }
  v1::DelRequest last_del() {
    absl::MutexLock lock(&mutex_);
    return last_del_;
  }

 private:
  absl::Mutex mutex_;
  v1::Response answer_;
  v1::AddRequest last_add_;
  v1::DelRequest last_del_;
  absl::Duration delay_;
};

class PluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    absl::StatusOr<std::unique_ptr<CniServer>> server =
        CniServer::Start(dir_.Sub("cni.sock"), &agent_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  Environment Env(const std::string& command, const std::string& ns = "shop") {
    return {
        {"CNI_COMMAND", command},
        {"CNI_CONTAINERID", "sandbox1"},
        {"CNI_NETNS", "/run/netns/p1"},
        {"CNI_IFNAME", "eth0"},
        {"CNI_ARGS", absl::StrCat("K8S_POD_NAMESPACE=", ns, ";K8S_POD_NAME=web;K8S_POD_UID=u1")}};
  }
  std::string Config(const std::string& socket = "cni.sock") {
    return absl::StrCat(R"({"cniVersion":"1.0.0","name":"pods","type":"nodeward-cni",)",
                        R"("agentSocket":")", dir_.Sub(socket), R"(",)",
                        R"("enrolledNamespacesFile":")", dir_.Sub("enrolled-namespaces"), R"(",)",
                        R"("podStateDir":")", dir_.Sub("pods"), R"(","timeoutSeconds":1,)",
                        R"("prevResult":)", kPrevResult, "}");
  }
  // The agent is gone: calls go to a socket nobody serves.
  std::string ConfigWithoutAgent() { return Config("nobody.sock"); }

  crypto::testing::TempDir dir_;
  ScriptedAgent agent_;
  std::unique_ptr<CniServer> server_;
};

TEST_F(PluginTest, AddReturnsThePreviousResultOnceTheAgentCaptured) {
  agent_.Answer(v1::ENROLLED, "namespace shop has nodeward.io/dataplane-mode=enabled");
  PluginRun run = RunPlugin(Env("ADD"), Config());
  EXPECT_EQ(run.exit_code, 0) << run.stdout_text;
  EXPECT_EQ(run.stdout_text, absl::StrCat(kPrevResult, "\n"));
  EXPECT_THAT(run.log_line, HasSubstr(R"("outcome":"enrolled")"));
  EXPECT_THAT(run.log_line, HasSubstr(R"("pod":"shop/web")"));
  const v1::AddRequest add = agent_.last_add();
  EXPECT_EQ(add.netns(), "/run/netns/p1");
  EXPECT_EQ(add.pod().uid(), "u1");
  ASSERT_EQ(add.ips_size(), 1);
  EXPECT_EQ(add.ips(0), "10.250.1.2");
  // The record the agent can find the netns by later.
  absl::StatusOr<PodRecord> record = ReadPodRecord(dir_.Sub("pods"), "sandbox1");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->uid, "u1");
}

TEST_F(PluginTest, APodNotToBeCapturedStartsAtOnce) {
  agent_.Answer(v1::NOT_ENROLLED, "namespace legacy is not labelled");
  PluginRun run = RunPlugin(Env("ADD", "legacy"), Config());
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.stdout_text, absl::StrCat(kPrevResult, "\n"));
}

TEST_F(PluginTest, AFailedCaptureFailsTheCall) {
  agent_.Answer(v1::FAILED, "open netns /run/netns/p1: No such file or directory");
  PluginRun run = RunPlugin(Env("ADD"), Config());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr(R"("code":100)"));
  EXPECT_THAT(run.stdout_text, HasSubstr("capture failed: open netns"));
}

TEST_F(PluginTest, WithoutTheAgentPodsOfEnrolledNamespacesWait) {
  // Never ran on this node: nothing is known to be enrolled, pods start.
  PluginRun run = RunPlugin(Env("ADD"), ConfigWithoutAgent());
  EXPECT_EQ(run.exit_code, 0) << run.stdout_text;
  EXPECT_THAT(run.log_line, HasSubstr("has not run on this node yet"));

  ASSERT_TRUE(WriteEnrolledNamespaces(dir_.Sub("enrolled-namespaces"), {"shop"}).ok());
  run = RunPlugin(Env("ADD"), ConfigWithoutAgent());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr(R"("code":11)"));
  EXPECT_THAT(run.stdout_text, HasSubstr("no agent at"));
  EXPECT_THAT(run.stdout_text, HasSubstr("namespace shop was enrolled when the agent last ran"));
  EXPECT_THAT(run.log_line, HasSubstr(R"("outcome":"waiting")"));

  // Other namespaces are never held up by the agent's absence.
  run = RunPlugin(Env("ADD", "legacy"), ConfigWithoutAgent());
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.stdout_text, absl::StrCat(kPrevResult, "\n"));
}

TEST_F(PluginTest, AnAgentThatCannotDecideOrDoesNotAnswerIsLikeNoAgent) {
  ASSERT_TRUE(WriteEnrolledNamespaces(dir_.Sub("enrolled-namespaces"), {"shop"}).ok());
  agent_.Answer(v1::UNDECIDED, "no configuration yet");
  PluginRun run = RunPlugin(Env("ADD"), Config());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr("cannot decide yet: no configuration yet"));
  agent_.Delay(absl::Seconds(2));
  run = RunPlugin(Env("ADD"), Config());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr("did not answer in time"));
  agent_.Delay(absl::ZeroDuration());
}

TEST_F(PluginTest, DelForgetsTheSandboxAndNeverFails) {
  agent_.Answer(v1::ENROLLED);
  ASSERT_EQ(RunPlugin(Env("ADD"), Config()).exit_code, 0);
  Environment del = Env("DEL");
  del.erase("CNI_ARGS");  // runtimes may not repeat them
  PluginRun run = RunPlugin(del, Config());
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_TRUE(run.stdout_text.empty());
  EXPECT_EQ(agent_.last_del().pod().uid(), "u1");  // from the record
  EXPECT_FALSE(ReadPodRecord(dir_.Sub("pods"), "sandbox1").ok());
  run = RunPlugin(del, ConfigWithoutAgent());
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.log_line, HasSubstr("releases the pod when it starts"));
}

TEST_F(PluginTest, CheckAsksTheAgent) {
  agent_.Answer(v1::ENROLLED);
  PluginRun run = RunPlugin(Env("CHECK"), Config());
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_TRUE(run.stdout_text.empty());
  agent_.Answer(v1::FAILED, "not enrolled");
  run = RunPlugin(Env("CHECK"), Config());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr("pod is not captured as it must be"));
}

TEST_F(PluginTest, BadInputIsACniErrorAndNothingIsRecorded) {
  PluginRun run = RunPlugin(Env("ADD"), "{\"cniVersion\":\"0.4.0\",");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr(R"("cniVersion":"1.0.0","code":6)"));
  Environment no_args = Env("ADD");
  no_args.erase("CNI_ARGS");
  run = RunPlugin(no_args, Config());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.stdout_text, HasSubstr(R"("code":4,"msg":"CNI_ARGS is not set)"));
  EXPECT_TRUE(ReadPodRecords(dir_.Sub("pods")).records.empty());
  EXPECT_EQ(RunPlugin({{"CNI_COMMAND", "VERSION"}}, "").stdout_text, VersionResultJson());
}

}  // namespace
}  // namespace nodeward::cni
