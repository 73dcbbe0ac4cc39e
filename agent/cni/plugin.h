// nodeward-cni's behaviour for one runtime call, apart from reading the process environment:
//  ADD    records the sandbox, asks the agent and returns prevResult unchanged once the agent
//         has captured the netns or said the pod is not to be captured. When the agent cannot
//         answer (down, restarting, not synced), the namespaces it last saw enrolled decide:
//         pods of those fail with "try again later" (the kubelet retries) rather than start
//         uncaptured; every other pod starts at once.
//  DEL    forgets the sandbox and tells the agent; never fails (the agent cleans up what it
//         missed when it starts).
//  CHECK  asks the agent whether the capture is in place; without the agent, as ADD decides.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "agent/cni/invocation.h"

namespace nodeward::cni {

struct PluginRun {
  int exit_code = 0;
  std::string stdout_text;  // the result, or the CNI error JSON
  std::string log_line;     // one JSON line about the call (no newline)
  std::string log_file;     // where the configuration asks for it to go too; may be empty
};

PluginRun RunPlugin(const Environment& environment, absl::string_view stdin_text);

}  // namespace nodeward::cni
