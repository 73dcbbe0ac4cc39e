#include "agent/ctl/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/type_resolver.h"
#include "google/protobuf/util/type_resolver_util.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::ctl {
namespace {

namespace v1 = admin::v1;

std::string Or(const std::string& value, const std::string& fallback) {
  return value.empty() ? fallback : value;
}

// Display width of a cell: code points, not bytes (names are ASCII; a "…" must not skew).
std::size_t Width(const std::string& text) {
  std::size_t width = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++width;
  }
  return width;
}

std::string Cell(const std::string& text) { return text.empty() ? "-" : text; }

std::string Join(const google::protobuf::RepeatedPtrField<std::string>& values,
                 const char* separator = ",") {
  return absl::StrJoin(values, separator);
}

// Scalars that a YAML reader would not take back as the string they are.
bool NeedsQuotes(const std::string& text) {
  if (text.empty()) return true;
  const std::string lower = absl::AsciiStrToLower(text);
  static const char* const kReserved[] = {"true", "false", "yes", "no", "on",
                                          "off",  "null",  "~",   "y",  "n"};
  for (const char* word : kReserved) {
    if (lower == word) return true;
  }
  double number;
  if (absl::SimpleAtod(text, &number)) return true;
  if (lower == ".inf" || lower == "-.inf" || lower == ".nan") return true;
  if (std::isspace(static_cast<unsigned char>(text.front())) ||
      std::isspace(static_cast<unsigned char>(text.back()))) {
    return true;
  }
  return false;
}

void EmitNode(YAML::Emitter& out, const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      if (node.size() == 0) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        return;
      }
      out << YAML::BeginMap;
      for (const auto& entry : node) {
        out << YAML::Key;
        EmitNode(out, entry.first);
        out << YAML::Value;
        EmitNode(out, entry.second);
      }
      out << YAML::EndMap;
      return;
    case YAML::NodeType::Sequence:
      if (node.size() == 0) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      out << YAML::BeginSeq;
      for (const auto& item : node) EmitNode(out, item);
      out << YAML::EndSeq;
      return;
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      // "!" is the tag of a quoted scalar: a JSON string. Plain ones are numbers and booleans.
      if (node.Tag() == "!" && NeedsQuotes(text)) {
        out << YAML::DoubleQuoted << text;
      } else {
        out << text;
      }
      return;
    }
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out << YAML::Null;
      return;
  }
}

std::string TunnelState(const v1::Tunnel& tunnel) {
  if (tunnel.draining()) return "draining";
  return tunnel.established() ? "established" : "connecting";
}

}  // namespace

std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::size_t width = 0;
  for (const auto& pair : pairs) width = std::max(width, Width(pair.first));
  std::string out;
  for (const auto& [key, value] : pairs) {
    std::string line = absl::StrCat(key, std::string(width - Width(key) + 2, ' '), Cell(value));
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string RenderTrace(const v1::PolicyTrace& trace) {
  std::string out;
  if (!trace.steps().empty()) {
    absl::StrAppend(&out, "\nTRACE\n");
    const int digits = static_cast<int>(absl::StrCat(trace.steps_size()).size());
    for (int i = 0; i < trace.steps_size(); ++i) {
      absl::StrAppend(&out, absl::StrFormat("  %*d. ", digits, i + 1), trace.steps(i), "\n");
    }
  }
  if (!trace.warnings().empty()) {
    absl::StrAppend(&out, "\nWARNINGS\n");
    for (const std::string& warning : trace.warnings()) {
      absl::StrAppend(&out, "  ! ", warning, "\n");
    }
  }
  return out;
}

absl::StatusOr<OutputFormat> ParseOutputFormat(const std::string& text) {
  if (text == "table") return OutputFormat::kTable;
  if (text == "json") return OutputFormat::kJson;
  if (text == "yaml") return OutputFormat::kYaml;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output format \"", text, "\" (table, json or yaml)"));
}

Table::Table(std::vector<std::string> header, bool show_header)
    : header_(std::move(header)), show_header_(show_header) {}

void Table::AddRow(std::vector<std::string> row) {
  row.resize(std::max(row.size(), header_.size()));
  rows_.push_back(std::move(row));
}

std::string Table::Render() const {
  std::vector<std::vector<std::string>> lines;
  if (show_header_) {
    std::vector<std::string> header;
    for (const std::string& name : header_) header.push_back(absl::AsciiStrToUpper(name));
    lines.push_back(std::move(header));
  }
  for (const auto& row : rows_) {
    std::vector<std::string> cells;
    for (const std::string& cell : row) cells.push_back(Cell(cell));
    lines.push_back(std::move(cells));
  }
  std::vector<std::size_t> widths;
  for (const auto& line : lines) {
    if (widths.size() < line.size()) widths.resize(line.size(), 0);
    for (std::size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], Width(line[i]));
  }
  std::string out;
  for (const auto& line : lines) {
    std::string text;
    for (std::size_t i = 0; i < line.size(); ++i) {
      text += line[i];
      if (i + 1 < line.size()) text.append(widths[i] - Width(line[i]) + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    absl::StrAppend(&out, text, "\n");
  }
  return out;
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) return absl::StrCat("-", HumanDuration(-d));
  const int64_t total = absl::ToInt64Seconds(d);
  const int64_t days = total / 86400, hours = total % 86400 / 3600;
  const int64_t minutes = total % 3600 / 60, seconds = total % 60;
  if (total < 60) return absl::StrCat(total, "s");
  if (total < 3600) return absl::StrCat(minutes, "m", seconds, "s");
  if (total < 86400) return absl::StrCat(hours, "h", minutes, "m");
  if (days < 10) return absl::StrCat(days, "d", hours, "h");
  return absl::StrCat(days, "d");
}

std::string HumanSeconds(double seconds) {
  if (!std::isfinite(seconds)) return "-";
  return HumanDuration(absl::Seconds(seconds));
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  // Move up when the value would print as 1024.0 of the smaller unit.
  while (value >= 1023.95 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string DurationUntil(const std::string& rfc3339, absl::Time now) {
  if (rfc3339.empty()) return "";
  absl::Time when;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, rfc3339, &when, &error)) return rfc3339;
  return HumanDuration(when - now);
}

std::string ShortFingerprint(const std::string& fingerprint) {
  if (fingerprint.find(':') != std::string::npos) {
    std::vector<std::string> bytes = absl::StrSplit(fingerprint, ':');
    if (bytes.size() <= 8) return fingerprint;
    bytes.resize(8);
    return absl::StrCat(absl::StrJoin(bytes, ":"), "…");
  }
  if (fingerprint.size() <= 16) return fingerprint;
  return absl::StrCat(fingerprint.substr(0, 16), "…");
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  // What MessageToJsonString does (binary, then JSON), with a deterministic encoding in
  // between: map entries come out sorted by key, so two dumps of one state compare equal.
  std::string binary;
  {
    google::protobuf::io::StringOutputStream stream(&binary);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    if (!message.SerializeToCodedStream(&coded)) {
      return absl::InternalError("protobuf encoding failed");
    }
  }
  const google::protobuf::DescriptorPool* pool = message.GetDescriptor()->file()->pool();
  std::unique_ptr<google::protobuf::util::TypeResolver> resolver(
      google::protobuf::util::NewTypeResolverForDescriptorPool("type.googleapis.com", pool));
  std::string json;
  auto status = google::protobuf::util::BinaryToJsonString(
      resolver.get(), absl::StrCat("type.googleapis.com/", message.GetDescriptor()->full_name()),
      binary, &json, options);
  if (!status.ok()) {
    // Still JSON, map order aside.
    json.clear();
    status = google::protobuf::util::MessageToJsonString(message, &json, options);
  }
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("JSON encoding: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json += "\n";
  return json;
}

absl::StatusOr<std::string> JsonToYaml(const std::string& json) {
  YAML::Node node;
  try {
    node = YAML::Load(json);
  } catch (const YAML::Exception& e) {
    return absl::InternalError(absl::StrCat("YAML conversion: ", e.what()));
  }
  YAML::Emitter out;
  out.SetIndent(2);
  EmitNode(out, node);
  if (!out.good()) return absl::InternalError(absl::StrCat("YAML emitter: ", out.GetLastError()));
  return absl::StrCat(out.c_str(), "\n");
}

absl::StatusOr<std::string> ToYaml(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = ToJson(message);
  if (!json.ok()) return json.status();
  return JsonToYaml(*json);
}

std::string RenderWorkloads(const v1::ListWorkloadsResponse& response) {
  Table table({"NAMESPACE", "NAME", "SERVICE-ACCOUNT", "ENROLLED-BY", "IPS", "NETNS-COOKIE",
               "LISTENERS", "REASON"});
  std::vector<const v1::Workload*> sorted;
  for (const v1::Workload& workload : response.workloads()) sorted.push_back(&workload);
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return std::tie(a->namespace_(), a->name()) < std::tie(b->namespace_(), b->name());
  });
  for (const v1::Workload* w : sorted) {
    std::vector<std::string> listeners;
    // "127.0.0.1:15001 outbound" reads as "127.0.0.1:15001/outbound" in a cell.
    for (const std::string& listener : w->listeners()) {
      listeners.push_back(absl::StrReplaceAll(listener, {{" ", "/"}}));
    }
    table.AddRow({w->namespace_(), w->name(), w->service_account(), w->enrolled_by(),
                  Join(w->ips()), w->netns_cookie() == 0 ? "" : absl::StrCat(w->netns_cookie()),
                  absl::StrJoin(listeners, ","), w->enrollment_reason()});
  }
  std::string out = table.Render();
  if (response.not_enrolled_size() == 0) return out;
  Table missing({"NAMESPACE", "NAME", "UID", "SINCE", "ATTEMPTS", "WHY"});
  for (const v1::NotEnrolledWorkload& m : response.not_enrolled()) {
    missing.AddRow(
        {m.namespace_(), m.name(), m.uid(), m.since(), absl::StrCat(m.attempts()), m.reason()});
  }
  absl::StrAppend(&out, "\nSHOULD BE ENROLLED, ARE NOT\n", missing.Render());
  return out;
}

std::string RenderCertificates(const v1::ListCertificatesResponse& response, absl::Time now) {
  Table certs(
      {"SPIFFE-ID", "STATE", "SERIAL", "NOT-BEFORE", "NOT-AFTER", "REFRESH-IN", "LAST-ERROR"});
  for (const v1::Certificate& c : response.certificates()) {
    certs.AddRow({c.spiffe_id(), c.state(), c.serial(), c.not_before(), c.not_after(),
                  DurationUntil(c.next_refresh(), now), c.last_error()});
  }
  std::string out = certs.Render();
  absl::StrAppend(&out, "\nTRUST ROOTS\n");
  if (response.trust_roots().empty()) {
    absl::StrAppend(&out, "none", response.trust_bundle_error().empty() ? "" : ": ",
                    response.trust_bundle_error(), "\n");
  } else {
    Table roots({"SUBJECT", "SERIAL", "NOT-AFTER", "FINGERPRINT"});
    for (const v1::TrustRoot& root : response.trust_roots()) {
      roots.AddRow({root.subject(), root.serial(), root.not_after(),
                    ShortFingerprint(root.sha256_fingerprint())});
    }
    absl::StrAppend(&out, roots.Render());
    if (!response.trust_bundle_error().empty()) {
      absl::StrAppend(&out, "trust bundle error: ", response.trust_bundle_error(), "\n");
    }
  }
  absl::StrAppend(&out, "\n",
                  KeyValues({{"SDS-SOCKET", Cell(response.sds_socket())},
                             {"REJECTED-SECRETS", absl::StrCat(response.rejected_secrets())}}));
  return out;
}

std::string RenderExplain(const v1::ExplainPolicyRequest& request,
                          const v1::ExplainPolicyResponse& response) {
  std::vector<std::pair<std::string, std::string>> lines;
  lines.push_back({"ACTION", Cell(response.action())});
  lines.push_back({"REASON", Cell(response.reason())});
  // Absent from agents older than the typed reasons.
  if (!response.reason_code().empty()) lines.push_back({"REASON-CODE", response.reason_code()});
  if (request.has_inbound()) {
    const auto& in = request.inbound();
    lines.push_back({"POD", absl::StrCat(in.pod(), ":", in.port())});
    lines.push_back({"ARRIVING", in.plaintext() ? "plaintext"
                                                : absl::StrCat("mTLS from ", Or(in.peer_identity(),
                                                                                "any peer"))});
    lines.push_back({"SOURCE", Or(in.source_ip(), "unknown")});
    if (!response.address().empty()) lines.push_back({"DESTINATION", response.address()});
    if (in.has_sni()) lines.push_back({"SNI", Or(in.sni(), "(none)")});
    if (response.has_authorization()) {
      const v1::AuthorizationExplanation& authz = response.authorization();
      lines.push_back(
          {"AUTHORIZATION", authz.policy().empty()
                                ? authz.outcome()
                                : absl::StrCat(authz.outcome(), " by ", authz.policy())});
      if (!authz.audit().empty()) {
        lines.push_back({"AUDITED-BY", absl::StrJoin(authz.audit(), ", ")});
      }
    } else {
      lines.push_back({"AUTHORIZATION", "-"});
    }
  } else {
    if (request.has_outbound()) lines.push_back({"FROM", Cell(request.outbound().from_pod())});
    std::string destination = response.address().empty()
                                  ? Or(request.outbound().to(), "-")
                                  : absl::StrCat(response.address(), ":", response.port());
    lines.push_back({"DESTINATION", destination});
    lines.push_back({"DESTINATION-WORKLOAD", Cell(response.destination_workload())});
    lines.push_back({"SERVICE", Cell(response.service())});
    if (response.expected_peer_identities_size() > 1) {
      for (int i = 0; i < response.expected_peer_identities_size(); ++i) {
        lines.push_back(
            {i == 0 ? "EXPECTED-PEER-IDENTITY" : "", response.expected_peer_identities(i)});
      }
    } else {
      lines.push_back({"EXPECTED-PEER-IDENTITY", Cell(response.expected_peer_identity())});
    }
    if (!response.origination().empty())
      lines.push_back({"TLS-ORIGINATION", response.origination()});
  }
  if (response.has_mtls()) {
    const v1::ModeLevels& m = response.mtls();
    lines.push_back({"MTLS-MODE", absl::StrCat("mesh=", Or(m.mesh(), "-"),
                                               " namespace=", Or(m.namespace_(), "-"), " workload=",
                                               Or(m.workload(), "-"), " port=", Or(m.port(), "-"),
                                               " effective=", Or(m.effective(), "-"))});
  } else {
    lines.push_back({"MTLS-MODE", "-"});
  }
  const v1::PolicyTrace& trace = response.trace();
  if (trace.deciding().empty()) {
    lines.push_back({"DECIDED-BY", "-"});
  } else {
    for (int i = 0; i < trace.deciding_size(); ++i) {
      lines.push_back({i == 0 ? "DECIDED-BY" : "", trace.deciding(i)});
    }
  }
  lines.push_back({"CONFIG-GENERATION", absl::StrCat(response.config_generation())});
  return absl::StrCat(KeyValues(lines), RenderTrace(trace));
}

std::string RenderConnections(const v1::ListConnectionsResponse& response) {
  Table table({"DIRECTION", "SOURCE", "SOURCE-PRINCIPAL", "DESTINATION", "DESTINATION-PRINCIPAL",
               "MODE", "SENT", "RECEIVED", "AGE"});
  for (const v1::Connection& c : response.connections()) {
    // The workload when the agent knows it, else the address; the destination keeps its port.
    std::string source = Or(c.source_workload(), c.source_address());
    std::string destination = c.destination_address();
    if (!c.destination_workload().empty()) {
      destination = destination.empty() ? c.destination_workload()
                                        : absl::StrCat(c.destination_workload(), "@", destination);
    }
    table.AddRow({c.direction(), source, c.source_principal(), destination,
                  c.destination_principal(), c.mode(), HumanBytes(c.sent_bytes()),
                  HumanBytes(c.received_bytes()), HumanSeconds(c.age_seconds())});
  }
  return table.Render();
}

std::string RenderTunnels(const v1::ListTunnelsResponse& response) {
  Table table({"ROLE", "POD", "LOCAL-IDENTITY", "PEER-IDENTITY", "PEER-ADDRESS", "STREAMS",
               "OPENED", "AGE", "STATE"});
  for (const v1::Tunnel& t : response.tunnels()) {
    table.AddRow({t.role(), t.pod(), t.local_identity(), t.peer_identity(), t.peer_address(),
                  absl::StrCat(t.active_streams()), absl::StrCat(t.streams_opened()),
                  HumanSeconds(t.age_seconds()), TunnelState(t)});
  }
  return table.Render();
}

std::string RenderBpf(const v1::DumpBpfResponse& response) {
  std::string out = KeyValues(
      {{"PIN-PATH", Cell(response.pin_path())},
       {"PENDING-ORIGINAL-DESTINATIONS", absl::StrCat(response.pending_original_destinations())}});

  absl::StrAppend(&out, "\nENROLLED NETNS\n");
  Table enrolled({"NETNS-COOKIE", "POD-ID", "POD", "SK-LOOKUP"});
  for (const v1::BpfEnrolledNetns& n : response.enrolled()) {
    enrolled.AddRow({absl::StrCat(n.netns_cookie()), absl::StrCat(n.pod_id()), n.pod(),
                     n.sk_lookup_linked() ? "linked" : "not-linked"});
  }
  absl::StrAppend(&out, enrolled.Render());

  absl::StrAppend(&out, "\nPOD ADDRESSES\n");
  Table addresses({"ADDRESS", "NETNS-COOKIE"});
  for (const v1::BpfPodAddress& a : response.pod_addresses()) {
    addresses.AddRow({a.address(), absl::StrCat(a.netns_cookie())});
  }
  absl::StrAppend(&out, addresses.Render());

  absl::StrAppend(&out, "\nINBOUND LISTENERS\n");
  Table listeners({"ADDRESS", "SLOT", "PRESENT"});
  for (const v1::BpfInboundListener& l : response.inbound_listeners()) {
    listeners.AddRow({l.address(), l.slot(), l.present() ? "yes" : "no"});
  }
  absl::StrAppend(&out, listeners.Render());

  absl::StrAppend(&out, "\nCOUNTERS\n");
  Table counters({"COUNTER", "VALUE"});
  std::map<std::string, uint64_t> sorted(response.counters().begin(), response.counters().end());
  for (const auto& [name, value] : sorted) counters.AddRow({name, absl::StrCat(value)});
  absl::StrAppend(&out, counters.Render());

  absl::StrAppend(&out, "\nATTACHED\n");
  if (response.attached().empty()) absl::StrAppend(&out, "  -\n");
  for (const std::string& attached : response.attached()) {
    absl::StrAppend(&out, "  ", attached, "\n");
  }
  return out;
}

std::string RenderConfig(const v1::DumpConfigResponse& response) {
  std::string out = KeyValues({{"SOURCE", Cell(response.source())},
                               {"GENERATION", absl::StrCat(response.generation())},
                               {"LAST-SUCCESS", Cell(response.last_success())},
                               {"LAST-ERROR", Cell(response.last_error())}});
  absl::StrAppend(&out, "\n");
  Table table({"KIND", "NAMESPACE", "NAME", "ORIGIN", "FIELDS"});
  std::vector<const v1::ConfigObject*> objects;
  for (const v1::ConfigObject& object : response.objects()) objects.push_back(&object);
  std::stable_sort(objects.begin(), objects.end(), [](const auto* a, const auto* b) {
    return std::tie(a->kind(), a->namespace_(), a->name()) <
           std::tie(b->kind(), b->namespace_(), b->name());
  });
  for (const v1::ConfigObject* o : objects) {
    std::map<std::string, std::string> fields(o->fields().begin(), o->fields().end());
    std::vector<std::string> pairs;
    for (const auto& [key, value] : fields) pairs.push_back(absl::StrCat(key, "=", value));
    table.AddRow({o->kind(), o->namespace_(), o->name(), o->origin(), absl::StrJoin(pairs, " ")});
  }
  absl::StrAppend(&out, table.Render());
  return out;
}

}  // namespace nodeward::ctl
