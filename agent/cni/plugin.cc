#include "agent/cni/plugin.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/cni/agent_client.h"
#include "agent/cni/cni.pb.h"
#include "agent/cni/state_files.h"
#include "common/json.h"

namespace nodeward::cni {
namespace {

// DEL waits this long at most: the runtime is tearing down, and the agent cleans up anyway.
constexpr absl::Duration kDelTimeout = absl::Seconds(5);

struct Fallback {
  bool must_wait = false;
  std::string reason;
};

// What decides while the agent cannot: the namespaces it last saw enrolled.
Fallback DecideWithoutAgent(const PluginConfig& config, const std::string& ns) {
  absl::StatusOr<std::set<std::string>> enrolled =
      ReadEnrolledNamespaces(config.enrolled_namespaces_file);
  if (enrolled.status().code() == absl::StatusCode::kNotFound) {
    return {false, absl::StrCat("the agent has not run on this node yet (no ",
                                config.enrolled_namespaces_file, ")")};
  }
  if (!enrolled.ok()) {
    return {true, absl::StrCat("the enrolled namespaces cannot be read (",
                               enrolled.status().message(), ")")};
  }
  if (enrolled->contains(ns)) {
    return {true, absl::StrCat("namespace ", ns, " was enrolled when the agent last ran")};
  }
  return {false, absl::StrCat("namespace ", ns, " was not enrolled when the agent last ran")};
}

v1::PodRef PodRefOf(const PodIdentity& pod) {
  v1::PodRef ref;
  ref.set_namespace_(pod.namespace_name);
  ref.set_name(pod.name);
  ref.set_uid(pod.uid);
  return ref;
}

struct Outcome {
  absl::Status status;  // not OK: the call fails with this
  std::string outcome;  // for the log: enrolled, not_enrolled, waiting, failed, ...
  std::string reason;
  uint64_t netns_cookie = 0;
};

// ADD and CHECK: the agent's answer, or the fallback when it has none.
Outcome Decide(const CniInvocation& call, const absl::StatusOr<v1::Response>& answer, bool check) {
  Outcome result;
  std::string why_not;
  if (answer.ok()) {
    result.reason = answer->reason();
    result.netns_cookie = answer->netns_cookie();
    switch (answer->outcome()) {
      case v1::ENROLLED:
        result.outcome = "enrolled";
        return result;
      case v1::NOT_ENROLLED:
        result.outcome = "not_enrolled";
        return result;
      case v1::FAILED:
        result.outcome = "failed";
        result.status = CniError(
            CniErrorCode::kCaptureFailed,
            absl::StrCat(check ? "pod is not captured as it must be: " : "capture failed: ",
                         answer->reason()));
        return result;
      default:
        why_not = absl::StrCat("the agent cannot decide yet: ", answer->reason());
    }
  } else {
    why_not = std::string(answer.status().message());
  }
  const Fallback fallback = DecideWithoutAgent(call.config, call.pod.namespace_name);
  result.reason = absl::StrCat(why_not, "; ", fallback.reason);
  if (fallback.must_wait) {
    result.outcome = "waiting";
    result.status = CniError(CniErrorCode::kTryAgainLater,
                             absl::StrCat(result.reason, ": the pod must not start uncaptured"));
  } else {
    result.outcome = "without_agent";
  }
  return result;
}

std::string LogLine(const CniInvocation& call, const Outcome& outcome, absl::Duration took) {
  std::vector<JsonValue::Member> members = {
      {"time", JsonValue::String(
                   absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()))},
      {"command", JsonValue::String(CniCommandName(call.command))},
      {"pod", JsonValue::String(absl::StrCat(call.pod.namespace_name, "/", call.pod.name))},
      {"uid", JsonValue::String(call.pod.uid)},
      {"container", JsonValue::String(call.container_id)},
      {"netns", JsonValue::String(call.netns)},
      {"outcome", JsonValue::String(outcome.outcome)},
      {"tookMs", JsonValue::Number(absl::StrCat(absl::ToInt64Milliseconds(took)))},
  };
  if (!outcome.reason.empty()) members.emplace_back("reason", JsonValue::String(outcome.reason));
  if (!outcome.status.ok()) {
    members.emplace_back("error", JsonValue::String(std::string(outcome.status.message())));
  }
  return SerializeJson(JsonValue::Object(std::move(members)));
}

}  // namespace

PluginRun RunPlugin(const Environment& environment, absl::string_view stdin_text) {
  const absl::Time start = absl::Now();
  PluginRun run;
  absl::StatusOr<CniInvocation> parsed = ParseInvocation(environment, stdin_text);
  if (!parsed.ok()) {
    run.exit_code = 1;
    run.stdout_text = ErrorResultJson(CniVersionOf(stdin_text), parsed.status());
    run.log_line = SerializeJson(
        JsonValue::Object({{"outcome", JsonValue::String("invalid")},
                           {"error", JsonValue::String(std::string(parsed.status().message()))}}));
    return run;
  }
  const CniInvocation& call = *parsed;
  if (call.command == CniCommand::kVersion) {
    run.stdout_text = VersionResultJson();
    return run;
  }
  run.log_file = call.config.log_file;
  Outcome outcome;

  if (call.command == CniCommand::kDel) {
    std::string uid = call.pod.uid;
    if (absl::StatusOr<PodRecord> record =
            ReadPodRecord(call.config.pod_state_dir, call.container_id);
        record.ok() && uid.empty()) {
      uid = record->uid;
    }
    if (absl::Status removed = RemovePodRecord(call.config.pod_state_dir, call.container_id);
        !removed.ok()) {
      outcome.reason = std::string(removed.message());
    }
    v1::Request request;
    request.mutable_del()->set_container_id(call.container_id);
    *request.mutable_del()->mutable_pod() = PodRefOf(call.pod);
    request.mutable_del()->mutable_pod()->set_uid(uid);
    absl::StatusOr<v1::Response> answer =
        CallAgent(call.config.agent_socket, request, std::min(call.config.timeout, kDelTimeout));
    if (answer.ok()) {
      outcome.outcome = answer->outcome() == v1::ENROLLED ? "released" : "not_enrolled";
      outcome.reason = answer->reason();
    } else {
      outcome.outcome = "without_agent";
      outcome.reason =
          absl::StrCat(answer.status().message(), "; the agent releases the pod when it starts");
    }
    run.log_line = LogLine(call, outcome, absl::Now() - start);
    return run;
  }

  v1::Request request;
  if (call.command == CniCommand::kAdd) {
    PodRecord record;
    record.container_id = call.container_id;
    record.netns = call.netns;
    record.namespace_name = call.pod.namespace_name;
    record.name = call.pod.name;
    record.uid = call.pod.uid;
    record.ifname = call.ifname;
    record.ips = call.config.pod_ips;
    record.added_unix_ms = absl::ToUnixMillis(absl::Now());
    // Losing the record only costs the agent a scan of /proc later; the pod still starts.
    if (absl::Status written = WritePodRecord(call.config.pod_state_dir, record); !written.ok()) {
      outcome.reason = absl::StrCat("pod record not written: ", written.message());
    }
    v1::AddRequest& add = *request.mutable_add();
    add.set_container_id(call.container_id);
    add.set_netns(call.netns);
    add.set_ifname(call.ifname);
    *add.mutable_pod() = PodRefOf(call.pod);
    for (const std::string& ip : call.config.pod_ips) add.add_ips(ip);
    add.set_timeout_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(call.config.timeout)));
  } else {
    v1::CheckRequest& check = *request.mutable_check();
    check.set_container_id(call.container_id);
    check.set_netns(call.netns);
    *check.mutable_pod() = PodRefOf(call.pod);
  }
  const std::string record_note = outcome.reason;
  outcome = Decide(call, CallAgent(call.config.agent_socket, request, call.config.timeout),
                   call.command == CniCommand::kCheck);
  if (!record_note.empty()) absl::StrAppend(&outcome.reason, "; ", record_note);
  run.log_line = LogLine(call, outcome, absl::Now() - start);
  if (!outcome.status.ok()) {
    run.exit_code = 1;
    run.stdout_text = ErrorResultJson(call.config.cni_version, outcome.status);
    return run;
  }
  // CHECK prints nothing on success; ADD passes the chain's result on as it came.
  if (call.command == CniCommand::kAdd)
    run.stdout_text = absl::StrCat(*call.config.prev_result, "\n");
  return run;
}

}  // namespace nodeward::cni
