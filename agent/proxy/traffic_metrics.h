// Istio-compatible TCP metrics of the data plane (istio_tcp_*), plus refusals by reason, kept
// in memory and rendered in the Prometheus text format. Thread safe. Cardinality is that of the
// workload pairs on one node, as in Istio.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "agent/proxy/access_log.h"

namespace nodeward::proxy {

class TrafficMetrics {
 public:
  // A connection was accepted for carrying (counted as opened once it has a decision).
  void Opened(const AccessRecord& record);
  // It ended: bytes are added and it is counted closed (or refused).
  void Closed(const AccessRecord& record);

  // A tunnel's TLS handshake was not let to finish: `reason` is "timeout" or a
  // HandshakeBudget refusal name.
  void HandshakeDropped(absl::string_view reason);

  // Appends every metric family in the Prometheus text exposition format.
  void Render(std::string& out) const;

 private:
  using Labels = std::map<std::string, std::string>;
  struct Counters {
    std::uint64_t opened = 0;
    std::uint64_t closed = 0;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
  };
  static Labels IstioLabels(const AccessRecord& record);

  mutable absl::Mutex mutex_;
  std::map<Labels, Counters> tcp_ ABSL_GUARDED_BY(mutex_);
  std::map<Labels, std::uint64_t> refusals_ ABSL_GUARDED_BY(mutex_);
  std::map<Labels, std::uint64_t> errors_ ABSL_GUARDED_BY(mutex_);
  std::map<Labels, std::uint64_t> closed_by_policy_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, std::uint64_t> handshakes_dropped_ ABSL_GUARDED_BY(mutex_);
};

// Prometheus text helpers shared by every exporter of the agent.
std::string PrometheusLabels(const std::map<std::string, std::string>& labels);
void AppendMetricHeader(std::string& out, const std::string& name, const std::string& type,
                        const std::string& help);

}  // namespace nodeward::proxy
