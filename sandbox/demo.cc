#include "sandbox/demo.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "sandbox/spec.h"
#include "sandbox/system.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::sandbox {
namespace {

std::atomic<bool> interrupted{false};

void OnSignal(int) { interrupted.store(true); }

// One access-log line, the fields the demo reads.
struct AccessLine {
  std::string node, direction, source_principal, mode, policy, reason, result;
};

std::string Field(const YAML::Node& line, const char* name) {
  YAML::Node value = line[name];
  return value && value.IsScalar() ? value.Scalar() : "";
}

// Complete lines of `path` from byte `offset` on; advances `offset` past them.
std::vector<AccessLine> ReadNewLines(const std::string& path, const std::string& node,
                                     size_t& offset) {
  std::vector<AccessLine> lines;
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok() || text->size() <= offset) return lines;
  size_t end = text->rfind('\n');
  if (end == std::string::npos || end < offset) return lines;
  for (absl::string_view raw : absl::StrSplit(absl::string_view(*text).substr(offset, end - offset),
                                              '\n', absl::SkipWhitespace())) {
    try {
      YAML::Node line = YAML::Load(std::string(raw));  // JSON is YAML
      if (!line.IsMap()) continue;
      lines.push_back({node, Field(line, "direction"), Field(line, "source_principal"),
                       Field(line, "mode"), Field(line, "policy"), Field(line, "reason"),
                       Field(line, "result")});
    } catch (const YAML::Exception&) {
      std::cerr << "nodeward-sandbox: " << path << ": unreadable line: " << raw << "\n";
    }
  }
  offset = end + 1;
  return lines;
}

std::string FindInPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  absl::StrAppend(&dirs, ":/usr/sbin:/usr/bin:/sbin:/bin");
  for (absl::string_view dir : absl::StrSplit(dirs, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct Call {
  const TrafficSpec* traffic = nullptr;
  const PodSpec* source = nullptr;
  TrafficTarget target;
  std::string marker;
  // Filled in as it runs.
  int exit_code = -1;
  std::string reply;  // the application's reply, or its error
  std::vector<AccessLine> lines;
  bool on_wire = false;
  std::string category;  // mtls, same-node, plaintext, tls-origination, refused, error
  std::string result, policy, check;
  bool failed = false;
};

void Classify(Call& call) {
  const AccessLine* outbound = nullptr;
  const AccessLine* inbound = nullptr;
  const AccessLine* refused = nullptr;
  const AccessLine* error = nullptr;
  for (const AccessLine& line : call.lines) {
    if (line.direction == "outbound" && outbound == nullptr) outbound = &line;
    if (line.direction == "inbound" && inbound == nullptr) inbound = &line;
    if ((line.result == "refused" || line.mode == "refused") && refused == nullptr) refused = &line;
    if (line.result == "error" && error == nullptr) error = &line;
  }
  call.policy = inbound != nullptr && !inbound->policy.empty()     ? inbound->policy
                : outbound != nullptr && !outbound->policy.empty() ? outbound->policy
                                                                   : "-";
  if (refused != nullptr) {
    call.policy = refused->policy.empty() ? call.policy : refused->policy;
    call.category = "refused";
    call.result = absl::StrCat("refused: ", refused->reason, " (", refused->node, " ",
                               refused->direction, ")");
    if (call.exit_code == 0) {
      call.category = "error";
      absl::StrAppend(&call.result, ", yet the call got a reply");
    }
    return;
  }
  if (error != nullptr) {
    call.category = "error";
    call.result =
        absl::StrCat("error: ", error->reason, " (", error->node, " ", error->direction, ")");
    return;
  }
  auto has_mode = [&](const std::string& mode) {
    return std::any_of(call.lines.begin(), call.lines.end(),
                       [&](const AccessLine& line) { return line.mode == mode; });
  };
  if (has_mode("same_node")) {
    call.category = "same-node";
    call.result = "same-node (mTLS identities, no wire)";
  } else if (has_mode("hbone_mtls")) {
    call.category = "mtls";
    call.result =
        inbound != nullptr && !inbound->source_principal.empty()
            ? absl::StrCat("mTLS (server saw ", inbound->source_principal, ")")
            : "mTLS (client side only: no inbound line with a peer on the destination node)";
    if (inbound == nullptr || inbound->source_principal.empty()) call.category = "mtls-unconfirmed";
  } else if (has_mode("tls_origination")) {
    call.category = "tls-origination";
    call.result = "TLS origination";
  } else {
    call.category = "plaintext";
    call.result = "plaintext";
  }
  if (call.exit_code != 0) {
    call.category = "error";
    call.result = absl::StrCat("error: the call failed although the agents logged ",
                               call.lines.empty() ? "nothing" : call.result);
  }
}

// Waits until the agents have logged the call: an outbound line on the source's node when the
// source is enrolled, an inbound line on the destination's node when the destination is an
// enrolled pod of another node (and the source side did not refuse it).
void CollectLines(Call& call, const std::vector<NodeSpec>& nodes, const std::string& run_dir,
                  std::map<std::string, size_t>& offsets) {
  const bool want_outbound = call.source->enrolled;
  const bool want_inbound = call.target.pod != nullptr && call.target.pod->enrolled &&
                            call.target.pod->node != call.source->node;
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  // An outbound error (a reset, say) may be the destination's refusal, whose line the other
  // node writes on its own clock: it gets this long to arrive before the error stands alone.
  constexpr absl::Duration kPeerLineGrace = absl::Milliseconds(500);
  std::optional<absl::Time> errored_at;
  while (true) {
    for (const NodeSpec& node : nodes) {
      std::vector<AccessLine> lines = ReadNewLines(
          absl::StrCat(run_dir, "/", node.name, "/access.log"), node.name, offsets[node.name]);
      call.lines.insert(call.lines.end(), lines.begin(), lines.end());
    }
    bool outbound = false, inbound = false, outbound_stopped = false, outbound_error = false;
    for (const AccessLine& line : call.lines) {
      if (line.direction == "outbound") {
        outbound = true;
        outbound_error |= line.result == "error";
        outbound_stopped |=
            (line.result != "ok" && line.result != "error") || line.mode == "same_node";
      }
      if (line.direction == "inbound") inbound = true;
    }
    if (outbound_error && !errored_at.has_value()) errored_at = absl::Now();
    outbound_stopped |= errored_at.has_value() && absl::Now() - *errored_at >= kPeerLineGrace;
    if ((!want_outbound || outbound) && (!want_inbound || inbound || outbound_stopped)) return;
    if (absl::Now() > deadline || interrupted.load()) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

std::string AddressPort(const std::string& address, int port) {
  return absl::StrContains(address, ':') ? absl::StrCat("[", address, "]:", port)
                                         : absl::StrCat(address, ":", port);
}

// Prints rows of cells with aligned columns.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      std::string cell = row[i];
      if (i + 1 < row.size()) cell.resize(widths[i] + 2, ' ');
      line += cell;
    }
    std::cout << line << "\n";
  }
}

// Brings the sandbox up, runs the traffic and reports; the caller tears it down.
int RunTraffic(const DemoOptions& options, const SandboxSpec& spec, std::vector<Call>& calls) {
  const std::string run_dir = RunDir(spec.name);
  const std::string tcpdump = FindInPath("tcpdump");
  const std::string pcap = absl::StrCat(run_dir, "/demo.pcap");
  const std::string tcpdump_log = absl::StrCat(run_dir, "/tcpdump.log");
  const std::string fabric = NetnsName(spec.name, kFabric);

  // The capture: every port of the bridge between the nodes (`any` in the fabric namespace),
  // written packet by packet. Immediate mode, or the packets of the last unfilled block are lost
  // at SIGTERM; a 16 MiB ring, as each slot holds a whole snapshot (the default of 2 MiB with
  // 256 KiB snapshots dropped packets of short bursts).
  SpawnOptions capture{.argv = {tcpdump, "-i", "any", "-n", "-U", "--immediate-mode", "-s", "65535",
                                "-B", "16384", "-Z", "root", "-w", pcap},
                       .netns_path = NetnsPath(fabric),
                       .cgroup_dir = "",
                       .log_path = tcpdump_log};
  absl::StatusOr<ProcessRef> dump = Spawn(capture);
  if (!dump.ok()) {
    std::cerr << "nodeward-sandbox: tcpdump: " << dump.status().message() << "\n";
    return 1;
  }
  // Recorded like every other process of the sandbox, so `down` stops it whatever happens.
  (void)AppendLine(absl::StrCat(run_dir, "/objects"),
                   absl::StrCat("process\ttcpdump\t", kFabric, "\t", dump->pid, "\t",
                                dump->start_time, "\ttcpdump"));
  const absl::Time capture_deadline = absl::Now() + absl::Seconds(10);
  while (!absl::StrContains(ReadFile(tcpdump_log).value_or(""), "listening on")) {
    if (!IsAlive(*dump) || absl::Now() > capture_deadline || interrupted.load()) {
      std::cerr << "nodeward-sandbox: tcpdump is not capturing (" << tcpdump_log << "):\n"
                << Tail(tcpdump_log, 10) << "\n";
      Stop(*dump, absl::Seconds(2));
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::cout << "capturing the wire between the nodes: tcpdump -i any in netns " << fabric << " -> "
            << pcap << "\n";

  std::map<std::string, size_t> offsets;
  for (const NodeSpec& node : spec.nodes) {
    offsets[node.name] =
        ReadFile(absl::StrCat(run_dir, "/", node.name, "/access.log")).value_or("").size();
  }
  for (Call& call : calls) {
    if (interrupted.load()) break;
    const std::string to = AddressPort(call.target.address, call.traffic->port);
    std::cout << "call " << call.marker << ": " << call.traffic->from << " -> " << call.traffic->to
              << " (" << to << ")\n"
              << std::flush;
    CommandResult result = RunCommand(
        {options.up.self, "exec", spec.name, call.traffic->from, "--", options.up.self, "app",
         "call", absl::StrCat("--to=", to), absl::StrCat("--send=", call.marker), "--timeout=3s"},
        absl::Seconds(10));
    call.exit_code = result.exit_code;
    call.reply = std::string(absl::StripAsciiWhitespace(result.output));
    absl::StrReplaceAll({{"\n", " | "}}, &call.reply);
    CollectLines(call, spec.nodes, run_dir, offsets);
  }
  // Let the last packets reach the file, then stop the capture (tcpdump flushes on SIGTERM).
  absl::SleepFor(absl::Milliseconds(300));
  Stop(*dump, absl::Seconds(3));
  if (interrupted.load()) {
    std::cerr << "nodeward-sandbox: interrupted\n";
    return 1;
  }
  // A packet the capture missed could have carried a marker.
  int dropped = 0;
  for (absl::string_view line : absl::StrSplit(ReadFile(tcpdump_log).value_or(""), '\n')) {
    if (absl::EndsWith(line, " packets dropped by kernel") &&
        !absl::SimpleAtoi(line.substr(0, line.find(' ')), &dropped)) {
      dropped = -1;
    }
  }
  absl::StatusOr<std::string> wire = ReadFile(pcap);
  if (!wire.ok()) {
    std::cerr << "nodeward-sandbox: reading the capture: " << wire.status().message() << "\n"
              << Tail(tcpdump_log, 10) << "\n";
    return 1;
  }

  int failures = 0;
  for (Call& call : calls) {
    call.on_wire = absl::StrContains(*wire, call.marker);
    Classify(call);
    std::vector<std::string> problems;
    if ((call.category == "mtls" || call.category == "mtls-unconfirmed" ||
         call.category == "same-node" || call.category == "tls-origination") &&
        call.on_wire) {
      problems.push_back("marker readable on the wire");
    }
    if (!call.traffic->expect.empty() && call.category != call.traffic->expect) {
      problems.push_back(absl::StrCat("expected ", call.traffic->expect));
    }
    if (call.traffic->wire.has_value() && *call.traffic->wire != call.on_wire) {
      problems.push_back(*call.traffic->wire ? "marker expected on the wire"
                                             : "marker expected off the wire");
    }
    // What the server application really received: its reply quotes it.
    const bool received =
        call.exit_code == 0 && absl::StrContains(call.reply, absl::StrCat("got=", call.marker));
    if (call.traffic->received.has_value() && *call.traffic->received != received) {
      problems.push_back(*call.traffic->received ? "the server did not receive the marker"
                                                 : "the server received the marker");
    }
    if (!call.traffic->reason.empty()) {
      // On the client side's outbound line when the source is in the mesh, else anywhere.
      bool found = false;
      for (const AccessLine& line : call.lines) {
        if (call.source->enrolled &&
            (line.direction != "outbound" || line.node != call.source->node)) {
          continue;
        }
        found |= absl::StrContains(line.reason, call.traffic->reason);
      }
      if (!found) {
        problems.push_back(absl::StrCat("no ", call.source->enrolled ? "client-side " : "",
                                        "access-log reason with \"", call.traffic->reason, "\""));
      }
    }
    call.failed = !problems.empty();
    call.check = call.failed ? absl::StrCat("FAIL: ", absl::StrJoin(problems, "; ")) : "ok";
    failures += call.failed ? 1 : 0;
  }

  std::cout << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"#", "FROM", "TO", "PORT", "POLICY", "RESULT", "MARKER ON WIRE", "CHECK", "CALL"}};
  for (size_t i = 0; i < calls.size(); ++i) {
    const Call& call = calls[i];
    std::string to = call.traffic->to;
    if (to != call.target.address) absl::StrAppend(&to, " (", call.target.address, ")");
    rows.push_back({absl::StrCat(i + 1), call.traffic->from, to, absl::StrCat(call.traffic->port),
                    call.policy, call.result, call.on_wire ? "yes" : "no", call.check, call.reply});
  }
  PrintTable(rows);
  std::cout << "\n"
            << calls.size() - failures << " of " << calls.size() << " calls as expected; "
            << "capture " << pcap << " (" << wire->size() << " bytes), access logs " << run_dir
            << "/<node>/access.log"
            << (options.keep ? "" : " (removed with the sandbox; --keep keeps them)") << "\n";
  for (const Call& call : calls) {
    if (!call.failed) continue;
    std::cout << "call " << call.marker << " " << call.traffic->from << " -> " << call.traffic->to
              << ":" << call.traffic->port << " " << call.check << "; its access-log lines:\n";
    if (call.lines.empty()) std::cout << "  (none)\n";
    for (const AccessLine& line : call.lines) {
      std::cout << "  " << line.node << " " << line.direction << " mode=" << line.mode
                << " result=" << line.result << " peer=" << line.source_principal << " policy=\""
                << line.policy << "\" reason=\"" << line.reason << "\"\n";
    }
  }
  if (dropped != 0) {
    std::cout << "FAIL the capture is incomplete (" << tcpdump_log
              << "): MARKER ON WIRE cannot be trusted\n"
              << Tail(tcpdump_log, 3) << "\n";
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int RunDemo(const DemoOptions& options) {
  absl::StatusOr<SandboxSpec> spec = LoadSandboxFile(options.up.file);
  if (!spec.ok()) {
    std::cerr << "nodeward-sandbox: " << spec.status().message() << "\n";
    return 1;
  }
  if (!options.up.name.empty()) {
    if (absl::Status renamed = RenameSandbox(*spec, options.up.name); !renamed.ok()) {
      std::cerr << "nodeward-sandbox: " << renamed.message() << "\n";
      return 1;
    }
  }
  absl::StatusOr<ClusterConfig> config = LoadConfigDir(spec->config_dir);
  if (!config.ok()) {
    std::cerr << "nodeward-sandbox: " << config.status().message() << "\n";
    return 1;
  }
  DecideEnrollment(*config, *spec);
  if (spec->traffic.empty()) {
    std::cerr << "nodeward-sandbox: " << options.up.file << " has no traffic: list\n";
    return 2;
  }
  if (spec->traffic.size() > 999) {
    std::cerr << "nodeward-sandbox: at most 999 traffic entries\n";
    return 2;
  }
  std::vector<Call> calls;
  for (size_t i = 0; i < spec->traffic.size(); ++i) {
    Call call;
    call.traffic = &spec->traffic[i];
    call.source = FindPod(*spec, call.traffic->from);
    absl::StatusOr<TrafficTarget> target = ResolveTarget(*spec, *config, call.traffic->to);
    if (!target.ok()) {
      std::cerr << "nodeward-sandbox: traffic[" << i << "]: " << target.status().message() << "\n";
      return 2;
    }
    call.target = *target;
    call.marker = absl::StrFormat("NODEWARD-DEMO-MARKER-%03d", i + 1);
    calls.push_back(std::move(call));
  }
  if (FindInPath("tcpdump").empty()) {
    std::cerr << "nodeward-sandbox: demo needs tcpdump (tools/install-deps.sh installs it)\n";
    return 1;
  }

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  if (absl::Status up = Up(options.up); !up.ok()) {
    std::cerr << "nodeward-sandbox: " << up.message() << "\n";
    return 1;
  }
  int code = interrupted.load() ? 1 : RunTraffic(options, *spec, calls);
  if (options.keep) {
    std::cout << "kept: remove with `nodeward-sandbox down " << spec->name << "`\n";
  } else if (absl::Status down = Down(spec->name); !down.ok()) {
    std::cerr << "nodeward-sandbox: " << down.message() << "\n";
    code = 1;
  }
  std::cout << (code == 0 ? "demo: PASS" : "demo: FAIL") << "\n";
  return code;
}

}  // namespace nodeward::sandbox
