// Over 600 lines on purpose: the command table, flag parsing and the calls it turns into share
// one Invocation; a command's parsing and execution are kept next to each other so adding a
// command touches one file.
#include "agent/ctl/commands.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/ctl/gateway_format.h"
#include "common/dashed_flags.h"
#include "common/port_number.h"
#include "grpcpp/grpcpp.h"

#ifndef NODEWARD_VERSION
#define NODEWARD_VERSION "dev"
#endif

// Global flags.
ABSL_FLAG(std::string, socket, nodeward::ctl::kDefaultSocket, "the agent's admin Unix socket");
ABSL_FLAG(std::string, address, "",
          "HOST:PORT of the agent's admin API over TCP (the node's 127.0.0.1:15000) instead of "
          "the socket");
ABSL_FLAG(std::string, output, "table", "table, json or yaml (also -o)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline of the call");
// policy explain
ABSL_FLAG(std::string, from, "", "policy explain: the client pod, NAMESPACE/NAME");
ABSL_FLAG(std::string, to, "", "policy explain: the destination, IP:PORT");
ABSL_FLAG(std::string, inbound, "", "policy explain: the receiving pod and port, NS/NAME:PORT");
ABSL_FLAG(bool, plaintext, false, "policy explain --inbound: the connection arrives plaintext");
ABSL_FLAG(std::string, peer, "", "policy explain --inbound: the client's SPIFFE ID (mTLS)");
ABSL_FLAG(std::string, source_ip, "",
          "policy explain --inbound: the client's address, for ipBlocks and source.ip");
ABSL_FLAG(std::string, destination_ip, "",
          "policy explain --inbound: the pod address the client asked for (default: its first)");
ABSL_FLAG(std::string, sni, "",
          "policy explain: the server name of the client's TLS (--inbound: for connection.sni; "
          "--gateway: which server and route it gets)");
ABSL_FLAG(std::string, gateway, "",
          "policy explain: a port of the ingress gateway (nodeward-gateway) to ask about");
// drain
ABSL_FLAG(absl::Duration, grace, absl::Seconds(5),
          "drain: how long live connections may finish before they are cut");

namespace nodeward::ctl {
namespace {

namespace v1 = admin::v1;

struct CommandSpec {
  std::string name;  // as typed: "policy explain"
  std::string arguments;
  std::string summary;
  std::set<std::string> flags;  // beyond the global ones
  std::string details;
};

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> commands = {
      {"workloads",
       "",
       "pods enrolled on this node: identity, addresses, netns, listeners",
       {},
       "Columns: NAMESPACE NAME SERVICE-ACCOUNT IPS NETNS-COOKIE LISTENERS REASON.\n"},
      {"certs",
       "",
       "workload certificates and trust roots held by the agent",
       {},
       "Columns: SPIFFE-ID STATE SERIAL NOT-BEFORE NOT-AFTER REFRESH-IN LAST-ERROR, then the\n"
       "trust roots (SUBJECT SERIAL NOT-AFTER FINGERPRINT).\n"},
      {"policy explain",
       "--from=NS/POD --to=IP:PORT | --inbound=NS/POD:PORT [--plaintext] "
       "[--peer=SPIFFE-ID] [--source-ip=IP] [--destination-ip=IP] [--sni=NAME] | "
       "--gateway=PORT [--sni=NAME]",
       "what the agent (or the gateway) would do with a connection, and why",
       {"from", "to", "inbound", "plaintext", "peer", "source_ip", "destination_ip", "sni",
        "gateway"},
       "Outbound: --from the client pod (enrolled on this node) --to the destination address.\n"
       "Inbound: --inbound the receiving pod and port, arriving over mesh mTLS from --peer, or\n"
       "--plaintext, from --source-ip (without it, AuthorizationPolicy conditions on the\n"
       "source address fail closed) with TLS server name --sni. Prints the action, the reason\n"
       "and its code, the destination and the expected peer identities, the mTLS mode per\n"
       "level (mesh, namespace, workload, port, effective), the AuthorizationPolicy outcome\n"
       "and the policy that decided it, the resources that decided, then the trace and\n"
       "warnings.\n"
       "Gateway: --gateway a port of nodeward-gateway (asked at 127.0.0.1:15000 unless\n"
       "--address or --socket says otherwise) and the client's --sni (none without it):\n"
       "the server and route it gets, the destination, and what the gateway does toward it\n"
       "(HBONE, TLS origination, plaintext).\n"},
      {"gateway listeners",
       "",
       "the ingress gateway's ports, their servers by SNI, routes and destinations",
       {},
       "Asks nodeward-gateway (127.0.0.1:15000 in its pod unless --address or --socket).\n"
       "Columns: PORT KIND BOUND SNI MODE SERVER ROUTE DESTINATIONS, one row per filter chain;\n"
       "servers no route reaches show as refused. Then the Gateways' trace and warnings.\n"},
      {"gateway certs",
       "",
       "which certificate the ingress gateway serves for each server, and its state",
       {},
       "Columns: PORT HOSTS MODE STATE SUBJECT SANS NOT-AFTER EXPIRES-IN SOURCES LAST-ERROR.\n"
       "STATE is serving, stale (the source's new material does not build: the last good one\n"
       "serves, LAST-ERROR says why) or unavailable.\n"},
      {"connections",
       "",
       "live connections carried by the agent",
       {},
       "Columns: DIRECTION SOURCE SOURCE-PRINCIPAL DESTINATION DESTINATION-PRINCIPAL MODE SENT\n"
       "RECEIVED AGE. MODE is hbone_mtls, same_node, tls_origination or plaintext.\n"},
      {"tunnels",
       "",
       "HBONE tunnels: pooled client tunnels and accepted server tunnels",
       {},
       "Columns: ROLE POD LOCAL-IDENTITY PEER-IDENTITY PEER-ADDRESS STREAMS OPENED AGE STATE.\n"},
      {"bpf",
       "",
       "the capture programs' state: enrolled netns, pod addresses, listeners",
       {},
       "Enrolled network namespaces, pod addresses, inbound listeners, counters and the\n"
       "attached programs.\n"},
      {"config dump",
       "",
       "the configuration the agent decides with",
       {},
       "The objects the agent holds (KIND NAMESPACE NAME ORIGIN and the fields that matter);\n"
       "-o json or -o yaml prints the whole response.\n"},
      {"log-level", "LEVEL", "set the agent's log level (debug, info, warning, error)", {}, ""},
      {"drain",
       "[--grace=5s]",
       "drain the agent: refuse new connections, GOAWAY tunnels, cut the rest after --grace",
       {"grace"},
       ""},
      {"version", "", "print nodewardctl's version", {}, ""},
  };
  return commands;
}

const CommandSpec* FindCommand(const std::string& name) {
  std::string canonical = name == "certificates"           ? "certs"
                          : name == "gateway certificates" ? "gateway certs"
                                                           : name;
  for (const CommandSpec& spec : Commands()) {
    if (spec.name == canonical) return &spec;
  }
  return nullptr;
}

const std::set<std::string>& GlobalFlags() {
  static const std::set<std::string> flags = {"socket", "address", "output", "timeout"};
  return flags;
}

const std::vector<std::string>& AllFlags() {
  static const std::vector<std::string> flags = {
      "socket",    "address", "output",    "timeout",        "from", "to",      "inbound",
      "plaintext", "peer",    "source_ip", "destination_ip", "sni",  "gateway", "grace"};
  return flags;
}

absl::Status UsageError(const std::string& message) { return absl::InvalidArgumentError(message); }

std::string Dashed(std::string name) {
  for (char& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

// Reads the value of one of our flags.
template <typename T>
T Get(const absl::Flag<T>& flag) {
  return absl::GetFlag(flag);
}

struct FlagUse {
  std::string name;  // canonical, underscored
  std::string value;
};

// Splits arguments into flags and positional words. Both spellings of names, "-o" for
// --output, "-h" for --help, "--x=v" and "--x v", "--nox" for a boolean.
absl::Status Split(const std::vector<std::string>& raw, std::vector<FlagUse>& flags,
                   std::vector<std::string>& words, bool& help) {
  std::vector<std::string> store;
  std::vector<char*> argv_in;
  std::vector<std::string> copy = raw;
  copy.insert(copy.begin(), "nodewardctl");
  for (std::string& a : copy) argv_in.push_back(a.data());
  std::vector<char*> args =
      DashedFlagsToUnderscores(static_cast<int>(argv_in.size()), argv_in.data(), store);
  bool options_ended = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string arg = args[i];
    if (options_ended || arg.size() < 2 || arg[0] != '-') {
      words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body, value;
    bool has_value = false;
    if (std::size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    } else if (arg[1] != '-' && body.size() > 1 && body[0] == 'o' && body[1] != 'u') {
      // "-ojson"
      name = "o";
      value = body.substr(1);
      has_value = true;
    }
    // One dash works like two (-socket = --socket); -o and -h are the short forms.
    for (char& c : name) {
      if (c == '-') c = '_';
    }
    if (name == "o") name = "output";
    if (name == "h" || name == "help") {
      help = true;
      continue;
    }
    bool known = false, is_bool = false;
    for (const std::string& f : AllFlags()) {
      if (f == name) known = true;
    }
    if (known) {
      is_bool = absl::FindCommandLineFlag(name)->IsOfType<bool>();
    } else if (absl::StartsWith(name, "no") && !has_value) {
      std::string positive = name.substr(2);
      for (const std::string& f : AllFlags()) {
        if (f == positive && absl::FindCommandLineFlag(f)->IsOfType<bool>()) {
          flags.push_back({positive, "false"});
          known = true;
        }
      }
      if (known) continue;
    }
    if (!known) {
      return UsageError(absl::StrCat("unknown flag ", arg[1] == '-' ? "--" : "-",
                                     Dashed(has_value ? body.substr(0, body.find('=')) : body)));
    }
    if (!has_value) {
      if (is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return UsageError(absl::StrCat("flag --", Dashed(name), " needs a value"));
      }
    }
    flags.push_back({name, value});
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ParsePort(const std::string& text, const std::string& where,
                                   const char* flag) {
  std::optional<uint16_t> port = ParsePortNumber(text);
  if (!port.has_value()) {
    return UsageError(absl::StrCat("--", flag, "=", where, ": \"", text,
                                   "\" is not a port (1-65535, without leading zeros)"));
  }
  return *port;
}

std::string ExplainUsageHint() { return " (see nodewardctl policy explain --help)"; }

absl::Status BuildExplain(Invocation& invocation, const std::set<std::string>& given) {
  const std::string from = Get(FLAGS_from), to = Get(FLAGS_to), inbound = Get(FLAGS_inbound);
  const bool outbound_question = given.count("from") || given.count("to");
  if (given.count("gateway")) {
    if (outbound_question || given.count("inbound")) {
      return UsageError("--gateway cannot be combined with --from/--to or --inbound" +
                        ExplainUsageHint());
    }
    for (const char* flag : {"plaintext", "peer", "source_ip", "destination_ip"}) {
      if (given.count(flag)) {
        return UsageError(
            absl::StrCat("--", Dashed(flag), " does not apply to --gateway", ExplainUsageHint()));
      }
    }
    const std::string port_text = Get(FLAGS_gateway);
    absl::StatusOr<uint32_t> port = ParsePort(port_text, port_text, "gateway");
    if (!port.ok()) return port.status();
    invocation.explain_gateway = true;
    invocation.gateway_explain.set_port(*port);
    if (given.count("sni")) invocation.gateway_explain.set_sni(Get(FLAGS_sni));
    return absl::OkStatus();
  }
  if (outbound_question && given.count("inbound")) {
    return UsageError("--inbound cannot be combined with --from/--to" + ExplainUsageHint());
  }
  if (!outbound_question && !given.count("inbound")) {
    return UsageError("policy explain needs --from and --to, or --inbound" + ExplainUsageHint());
  }
  if (outbound_question) {
    if (!given.count("from") || !given.count("to")) {
      return UsageError("policy explain needs both --from=NS/POD and --to=IP:PORT" +
                        ExplainUsageHint());
    }
    for (const char* flag : {"plaintext", "peer", "source_ip", "destination_ip", "sni"}) {
      if (given.count(flag)) {
        return UsageError(
            absl::StrCat("--", Dashed(flag), " only applies to --inbound", ExplainUsageHint()));
      }
    }
    if (absl::Status s = ValidatePodName(from, "from"); !s.ok()) return s;
    absl::StatusOr<std::pair<std::string, uint32_t>> host_port = ParseHostPort(to, "to");
    if (!host_port.ok()) return host_port.status();
    v1::ExplainPolicyRequest::Outbound* out = invocation.explain.mutable_outbound();
    out->set_from_pod(from);
    out->set_to(to);
    return absl::OkStatus();
  }
  // NS/POD:PORT
  const std::size_t colon = inbound.rfind(':');
  if (colon == std::string::npos) {
    return UsageError(absl::StrCat("--inbound=", inbound, ": want NAMESPACE/NAME:PORT"));
  }
  const std::string pod = inbound.substr(0, colon);
  if (absl::Status s = ValidatePodName(pod, "inbound"); !s.ok()) return s;
  absl::StatusOr<uint32_t> port = ParsePort(inbound.substr(colon + 1), inbound, "inbound");
  if (!port.ok()) return port.status();
  const bool plaintext = Get(FLAGS_plaintext);
  const std::string peer = Get(FLAGS_peer);
  if (plaintext && !peer.empty()) {
    return UsageError("--peer names the mTLS client: it cannot go with --plaintext");
  }
  if (!peer.empty() && !absl::StartsWith(peer, "spiffe://")) {
    return UsageError(absl::StrCat("--peer=", peer,
                                   ": want a SPIFFE ID (spiffe://TRUST-DOMAIN/ns/"
                                   "NAMESPACE/sa/ACCOUNT)"));
  }
  v1::ExplainPolicyRequest::Inbound* in = invocation.explain.mutable_inbound();
  auto address = [](const char* flag, const std::string& value) -> absl::Status {
    in6_addr bytes;
    if (value.empty() || inet_pton(AF_INET, value.c_str(), &bytes) == 1 ||
        inet_pton(AF_INET6, value.c_str(), &bytes) == 1) {
      return absl::OkStatus();
    }
    return UsageError(absl::StrCat("--", flag, "=", value, ": not an IP address"));
  };
  const std::string source_ip = Get(FLAGS_source_ip), destination_ip = Get(FLAGS_destination_ip);
  if (absl::Status s = address("source-ip", source_ip); !s.ok()) return s;
  if (absl::Status s = address("destination-ip", destination_ip); !s.ok()) return s;
  in->set_source_ip(source_ip);
  in->set_destination_ip(destination_ip);
  if (given.count("sni")) in->set_sni(Get(FLAGS_sni));
  in->set_pod(pod);
  in->set_port(*port);
  in->set_plaintext(plaintext);
  in->set_peer_identity(peer);
  return absl::OkStatus();
}

// ---- execution

struct CallContext {
  const Invocation& invocation;
  v1::Admin::StubInterface& stub;
  grpc::Channel* channel;
  std::ostream& out;
  std::ostream& err;
};

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return absl::StrCat("code ", static_cast<int>(code));
  }
}

// Why a Unix socket cannot be dialled, when the file system already tells.
std::string SocketProblem(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::StrCat(path, " does not exist");
    if (errno == EACCES) return absl::StrCat(path, ": permission denied (run as root)");
    return absl::StrCat(path, ": ", std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) return absl::StrCat(path, " is not a socket");
  if (access(path.c_str(), R_OK | W_OK) != 0 && errno == EACCES) {
    return absl::StrCat(path, ": permission denied (the socket is owner-only: run as root)");
  }
  return "";
}

int Unreachable(const CallContext& ctx, const std::string& detail) {
  ctx.err << "nodewardctl: cannot reach the agent at " << ctx.invocation.Target() << ": " << detail
          << (absl::StrContains(detail, "permission denied")
                  ? "\n"
                  : " (is nodeward-agent running on this node?)\n");
  return kExitUnreachable;
}

int Failed(const CallContext& ctx, const grpc::Status& status) {
  const grpc::StatusCode code = status.error_code();
  // A channel that never got ready means no agent answered; one that is ready means the
  // agent itself returned the error.
  const bool connected =
      ctx.channel != nullptr && ctx.channel->GetState(false) == GRPC_CHANNEL_READY;
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    if (connected) {
      ctx.err << "nodewardctl: the agent at " << ctx.invocation.Target()
              << " did not answer within " << absl::FormatDuration(ctx.invocation.timeout) << "\n";
      return kExitUnreachable;
    }
    return Unreachable(
        ctx, absl::StrCat("no connection within ", absl::FormatDuration(ctx.invocation.timeout)));
  }
  if (code == grpc::StatusCode::UNAVAILABLE && !connected) {
    return Unreachable(ctx, status.error_message());
  }
  if (code == grpc::StatusCode::UNIMPLEMENTED) {
    ctx.err
        << "nodewardctl: " << ctx.invocation.Target() << " does not answer `"
        << ctx.invocation.command
        << "` (UNIMPLEMENTED): the gateway commands (gateway ..., policy explain --gateway) are "
           "nodeward-gateway's, the others the node agent's\n";
    return kExitAgentError;
  }
  ctx.err << "nodewardctl: the agent answered with an error: " << status.error_message() << " ("
          << CodeName(code) << ")\n";
  return kExitAgentError;
}

template <typename Request, typename Response>
using Method = grpc::Status (v1::Admin::StubInterface::*)(grpc::ClientContext*, const Request&,
                                                          Response*);

template <typename Request, typename Response>
int Call(const CallContext& ctx, Method<Request, Response> method, const Request& request,
         Response* response) {
  if (ctx.invocation.address.empty()) {
    if (std::string problem = SocketProblem(ctx.invocation.socket); !problem.empty()) {
      return Unreachable(ctx, problem);
    }
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(ctx.invocation.timeout));
  grpc::Status status = (ctx.stub.*method)(&context, request, response);
  if (!status.ok()) return Failed(ctx, status);
  return kExitOk;
}

int Print(const CallContext& ctx, const absl::StatusOr<std::string>& text) {
  if (!text.ok()) {
    ctx.err << "nodewardctl: " << text.status().message() << "\n";
    return kExitAgentError;
  }
  ctx.out << *text;
  ctx.out.flush();
  return kExitOk;
}

template <typename Request, typename Response, typename Renderer>
int CallAndPrint(const CallContext& ctx, Method<Request, Response> method, const Request& request,
                 Renderer table) {
  Response response;
  if (int code = Call(ctx, method, request, &response); code != kExitOk) return code;
  return Print(ctx, Render(response, ctx.invocation.output, [&] { return table(response); }));
}

}  // namespace

std::string Invocation::Target() const {
  return address.empty() ? absl::StrCat("unix:", socket) : address;
}

absl::Status ValidatePodName(const std::string& text, const char* flag) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return UsageError(absl::StrCat("--", flag, "=", text, ": want NAMESPACE/NAME"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, uint32_t>> ParseHostPort(const std::string& text,
                                                               const char* flag) {
  std::string host, port_text;
  if (absl::StartsWith(text, "[")) {
    const std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return UsageError(absl::StrCat("--", flag, "=", text, ": want IP:PORT ([IPv6]:PORT)"));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    in6_addr a6;
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      return UsageError(
          absl::StrCat("--", flag, "=", text, ": \"", host, "\" is not an IPv6 address"));
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return UsageError(
          absl::StrCat("--", flag, "=", text, ": want IP:PORT (the port is required)"));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    in_addr a4;
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1) {
      return UsageError(
          absl::StrCat("--", flag, "=", text, ": \"", host, "\" is not an IP address"));
    }
  }
  absl::StatusOr<uint32_t> port = ParsePort(port_text, text, flag);
  if (!port.ok()) return port.status();
  return std::make_pair(host, *port);
}

absl::Status ValidateLogLevel(const std::string& level) {
  for (const char* known : {"debug", "info", "warning", "error"}) {
    if (level == known) return absl::OkStatus();
  }
  return UsageError(absl::StrCat("log level \"", level, "\": want debug, info, warning or error"));
}

std::string Usage(const std::string& command) {
  const std::string globals =
      "Global flags:\n"
      "  --socket=PATH       the agent's admin socket (default /var/run/nodeward/admin.sock)\n"
      "  --address=HOST:PORT the admin API over TCP instead (the node's 127.0.0.1:15000)\n"
      "  -o, --output=FORMAT table, json or yaml (default table)\n"
      "  --timeout=DURATION  deadline of the call (default 5s)\n"
      "\nExit codes: 0 ok, 1 the agent answered with an error, 2 usage error, 3 the agent is\n"
      "not reachable.\n";
  if (const CommandSpec* spec = command.empty() ? nullptr : FindCommand(command)) {
    std::string text =
        absl::StrCat("Usage: nodewardctl ", spec->name, spec->arguments.empty() ? "" : " ",
                     spec->arguments, " [global flags]\n\n", spec->summary, ".\n");
    if (!spec->details.empty()) absl::StrAppend(&text, "\n", spec->details);
    if (!spec->flags.empty()) {
      absl::StrAppend(&text, "\nFlags:\n");
      Table flags({"", ""}, false);
      for (const std::string& name : AllFlags()) {
        if (!spec->flags.count(name)) continue;
        const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
        std::string spelled = absl::StrCat("  --", Dashed(name));
        if (!flag->IsOfType<bool>()) absl::StrAppend(&spelled, "=VALUE");
        flags.AddRow({spelled, flag->Help()});
      }
      absl::StrAppend(&text, flags.Render());
    }
    absl::StrAppend(&text, "\n", globals);
    return text;
  }
  std::string text =
      "nodewardctl: inspect and control the nodeward agent of this node through its admin API.\n"
      "\nUsage: nodewardctl COMMAND [flags]\n\nCommands:\n";
  Table table({"", ""}, false);
  for (const CommandSpec& spec : Commands()) table.AddRow({"  " + spec.name, spec.summary});
  absl::StrAppend(&text, table.Render(), "\n", globals,
                  "\nRun `nodewardctl COMMAND --help` for a command's flags and columns.\n");
  return text;
}

absl::StatusOr<Invocation> ParseArguments(const std::vector<std::string>& args) {
  Invocation invocation;
  std::vector<FlagUse> flags;
  std::vector<std::string> words;
  bool help = false;
  absl::Status split = Split(args, flags, words, help);

  // `help [COMMAND]`, `COMMAND --help`: usage, even when the rest is wrong.
  if (!words.empty() && words[0] == "help") {
    invocation.help = true;
    words.erase(words.begin());
    invocation.command = absl::StrJoin(words, " ");
    if (!invocation.command.empty() && FindCommand(invocation.command) == nullptr) {
      return UsageError(absl::StrCat("unknown command \"", invocation.command, "\""));
    }
    return invocation;
  }
  if (!split.ok()) return split;

  // The command: one word, or two for the groups.
  if (words.empty()) {
    if (help) {
      invocation.help = true;
      return invocation;
    }
    return UsageError("no command given");
  }
  std::string command = words[0];
  std::size_t used = 1;
  if ((command == "policy" || command == "config" || command == "gateway") && words.size() >= 2) {
    command = absl::StrCat(command, " ", words[1]);
    used = 2;
  }
  const CommandSpec* spec = FindCommand(command);
  if (spec == nullptr && help && (words[0] == "policy" || words[0] == "config")) {
    spec = FindCommand(words[0] == "policy" ? "policy explain" : "config dump");
    used = 1;
  }
  if (spec == nullptr) {
    if (words[0] == "policy") return UsageError("unknown command: did you mean `policy explain`?");
    if (words[0] == "config") return UsageError("unknown command: did you mean `config dump`?");
    if (words[0] == "gateway") {
      return UsageError("unknown command: `gateway listeners` or `gateway certs`?");
    }
    return UsageError(absl::StrCat("unknown command \"", command, "\""));
  }
  invocation.command = spec->name;
  if (help) {
    invocation.help = true;
    return invocation;
  }
  std::vector<std::string> rest(words.begin() + used, words.end());

  // Flags: this command's and the global ones only, each value checked by its flag's type.
  for (const std::string& name : AllFlags()) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    flag->ParseFrom(flag->DefaultValue(), &error);
  }
  std::set<std::string> given;
  for (const FlagUse& use : flags) {
    if (!GlobalFlags().count(use.name) && !spec->flags.count(use.name)) {
      return UsageError(absl::StrCat("flag --", Dashed(use.name), " does not apply to `",
                                     spec->name, "` (see nodewardctl ", spec->name, " --help)"));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(use.name);
    std::string error;
    if (!flag->ParseFrom(use.value, &error)) {
      return UsageError(absl::StrCat("--", Dashed(use.name), "=", use.value, ": ", error));
    }
    given.insert(use.name);
  }

  absl::StatusOr<OutputFormat> output = ParseOutputFormat(Get(FLAGS_output));
  if (!output.ok()) return UsageError(std::string(output.status().message()));
  invocation.output = *output;
  invocation.timeout = Get(FLAGS_timeout);
  if (invocation.timeout <= absl::ZeroDuration()) {
    return UsageError("--timeout must be positive");
  }
  invocation.socket = Get(FLAGS_socket);
  invocation.address = Get(FLAGS_address);
  if (given.count("socket") && given.count("address")) {
    return UsageError("--socket and --address are alternatives: give one");
  }
  if (given.count("address")) {
    if (invocation.address.empty() || invocation.address.rfind(':') == std::string::npos) {
      return UsageError(absl::StrCat("--address=", invocation.address, ": want HOST:PORT"));
    }
  }
  if (given.count("socket") && invocation.socket.empty()) {
    return UsageError("--socket needs a path");
  }

  if (spec->name == "log-level") {
    if (rest.size() != 1) return UsageError("usage: nodewardctl log-level LEVEL");
    if (absl::Status s = ValidateLogLevel(rest[0]); !s.ok()) return s;
    invocation.level = rest[0];
    return invocation;
  }
  if (!rest.empty()) {
    return UsageError(absl::StrCat("unexpected argument \"", rest[0], "\" for `", spec->name, "`"));
  }
  if (spec->name == "policy explain") {
    if (absl::Status s = BuildExplain(invocation, given); !s.ok()) return s;
  }
  // The gateway's admin API is on its pod's loopback, not on the node's socket.
  const bool asks_gateway = absl::StartsWith(spec->name, "gateway ") || invocation.explain_gateway;
  if (asks_gateway && !given.count("socket") && !given.count("address")) {
    invocation.address = kDefaultGatewayAddress;
  }
  if (spec->name == "drain") {
    const absl::Duration grace = Get(FLAGS_grace);
    if (grace < absl::ZeroDuration() || grace > absl::Hours(24)) {
      return UsageError("--grace must be between 0s and 24h");
    }
    invocation.grace_seconds = static_cast<uint32_t>(std::ceil(absl::ToDoubleSeconds(grace)));
  }
  return invocation;
}

int Execute(const Invocation& invocation, v1::Admin::StubInterface& stub, grpc::Channel* channel,
            std::ostream& out, std::ostream& err, absl::Time now) {
  if (invocation.help) {
    out << Usage(invocation.command);
    return kExitOk;
  }
  const CallContext ctx{invocation, stub, channel, out, err};
  using S = v1::Admin::StubInterface;
  const std::string& c = invocation.command;
  if (c == "version") {
    if (invocation.output == OutputFormat::kTable) {
      out << "nodewardctl " << NODEWARD_VERSION << "\n";
    } else if (invocation.output == OutputFormat::kJson) {
      out << "{\n  \"client_version\": \"" << NODEWARD_VERSION << "\"\n}\n";
    } else {
      out << "client_version: \"" << NODEWARD_VERSION << "\"\n";
    }
    return kExitOk;
  }
  if (c == "workloads") {
    return CallAndPrint(ctx, &S::ListWorkloads, v1::ListWorkloadsRequest(),
                        [](const v1::ListWorkloadsResponse& r) { return RenderWorkloads(r); });
  }
  if (c == "certs") {
    return CallAndPrint(
        ctx, &S::ListCertificates, v1::ListCertificatesRequest(),
        [&](const v1::ListCertificatesResponse& r) { return RenderCertificates(r, now); });
  }
  if (c == "policy explain" && invocation.explain_gateway) {
    return CallAndPrint(ctx, &S::ExplainGateway, invocation.gateway_explain,
                        [&](const v1::ExplainGatewayResponse& r) {
                          return RenderGatewayExplain(invocation.gateway_explain, r);
                        });
  }
  if (c == "gateway listeners") {
    return CallAndPrint(
        ctx, &S::ListGatewayListeners, v1::ListGatewayListenersRequest(),
        [](const v1::ListGatewayListenersResponse& r) { return RenderGatewayListeners(r); });
  }
  if (c == "gateway certs") {
    return CallAndPrint(ctx, &S::ListGatewayCertificates, v1::ListGatewayCertificatesRequest(),
                        [&](const v1::ListGatewayCertificatesResponse& r) {
                          return RenderGatewayCertificates(r, now);
                        });
  }
  if (c == "policy explain") {
    return CallAndPrint(
        ctx, &S::ExplainPolicy, invocation.explain,
        [&](const v1::ExplainPolicyResponse& r) { return RenderExplain(invocation.explain, r); });
  }
  if (c == "connections") {
    return CallAndPrint(ctx, &S::ListConnections, v1::ListConnectionsRequest(),
                        [](const v1::ListConnectionsResponse& r) { return RenderConnections(r); });
  }
  if (c == "tunnels") {
    return CallAndPrint(ctx, &S::ListTunnels, v1::ListTunnelsRequest(),
                        [](const v1::ListTunnelsResponse& r) { return RenderTunnels(r); });
  }
  if (c == "bpf") {
    return CallAndPrint(ctx, &S::DumpBpf, v1::DumpBpfRequest(),
                        [](const v1::DumpBpfResponse& r) { return RenderBpf(r); });
  }
  if (c == "config dump") {
    return CallAndPrint(ctx, &S::DumpConfig, v1::DumpConfigRequest(),
                        [](const v1::DumpConfigResponse& r) { return RenderConfig(r); });
  }
  if (c == "log-level") {
    v1::SetLogLevelRequest request;
    request.set_level(invocation.level);
    return CallAndPrint(ctx, &S::SetLogLevel, request, [](const v1::SetLogLevelResponse& r) {
      return absl::StrCat("log level: ", r.previous().empty() ? "?" : r.previous(), " -> ",
                          r.level(), "\n");
    });
  }
  if (c == "drain") {
    v1::DrainRequest request;
    request.set_grace_seconds(invocation.grace_seconds);
    return CallAndPrint(ctx, &S::Drain, request, [&](const v1::DrainResponse& r) {
      return absl::StrCat("draining (grace ", invocation.grace_seconds, "s): ", r.connections_cut(),
                          " connection", r.connections_cut() == 1 ? "" : "s", " cut\n");
    });
  }
  err << "nodewardctl: unknown command \"" << c << "\"\n";
  return kExitUsage;
}

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Invocation> invocation = ParseArguments(args);
  if (!invocation.ok()) {
    err << "nodewardctl: " << invocation.status().message() << "\n"
        << "Run `nodewardctl --help` for usage.\n";
    return kExitUsage;
  }
  // The channel dials lazily: help and version never touch it.
  grpc::ChannelArguments channel_args;
  // One attempt: a missing agent is reported at once, not retried until the deadline.
  channel_args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      invocation->Target(), grpc::InsecureChannelCredentials(), channel_args);
  std::unique_ptr<v1::Admin::Stub> stub = v1::Admin::NewStub(channel);
  return Execute(*invocation, *stub, channel.get(), out, err, absl::Now());
}

}  // namespace nodeward::ctl
