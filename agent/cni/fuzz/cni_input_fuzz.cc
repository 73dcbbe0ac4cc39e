// Untrusted inputs of nodeward-cni: the runtime's environment and stdin, the node's conflist
// and the files the agent and the plugin leave for each other. The first line of the input is
// CNI_ARGS, the second CNI_COMMAND, the rest the JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/cni/conflist.h"
#include "agent/cni/invocation.h"
#include "agent/cni/state_files.h"
#include "common/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t first = input.find('\n');
  const absl::string_view args = input.substr(0, first);
  absl::string_view rest = first == absl::string_view::npos ? "" : input.substr(first + 1);
  const size_t second = rest.find('\n');
  const absl::string_view command = rest.substr(0, second);
  const absl::string_view json = second == absl::string_view::npos ? "" : rest.substr(second + 1);

  nodeward::cni::Environment environment = {{"CNI_COMMAND", std::string(command)},
                                            {"CNI_CONTAINERID", "c0ffee"},
                                            {"CNI_NETNS", "/var/run/netns/x"},
                                            {"CNI_IFNAME", "eth0"},
                                            {"CNI_ARGS", std::string(args)}};
  (void)nodeward::cni::ParseInvocation(environment, json);
  (void)nodeward::cni::CniVersionOf(json);
  absl::StatusOr<nodeward::JsonValue> parsed = nodeward::ParseJson(json);
  if (parsed.ok()) {
    // Serializing and parsing again must give the same text.
    const std::string once = nodeward::SerializeJson(*parsed);
    absl::StatusOr<nodeward::JsonValue> again = nodeward::ParseJson(once);
    if (!again.ok() || nodeward::SerializeJson(*again) != once) __builtin_trap();
  }
  absl::StatusOr<std::string> inserted =
      nodeward::cni::InsertPlugin(json, nodeward::JsonValue::Object());
  if (inserted.ok()) {
    // What the installer wrote must be readable, and removing our entry must work on it.
    absl::StatusOr<std::optional<std::string>> removed = nodeward::cni::RemovePlugin(*inserted);
    if (!removed.ok() || !removed->has_value()) __builtin_trap();
  }
  (void)nodeward::cni::RemovePlugin(json);
  (void)nodeward::cni::ParsePodRecord(json);
  (void)nodeward::cni::ParseEnrolledNamespaces(json);
  return 0;
}
