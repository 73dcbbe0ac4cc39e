#include "agent/proxy/proxy_flags.h"

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/spiffe_id.h"
#include "sds/log.h"

ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_format, "json", "json (one object per line) or text");
ABSL_FLAG(std::string, sds_socket, "/var/run/nodeward/sds.sock", "nodeward-sds Unix socket");
ABSL_FLAG(std::string, trust_domain, "cluster.local", "SPIFFE trust domain of the mesh");
ABSL_FLAG(std::string, access_log, "-", "file for one JSON line per connection; - is stderr");
ABSL_FLAG(int, workers, 0, "io_uring worker loops (0: one per core)");
ABSL_FLAG(std::string, system_ca_bundle, nodeward::proxy::kDefaultSystemCaBundle,
          "roots for TLS origination when a DestinationRule has no caCertificates (or \"system\")");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(5),
          "on SIGTERM, how long live connections may finish before they are cut");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(10),
          "a connection whose TLS handshake (the agent's HBONE port 15008; a gateway client's "
          "ClientHello and handshake) has not finished by then is closed");
ABSL_FLAG(int, max_pending_handshakes, 1024, "connections still in their TLS handshake, at most");
ABSL_FLAG(int, max_pending_handshakes_per_source, 64,
          "of those, at most this many from one source address (0: no such limit)");

namespace nodeward::proxy {
namespace {

void ForwardSdsLog(sds::LogLevel level, absl::string_view message) {
  const LogLevel mapped = level == sds::LogLevel::kError     ? LogLevel::kError
                          : level == sds::LogLevel::kWarning ? LogLevel::kWarning
                                                             : LogLevel::kInfo;
  Log(mapped, "sds: ", message);
}

}  // namespace

absl::Status ConfigureLogFromFlags() {
  sds::SetLogSink(ForwardSdsLog);
  absl::StatusOr<LogLevel> level = ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) return level.status();
  SetLogLevel(*level);
  const std::string format = absl::GetFlag(FLAGS_log_format);
  if (format == "text") {
    SetLogFormat(LogFormat::kText);
  } else if (format == "json") {
    SetLogFormat(LogFormat::kJson);
  } else {
    return absl::InvalidArgumentError("--log-format must be json or text");
  }
  return absl::OkStatus();
}

absl::StatusOr<ProxyOptions> ProxyOptionsFromFlags() {
  ProxyOptions options;
  options.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  // Every identity the agent issues, checks and decides about is in this trust domain: one
  // that cannot be part of a SPIFFE ID would refuse every connection, so refuse it at start.
  if (absl::Status valid = SpiffeId::CheckTrustDomain(options.trust_domain); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--trust-domain ", options.trust_domain, ": ", valid.message()));
  }
  options.workers = absl::GetFlag(FLAGS_workers);
  options.system_ca_bundle = absl::GetFlag(FLAGS_system_ca_bundle);
  const absl::Duration handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  const int max_pending = absl::GetFlag(FLAGS_max_pending_handshakes);
  const int max_per_source = absl::GetFlag(FLAGS_max_pending_handshakes_per_source);
  if (handshake_timeout <= absl::ZeroDuration() || max_pending <= 0 || max_per_source < 0 ||
      options.workers < 0) {
    return absl::InvalidArgumentError(
        "--handshake-timeout and --max-pending-handshakes must be positive, "
        "--max-pending-handshakes-per-source and --workers at least 0");
  }
  options.handshakes.timeout = handshake_timeout;
  options.handshakes.max_pending = static_cast<std::size_t>(max_pending);
  options.handshakes.max_pending_per_source = static_cast<std::size_t>(max_per_source);
  return options;
}

}  // namespace nodeward::proxy
