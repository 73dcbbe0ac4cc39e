#include "agent/proxy/traffic_metrics.h"

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {
namespace {

std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string Namespace(const std::string& workload) {
  const std::size_t slash = workload.find('/');
  return slash == std::string::npos ? "unknown" : workload.substr(0, slash);
}

std::string Name(const std::string& workload) {
  const std::size_t slash = workload.find('/');
  if (workload.empty()) return "unknown";
  return slash == std::string::npos ? workload : workload.substr(slash + 1);
}

}  // namespace

std::string PrometheusLabels(const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : labels) {
    absl::StrAppend(&out, first ? "" : ",", key, "=\"", Escape(value), "\"");
    first = false;
  }
  out += "}";
  return out;
}

void AppendMetricHeader(std::string& out, const std::string& name, const std::string& type,
                        const std::string& help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

TrafficMetrics::Labels TrafficMetrics::IstioLabels(const AccessRecord& record) {
  // Istio names pods' workloads by their owner (Deployment); without owners in our inventory
  // the pod name stands in.
  return {
      {"reporter", record.direction == Direction::kInbound ? "destination" : "source"},
      {"source_workload", Name(record.source_workload)},
      {"source_workload_namespace", Namespace(record.source_workload)},
      {"source_principal", record.source_principal.empty() ? "unknown" : record.source_principal},
      {"destination_workload", Name(record.destination_workload)},
      {"destination_workload_namespace", Namespace(record.destination_workload)},
      {"destination_principal",
       record.destination_principal.empty() ? "unknown" : record.destination_principal},
      {"connection_security_policy", record.mutual_tls ? "mutual_tls" : "none"},
  };
}

void TrafficMetrics::Opened(const AccessRecord& record) {
  absl::MutexLock lock(&mutex_);
  ++tcp_[IstioLabels(record)].opened;
}

void TrafficMetrics::Closed(const AccessRecord& record) {
  absl::MutexLock lock(&mutex_);
  const std::string direction(DirectionName(record.direction));
  if (record.closed_by_policy_change) {
    ++closed_by_policy_[{{"direction", direction},
                         {"reason", std::string(RefusalReasonName(record.refusal))}}];
  } else if (record.result == Result::kRefused) {
    ++refusals_[{{"direction", direction},
                 {"reason", std::string(RefusalReasonName(record.refusal))}}];
    return;
  }
  Counters& counters = tcp_[IstioLabels(record)];
  ++counters.closed;
  counters.sent += record.sent_bytes;
  counters.received += record.received_bytes;
  if (record.result == Result::kError) ++errors_[{{"direction", direction}}];
}

void TrafficMetrics::HandshakeDropped(absl::string_view reason) {
  absl::MutexLock lock(&mutex_);
  ++handshakes_dropped_[std::string(reason)];
}

void TrafficMetrics::Render(std::string& out) const {
  absl::MutexLock lock(&mutex_);
  struct Family {
    const char* name;
    const char* help;
    std::uint64_t Counters::*field;
  };
  const Family families[] = {
      {"istio_tcp_connections_opened_total", "TCP connections opened", &Counters::opened},
      {"istio_tcp_connections_closed_total", "TCP connections closed", &Counters::closed},
      {"istio_tcp_sent_bytes_total", "Bytes sent from source to destination, at close",
       &Counters::sent},
      {"istio_tcp_received_bytes_total", "Bytes sent from destination to source, at close",
       &Counters::received},
  };
  for (const Family& family : families) {
    AppendMetricHeader(out, family.name, "counter", family.help);
    for (const auto& [labels, counters] : tcp_) {
      absl::StrAppend(&out, family.name, PrometheusLabels(labels), " ", counters.*family.field,
                      "\n");
    }
  }
  AppendMetricHeader(out, "nodeward_connections_refused_total", "counter",
                     "Connections refused by policy or by the agent, by reason");
  for (const auto& [labels, count] : refusals_) {
    absl::StrAppend(&out, "nodeward_connections_refused_total", PrometheusLabels(labels), " ",
                    count, "\n");
  }
  AppendMetricHeader(out, "nodeward_connections_closed_by_policy_total", "counter",
                     "Live connections closed because a policy change now refuses them, by the "
                     "reason it gives");
  for (const auto& [labels, count] : closed_by_policy_) {
    absl::StrAppend(&out, "nodeward_connections_closed_by_policy_total", PrometheusLabels(labels),
                    " ", count, "\n");
  }
  AppendMetricHeader(out, "nodeward_handshakes_dropped_total", "counter",
                     "HBONE connections closed before their TLS handshake finished: over the "
                     "pending limits or past the handshake timeout");
  for (const auto& [reason, count] : handshakes_dropped_) {
    absl::StrAppend(&out, "nodeward_handshakes_dropped_total",
                    PrometheusLabels({{"reason", reason}}), " ", count, "\n");
  }
  AppendMetricHeader(out, "nodeward_connection_errors_total", "counter",
                     "Connections that ended with an error (connect failure, reset, TLS)");
  for (const auto& [labels, count] : errors_) {
    absl::StrAppend(&out, "nodeward_connection_errors_total", PrometheusLabels(labels), " ", count,
                    "\n");
  }
}

}  // namespace nodeward::proxy
