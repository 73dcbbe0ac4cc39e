#include "agent/cni/invocation.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/json.h"

namespace nodeward::cni {
namespace {

constexpr char kCodePayload[] = "type.nodeward.io/cni-error-code";
constexpr const char* kSupportedVersions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0"};
// A network configuration is a few KiB; a prevResult with many interfaces stays far below.
constexpr std::size_t kMaxConfig = 1 << 20;

bool IsSupportedVersion(absl::string_view version) {
  for (const char* supported : kSupportedVersions) {
    if (version == supported) return true;
  }
  return false;
}

// RFC 1123 label (namespaces) or subdomain (pod names), as Kubernetes validates them.
bool IsDnsName(absl::string_view name, std::size_t max_length, bool dots) {
  if (name.empty() || name.size() > max_length) return false;
  for (const char c : name) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || (dots && c == '.'))) {
      return false;
    }
  }
  return absl::ascii_isalnum(name.front()) && absl::ascii_isalnum(name.back());
}

bool IsSafeIdentifier(absl::string_view id, std::size_t max_length) {
  if (id.empty() || id.size() > max_length) return false;
  for (const char c : id) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return id != "." && id != "..";
}

absl::StatusOr<std::map<std::string, std::string>> ParseCniArgs(absl::string_view text) {
  std::map<std::string, std::string> args;
  for (absl::string_view entry : absl::StrSplit(text, ';', absl::SkipEmpty())) {
    const std::size_t equals = entry.find('=');
    if (equals == absl::string_view::npos || equals == 0) {
      return CniError(CniErrorCode::kInvalidEnvironment,
                      absl::StrCat("CNI_ARGS entry \"", entry, "\" is not KEY=VALUE"));
    }
    std::string key(entry.substr(0, equals));
    std::string value(entry.substr(equals + 1));
    auto [it, inserted] = args.emplace(key, value);
    // Podman sets K8S_POD_NAME from the container name and then appends the caller's
    // CNI_ARGS; two different answers to one question cannot be trusted.
    if (!inserted && it->second != value) {
      return CniError(CniErrorCode::kInvalidEnvironment,
                      absl::StrCat("CNI_ARGS gives ", key, " twice (\"", it->second, "\" and \"",
                                   value, "\")"));
    }
  }
  return args;
}

absl::StatusOr<std::string> NormalizeAddress(absl::string_view text) {
  const std::string ip(text.substr(0, text.find('/')));
  char buffer[INET6_ADDRSTRLEN] = {};
  in6_addr v6{};
  in_addr v4{};
  if (inet_pton(AF_INET, ip.c_str(), &v4) == 1) {
    inet_ntop(AF_INET, &v4, buffer, sizeof(buffer));
    return std::string(buffer);
  }
  if (inet_pton(AF_INET6, ip.c_str(), &v6) == 1) {
    inet_ntop(AF_INET6, &v6, buffer, sizeof(buffer));
    return std::string(buffer);
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IP address"));
}

// The addresses of the pod's own interfaces: those of prevResult's "ips" whose interface is in
// a sandbox (or that name no interface).
absl::StatusOr<std::vector<std::string>> PodAddresses(const JsonValue& result) {
  std::vector<std::string> addresses;
  const JsonValue* ips = result.Find("ips");
  if (ips == nullptr) return addresses;
  if (!ips->is_array())
    return CniError(CniErrorCode::kInvalidConfig, "prevResult.ips is not a list");
  const JsonValue* interfaces = result.Find("interfaces");
  for (const JsonValue& ip : ips->items()) {
    if (!ip.is_object() || ip.StringAt("address").empty()) {
      return CniError(CniErrorCode::kInvalidConfig, "prevResult.ips entry without an address");
    }
    if (const JsonValue* index = ip.Find("interface"); index != nullptr) {
      uint32_t i = 0;
      if (index->type() != JsonValue::Type::kNumber || !absl::SimpleAtoi(index->text(), &i) ||
          interfaces == nullptr || !interfaces->is_array() || i >= interfaces->items().size()) {
        return CniError(CniErrorCode::kInvalidConfig,
                        "prevResult.ips names an interface prevResult does not list");
      }
      if (interfaces->items()[i].StringAt("sandbox").empty()) continue;  // the host side
    }
    absl::StatusOr<std::string> address = NormalizeAddress(ip.StringAt("address"));
    if (!address.ok()) {
      return CniError(CniErrorCode::kInvalidConfig,
                      absl::StrCat("prevResult.ips: ", address.status().message()));
    }
    addresses.push_back(*std::move(address));
  }
  return addresses;
}

absl::StatusOr<std::string> AbsolutePath(const JsonValue& config, absl::string_view key,
                                         std::string fallback) {
  const JsonValue* value = config.Find(key);
  if (value == nullptr) return fallback;
  if (!value->is_string() || value->text().empty() || value->text().front() != '/') {
    return CniError(CniErrorCode::kInvalidConfig,
                    absl::StrCat("\"", key, "\" must be an absolute path"));
  }
  return value->text();
}

absl::Status ParsePluginConfig(absl::string_view text, CniCommand command, PluginConfig& config) {
  if (text.size() > kMaxConfig) {
    return CniError(CniErrorCode::kDecodeFailure, "network configuration over 1 MiB");
  }
  absl::StatusOr<JsonValue> parsed = ParseJson(text);
  if (!parsed.ok()) {
    return CniError(CniErrorCode::kDecodeFailure,
                    absl::StrCat("network configuration: ", parsed.status().message()));
  }
  if (!parsed->is_object()) {
    return CniError(CniErrorCode::kDecodeFailure, "network configuration is not a JSON object");
  }
  config.cni_version = parsed->StringAt("cniVersion");
  if (config.cni_version.empty()) {
    return CniError(CniErrorCode::kInvalidConfig, "network configuration has no cniVersion");
  }
  if (!IsSupportedVersion(config.cni_version)) {
    return CniError(CniErrorCode::kIncompatibleVersion,
                    absl::StrCat("cniVersion ", config.cni_version, " is not one of ",
                                 absl::StrJoin(kSupportedVersions, ", ")));
  }
  if (command == CniCommand::kCheck &&
      (config.cni_version == "0.3.0" || config.cni_version == "0.3.1")) {
    return CniError(
        CniErrorCode::kIncompatibleVersion,
        absl::StrCat("CHECK needs cniVersion 0.4.0 or later, not ", config.cni_version));
  }
  config.network_name = parsed->StringAt("name");
  if (config.network_name.empty() || parsed->StringAt("type").empty()) {
    return CniError(CniErrorCode::kInvalidConfig, "network configuration needs a name and a type");
  }
  absl::StatusOr<std::string> path =
      AbsolutePath(*parsed, "agentSocket", std::move(config.agent_socket));
  if (!path.ok()) return path.status();
  config.agent_socket = *std::move(path);
  path =
      AbsolutePath(*parsed, "enrolledNamespacesFile", std::move(config.enrolled_namespaces_file));
  if (!path.ok()) return path.status();
  config.enrolled_namespaces_file = *std::move(path);
  path = AbsolutePath(*parsed, "podStateDir", std::move(config.pod_state_dir));
  if (!path.ok()) return path.status();
  config.pod_state_dir = *std::move(path);
  path = AbsolutePath(*parsed, "logFile", "");
  if (!path.ok()) return path.status();
  config.log_file = *std::move(path);
  if (const JsonValue* timeout = parsed->Find("timeoutSeconds"); timeout != nullptr) {
    uint32_t seconds = 0;
    if (timeout->type() != JsonValue::Type::kNumber ||
        !absl::SimpleAtoi(timeout->text(), &seconds) || seconds == 0 || seconds > 300) {
      return CniError(CniErrorCode::kInvalidConfig, "\"timeoutSeconds\" must be 1 to 300");
    }
    config.timeout = absl::Seconds(seconds);
  }

  if (const JsonValue* prev = parsed->Find("prevResult"); prev != nullptr) {
    if (!prev->is_object())
      return CniError(CniErrorCode::kInvalidConfig, "prevResult is not an object");
    config.prev_result = std::string(text.substr(prev->source_offset(), prev->source_length()));
    absl::StatusOr<std::vector<std::string>> ips = PodAddresses(*prev);
    if (!ips.ok()) return ips.status();
    config.pod_ips = *std::move(ips);
  }
  if ((command == CniCommand::kAdd || command == CniCommand::kCheck) &&
      !config.prev_result.has_value()) {
    return CniError(CniErrorCode::kInvalidConfig,
                    "nodeward-cni is a chained plugin and got no prevResult: list it after the "
                    "plugin that sets up the pod's interface");
  }
  return absl::OkStatus();
}

std::string Get(const Environment& environment, const char* name) {
  auto it = environment.find(name);
  return it == environment.end() ? "" : it->second;
}

}  // namespace

absl::Status CniError(CniErrorCode code, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  if (code == CniErrorCode::kTryAgainLater) status = absl::UnavailableError(message);
  if (code == CniErrorCode::kIoFailure) status = absl::InternalError(message);
  status.SetPayload(kCodePayload, absl::Cord(absl::StrCat(static_cast<int>(code))));
  return status;
}

CniErrorCode CniErrorCodeOf(const absl::Status& status) {
  auto payload = status.GetPayload(kCodePayload);
  int code = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &code)) {
    return CniErrorCode::kCaptureFailed;
  }
  return static_cast<CniErrorCode>(code);
}

std::string ErrorResultJson(absl::string_view cni_version, const absl::Status& status) {
  return absl::StrCat(R"({"cniVersion":)", QuoteJson(cni_version), R"(,"code":)",
                      static_cast<int>(CniErrorCodeOf(status)), R"(,"msg":)",
                      QuoteJson(status.message()), "}\n");
}

std::string VersionResultJson() {
  std::vector<std::string> quoted;
  for (const char* version : kSupportedVersions) quoted.push_back(QuoteJson(version));
  return absl::StrCat(R"({"cniVersion":"1.0.0","supportedVersions":[)", absl::StrJoin(quoted, ","),
                      "]}\n");
}

const char* CniCommandName(CniCommand command) {
  switch (command) {
    case CniCommand::kAdd:
      return "ADD";
    case CniCommand::kDel:
      return "DEL";
    case CniCommand::kCheck:
      return "CHECK";
    case CniCommand::kVersion:
      return "VERSION";
  }
  return "?";
}

std::string CniVersionOf(absl::string_view stdin_text) {
  absl::StatusOr<JsonValue> parsed = ParseJson(stdin_text.substr(0, kMaxConfig));
  if (parsed.ok() && parsed->is_object()) {
    std::string version = parsed->StringAt("cniVersion");
    if (IsSupportedVersion(version)) return version;
  }
  return "1.0.0";
}

absl::StatusOr<CniInvocation> ParseInvocation(const Environment& environment,
                                              absl::string_view stdin_text) {
  CniInvocation call;
  const std::string command = Get(environment, "CNI_COMMAND");
  if (command == "ADD") {
    call.command = CniCommand::kAdd;
  } else if (command == "DEL") {
    call.command = CniCommand::kDel;
  } else if (command == "CHECK") {
    call.command = CniCommand::kCheck;
  } else if (command == "VERSION") {
    call.command = CniCommand::kVersion;
    return call;
  } else if (command.empty()) {
    return CniError(CniErrorCode::kInvalidEnvironment,
                    "CNI_COMMAND is not set: nodeward-cni is run by a container runtime "
                    "(or as \"nodeward-cni install|uninstall\")");
  } else {
    return CniError(
        CniErrorCode::kInvalidEnvironment,
        absl::StrCat("unknown CNI_COMMAND \"", command, "\" (ADD, DEL, CHECK, VERSION)"));
  }

  call.container_id = Get(environment, "CNI_CONTAINERID");
  if (!IsSafeIdentifier(call.container_id, 256)) {
    return CniError(CniErrorCode::kInvalidEnvironment,
                    "CNI_CONTAINERID must be 1-256 of [A-Za-z0-9._-]");
  }
  call.ifname = Get(environment, "CNI_IFNAME");
  if (call.ifname.empty())
    return CniError(CniErrorCode::kInvalidEnvironment, "CNI_IFNAME is not set");
  call.netns = Get(environment, "CNI_NETNS");
  if (call.command != CniCommand::kDel && (call.netns.empty() || call.netns.front() != '/')) {
    return CniError(CniErrorCode::kInvalidEnvironment, "CNI_NETNS must be an absolute path");
  }

  const std::string args_text = Get(environment, "CNI_ARGS");
  absl::StatusOr<std::map<std::string, std::string>> args = ParseCniArgs(args_text);
  if (!args.ok()) return args.status();
  call.args = *std::move(args);
  auto arg = [&](const char* key) {
    auto it = call.args.find(key);
    return it == call.args.end() ? std::string() : it->second;
  };
  call.pod.namespace_name = arg("K8S_POD_NAMESPACE");
  call.pod.name = arg("K8S_POD_NAME");
  call.pod.uid = arg("K8S_POD_UID");
  // Without them the plugin cannot tell whose netns this is; DEL still cleans up by container.
  if (call.command != CniCommand::kDel) {
    if (call.pod.namespace_name.empty() || call.pod.name.empty()) {
      return CniError(CniErrorCode::kInvalidEnvironment,
                      args_text.empty()
                          ? "CNI_ARGS is not set: K8S_POD_NAMESPACE and K8S_POD_NAME are needed"
                          : "CNI_ARGS lacks K8S_POD_NAMESPACE or K8S_POD_NAME");
    }
  }
  if (!call.pod.namespace_name.empty() && !IsDnsName(call.pod.namespace_name, 63, false)) {
    return CniError(CniErrorCode::kInvalidEnvironment,
                    absl::StrCat("K8S_POD_NAMESPACE \"", call.pod.namespace_name,
                                 "\" is not a namespace name"));
  }
  if (!call.pod.name.empty() && !IsDnsName(call.pod.name, 253, true)) {
    return CniError(CniErrorCode::kInvalidEnvironment,
                    absl::StrCat("K8S_POD_NAME \"", call.pod.name, "\" is not a pod name"));
  }
  if (!call.pod.uid.empty() && !IsSafeIdentifier(call.pod.uid, 200)) {
    return CniError(CniErrorCode::kInvalidEnvironment,
                    absl::StrCat("K8S_POD_UID \"", call.pod.uid, "\" is not a uid"));
  }

  if (absl::Status status = ParsePluginConfig(stdin_text, call.command, call.config);
      !status.ok()) {
    return status;
  }
  return call;
}

}  // namespace nodeward::cni
