// The flags every binary carrying connections shares (nodeward-agent, nodeward-gateway): the
// log, the certificates' source, the loops, the handshake budget, the access log, the drain.
// Defined once here so that both say the same thing about them.
#pragma once

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/proxy/context.h"

ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);
ABSL_DECLARE_FLAG(std::string, sds_socket);
ABSL_DECLARE_FLAG(std::string, trust_domain);
ABSL_DECLARE_FLAG(std::string, access_log);
ABSL_DECLARE_FLAG(int, workers);
ABSL_DECLARE_FLAG(std::string, system_ca_bundle);
ABSL_DECLARE_FLAG(absl::Duration, drain_timeout);
ABSL_DECLARE_FLAG(absl::Duration, handshake_timeout);
ABSL_DECLARE_FLAG(int, max_pending_handshakes);
ABSL_DECLARE_FLAG(int, max_pending_handshakes_per_source);

namespace nodeward::proxy {

// --log-level and --log-format applied, and the certificate cache's lines sent to the same log.
absl::Status ConfigureLogFromFlags();

// The options the flags above say (trust domain, loops, origination roots, handshake budget),
// or which flag is out of range.
absl::StatusOr<ProxyOptions> ProxyOptionsFromFlags();

}  // namespace nodeward::proxy
