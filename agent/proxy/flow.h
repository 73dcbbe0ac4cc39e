// One application connection from capture to its access-log line. A flow that nobody
// finished (a path that dropped it) finishes itself as an error when the last reference goes,
// so no path can skip its log line, its metrics or its place in the live count.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/capture/captured_pod.h"
#include "agent/io/stream.h"
#include "agent/proxy/access_log.h"
#include "agent/proxy/outcome.h"
#include "agent/proxy/traffic_metrics.h"
#include "policy/decisions.h"

namespace nodeward::proxy {

// One place in the agent's count of live connections, given back when it goes.
class LiveSlot {
 public:
  LiveSlot() = default;
  // Takes over one unit the caller already added to `count`.
  explicit LiveSlot(std::atomic<std::size_t>* count) : count_(count) {}
  ~LiveSlot() { Release(); }
  LiveSlot(LiveSlot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
  LiveSlot& operator=(LiveSlot&& other) noexcept {
    if (this != &other) {
      Release();
      count_ = std::exchange(other.count_, nullptr);
    }
    return *this;
  }
  LiveSlot(const LiveSlot&) = delete;
  LiveSlot& operator=(const LiveSlot&) = delete;

  void Release() {
    if (count_ != nullptr) std::exchange(count_, nullptr)->fetch_sub(1);
  }

 private:
  std::atomic<std::size_t>* count_ = nullptr;
};

// Where finished flows are accounted. Both outlive every flow.
struct FlowSinks {
  TrafficMetrics* metrics = nullptr;
  AccessLog* access_log = nullptr;  // optional
};

// What an inbound decision allowed: the destination pod and the connection as policy saw it,
// so that the same decision can be taken again when the policy changes.
struct InboundAdmission {
  std::shared_ptr<const capture::CapturedPod> pod;
  policy::InboundConnection connection;
};

class Flow {
 public:
  // `live_flows` (a loop's registry, for the debug CLI) holds the flow while it is open; the
  // flow and the registry belong to the same loop.
  Flow(Direction direction, LiveSlot slot, FlowSinks sinks, absl::flat_hash_set<Flow*>* live_flows);
  ~Flow();
  Flow(const Flow&) = delete;
  Flow& operator=(const Flow&) = delete;

  AccessRecord& record() { return record_; }
  const AccessRecord& record() const { return record_; }
  absl::Time start() const { return start_; }

  // The connection is being carried: counted as opened once. `counted` is the stream whose
  // byte counters show its progress (toward the source when `counted_is_source`).
  void MarkCarried(const std::shared_ptr<io::Stream>& counted, bool counted_is_source);
  // Ends the flow: metrics, access log, log line. Only the first call counts. A failure after
  // the decision keeps the decision in the reason ("...; failed: why").
  void Finish(Result result, absl::string_view reason = {},
              RefusalReason refusal = RefusalReason::kNone);
  // Ends it as refused (mode "refused", no mTLS).
  void Refuse(RefusalReason refusal, absl::string_view reason);
  bool finished() const { return finished_; }

  // The record with the bytes moved so far, for the debug CLI.
  AccessRecord Live() const;
  // Resets the connection being carried (the relay then ends the flow with `reason`).
  void Cut(const absl::Status& reason);

  // Remembers what allowed an inbound flow, for Revoke's callers.
  void SetAdmission(InboundAdmission admission) {
    admission_ = std::make_unique<const InboundAdmission>(std::move(admission));
  }
  // Null for a flow no inbound policy admitted (most outbound ones).
  const InboundAdmission* admission() const { return admission_.get(); }
  // The policy changed so that this flow would now be refused: it is cut, and ends refused by
  // `refusal` with `reason`, marked closed by a policy change. A flow not yet carried is ended
  // as soon as its relay would start.
  void Revoke(RefusalReason refusal, absl::string_view reason);
  bool revoked() const { return revoked_.has_value(); }

 private:
  AccessRecord record_;
  const absl::Time start_ = absl::Now();
  LiveSlot slot_;
  FlowSinks sinks_;
  absl::flat_hash_set<Flow*>* live_flows_;
  bool finished_ = false;
  bool carried_ = false;
  std::weak_ptr<io::Stream> counted_;
  bool counted_is_source_ = true;
  // Apart, so that the outbound flows, which have none, do not carry its room.
  std::unique_ptr<const InboundAdmission> admission_;
  struct Revocation {
    RefusalReason refusal;
    std::string reason;
  };
  std::optional<Revocation> revoked_;
};

// Relays `source_side` (toward the flow's source) and `destination_side` until both are done,
// then finishes the flow with the bytes each way and how it ended. With
// `destination_may_refuse` (an HBONE stream, whose server answers 403 for its policy), a
// PERMISSION_DENIED end is a refusal; otherwise every failure is an error. Neither stream may
// be started yet.
void RelayFlow(std::shared_ptr<Flow> flow, std::shared_ptr<io::Stream> source_side,
               std::shared_ptr<io::Stream> destination_side, bool destination_may_refuse = false);

}  // namespace nodeward::proxy
