// One JSON line per connection when it ends: who talked to whom, how it was protected, what
// decided it, and the bytes each way. Field names follow Istio's telemetry labels.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/proxy/outcome.h"

namespace nodeward::proxy {

struct AccessRecord {
  Direction direction = Direction::kOutbound;
  std::string source_workload;  // namespace/name, empty when unknown
  std::string source_principal;
  std::string source_address;
  std::string destination_workload;
  std::string destination_principal;
  std::string destination_address;  // the address the application dialled (or was dialled on)
  // Inbound: the source address the destination application saw (the client's when kept).
  std::string delivered_from;
  Mode mode = Mode::kUndecided;
  bool mutual_tls = false;  // connection_security_policy: mutual_tls, else none
  std::string policy;       // resources that decided, "Kind ns/name; ..."
  // Inbound: what AuthorizationPolicy said ("ALLOWED by AuthorizationPolicy ns/name", ...),
  // empty when none applies; and the AUDIT (or dry-run) policies that matched.
  std::string authorization;
  std::string audited_by;
  std::string reason;  // the decision or the failure, in words
  Result result = Result::kError;
  RefusalReason refusal = RefusalReason::kNone;
  // Admitted, carried, and closed because the policy changed so that it would now be refused
  // (result kRefused, `refusal` and `reason` say by what).
  bool closed_by_policy_change = false;
  std::uint64_t sent_bytes = 0;  // from the source toward the destination
  std::uint64_t received_bytes = 0;
  absl::Duration duration;
};

std::string FormatAccessRecord(const AccessRecord& record, absl::Time end);

class AccessLog {
 public:
  // Appends to `path`; "-" or empty writes to stderr.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& path);
  ~AccessLog();
  // Thread safe.
  void Write(const AccessRecord& record);

 private:
  explicit AccessLog(std::FILE* file, bool owned) : file_(file), owned_(owned) {}
  absl::Mutex mutex_;
  std::FILE* file_ ABSL_GUARDED_BY(mutex_);
  const bool owned_;
};

}  // namespace nodeward::proxy
