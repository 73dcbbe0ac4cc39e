// One call of nodeward-cni by a container runtime, as CNI 1.0.0 defines it: the command and
// the container in environment variables, the network configuration (ours and the previous
// plugin's result) on stdin. Parsing is pure, so every malformed input is tested (and fuzzed)
// without a runtime; each error carries the CNI error code the runtime is told.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace nodeward::cni {

// The well-known codes of the CNI specification, and ours from 100 on.
enum class CniErrorCode {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnvironment = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  // The agent decided the pod must be captured and could not capture it.
  kCaptureFailed = 100,
};

// A status that carries `code` for the runtime.
absl::Status CniError(CniErrorCode code, absl::string_view message);
// The code a status carries; kCaptureFailed for statuses made elsewhere.
CniErrorCode CniErrorCodeOf(const absl::Status& status);

// {"cniVersion","code","msg"}: what a failed call prints on stdout.
std::string ErrorResultJson(absl::string_view cni_version, const absl::Status& status);
// The answer to VERSION.
std::string VersionResultJson();

enum class CniCommand { kAdd, kDel, kCheck, kVersion };
const char* CniCommandName(CniCommand command);

// From CNI_ARGS: K8S_POD_NAMESPACE, K8S_POD_NAME and (from runtimes that pass it) K8S_POD_UID.
struct PodIdentity {
  std::string namespace_name;
  std::string name;
  std::string uid;  // empty when the runtime does not pass it
};

// Our entry of the conflist, as the installer writes it, and what the runtime adds to it.
struct PluginConfig {
  std::string cni_version;
  std::string network_name;
  // The agent's CNI socket.
  std::string agent_socket = "/var/run/nodeward/cni.sock";
  // Namespaces the agent last saw enrolled: what decides while the agent cannot answer.
  std::string enrolled_namespaces_file = "/var/run/nodeward/enrolled-namespaces";
  // One record per pod sandbox, so the agent can find a pod's netns later.
  std::string pod_state_dir = "/var/run/nodeward/cni-pods";
  absl::Duration timeout = absl::Seconds(10);
  std::string log_file;  // one JSON line per call; empty: stderr only
  // The previous plugin's result, byte for byte, when there is one.
  std::optional<std::string> prev_result;
  // Addresses prevResult gives the pod's interfaces, normalized.
  std::vector<std::string> pod_ips;
};

struct CniInvocation {
  CniCommand command = CniCommand::kVersion;
  std::string container_id;
  std::string netns;  // may be empty for DEL
  std::string ifname;
  std::map<std::string, std::string> args;
  PodIdentity pod;
  PluginConfig config;
};

using Environment = std::map<std::string, std::string>;

// Reads CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS from `environment`
// and the network configuration from `stdin_text`.
absl::StatusOr<CniInvocation> ParseInvocation(const Environment& environment,
                                              absl::string_view stdin_text);

// The cniVersion of `stdin_text` when it has a readable one, else "1.0.0": errors are written
// in the version the runtime asked for where it can be told.
std::string CniVersionOf(absl::string_view stdin_text);

}  // namespace nodeward::cni
