// nodewardctl's command layer: the command line (abseil flags, dashed spelling) checked before
// anything is sent, one admin API call per command, and exit codes scripts can trust:
//   0 ok, 1 the agent answered with an error, 2 usage error, 3 the agent is not reachable.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/admin/admin.grpc.pb.h"
#include "agent/ctl/format.h"

namespace nodeward::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitAgentError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

inline constexpr char kDefaultSocket[] = "/var/run/nodeward/admin.sock";
// nodeward-gateway's admin API, on its pod's loopback.
inline constexpr char kDefaultGatewayAddress[] = "127.0.0.1:15000";

// A checked command line.
struct Invocation {
  // The command's words: {"workloads"}, {"policy", "explain"}, {"config", "dump"}, {"help"} ...
  std::string command;
  bool help = false;  // --help / -h / `help COMMAND`: print the command's usage, call nothing
  std::string socket = kDefaultSocket;
  std::string address;  // HOST:PORT: TCP instead of the socket
  OutputFormat output = OutputFormat::kTable;
  absl::Duration timeout = absl::Seconds(5);
  admin::v1::ExplainPolicyRequest explain;  // policy explain
  bool explain_gateway = false;             // policy explain --gateway
  admin::v1::ExplainGatewayRequest gateway_explain;
  std::string level;           // log-level
  uint32_t grace_seconds = 5;  // drain

  // "unix:/var/run/nodeward/admin.sock" or the TCP address: what the channel dials.
  std::string Target() const;
};

// Parses `args` (without the program name). Errors are usage errors (exit 2), with a message
// that names the offending argument.
absl::StatusOr<Invocation> ParseArguments(const std::vector<std::string>& args);

// Argument checks shared with the parser, exposed for tests.
absl::Status ValidatePodName(const std::string& text, const char* flag);  // NS/POD
absl::StatusOr<std::pair<std::string, uint32_t>> ParseHostPort(const std::string& text,
                                                               const char* flag);  // IP:PORT
absl::Status ValidateLogLevel(const std::string& level);

// The usage text of `command` ("" for the overview).
std::string Usage(const std::string& command);

// Runs a parsed invocation against `stub`. `channel` (may be null) tells "not reachable" from
// "answered with an error" when a call fails; `now` is the reference for REFRESH-IN.
int Execute(const Invocation& invocation, admin::v1::Admin::StubInterface& stub,
            grpc::Channel* channel, std::ostream& out, std::ostream& err, absl::Time now);

// The whole CLI: parse, dial, execute. Returns the exit code.
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace nodeward::ctl
