#include "agent/proxy/flow.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/io/relay.h"
#include "common/log.h"

namespace nodeward::proxy {

Flow::Flow(Direction direction, LiveSlot slot, FlowSinks sinks,
           absl::flat_hash_set<Flow*>* live_flows)
    : slot_(std::move(slot)), sinks_(sinks), live_flows_(live_flows) {
  record_.direction = direction;
  if (live_flows_ != nullptr) live_flows_->insert(this);
}

Flow::~Flow() {
  // Dropped by a path that never said how it ended: still one line, one metric, one slot.
  if (!finished_) Finish(Result::kError, "abandoned before it ended");
}

void Flow::MarkCarried(const std::shared_ptr<io::Stream>& counted, bool counted_is_source) {
  counted_ = counted;
  counted_is_source_ = counted_is_source;
  if (carried_) return;
  carried_ = true;
  sinks_.metrics->Opened(record_);
}

void Flow::Refuse(RefusalReason refusal, absl::string_view reason) {
  record_.mode = Mode::kRefused;
  record_.mutual_tls = false;
  Finish(Result::kRefused, reason, refusal);
}

void Flow::Finish(Result result, absl::string_view reason, RefusalReason refusal) {
  if (finished_) return;
  if (revoked_.has_value()) {
    // However the relay saw its end (a reset, mostly), the policy ended it.
    record_.closed_by_policy_change = true;
    record_.reason.clear();
    result = Result::kRefused;
    refusal = revoked_->refusal;
    reason = revoked_->reason;
  }
  finished_ = true;
  if (live_flows_ != nullptr) live_flows_->erase(this);
  record_.result = result;
  record_.refusal = refusal;
  if (!reason.empty()) {
    // A failure after the decision keeps the decision in the line: an operator needs both
    // why the agent chose this path (say, plaintext by a DestinationRule) and what broke.
    record_.reason = result == Result::kError && !record_.reason.empty()
                         ? absl::StrCat(record_.reason, "; failed: ", reason)
                         : std::string(reason);
  }
  record_.duration = absl::Now() - start_;
  if ((result != Result::kRefused || record_.closed_by_policy_change) && !carried_) {
    carried_ = true;
    sinks_.metrics->Opened(record_);
  }
  sinks_.metrics->Closed(record_);
  if (sinks_.access_log != nullptr) sinks_.access_log->Write(record_);
  const AccessRecord& r = record_;
  Log(result == Result::kOk ? LogLevel::kDebug : LogLevel::kInfo, DirectionName(r.direction),
      " source=", r.source_workload.empty() ? r.source_address : r.source_workload,
      " source_principal=", r.source_principal, " destination=", r.destination_address,
      " destination_principal=", r.destination_principal, " mode=", ModeName(r.mode),
      " result=", ResultName(result), " reason=", r.reason);
  // Last: whoever waits for the live count to drop (drain, then exit) finds the flow's
  // metrics and access-log line already written.
  slot_.Release();
}

void Flow::Cut(const absl::Status& reason) {
  if (std::shared_ptr<io::Stream> counted = counted_.lock()) counted->Reset(reason);
}

void Flow::Revoke(RefusalReason refusal, absl::string_view reason) {
  if (finished_ || revoked_.has_value()) return;
  revoked_ = Revocation{refusal, absl::StrCat("policy changed: ", reason)};
  Cut(absl::PermissionDeniedError(revoked_->reason));
}

AccessRecord Flow::Live() const {
  AccessRecord live = record_;
  if (std::shared_ptr<io::Stream> counted = counted_.lock()) {
    const io::Stream::Stats& stats = counted->stats();
    live.sent_bytes = counted_is_source_ ? stats.bytes_received : stats.bytes_sent;
    live.received_bytes = counted_is_source_ ? stats.bytes_sent : stats.bytes_received;
  }
  return live;
}

void RelayFlow(std::shared_ptr<Flow> flow, std::shared_ptr<io::Stream> source_side,
               std::shared_ptr<io::Stream> destination_side, bool destination_may_refuse) {
  flow->MarkCarried(source_side, /*counted_is_source=*/true);
  if (flow->revoked()) {
    // Revoked while its destination was being dialled.
    const absl::Status cut = absl::PermissionDeniedError("policy changed");
    source_side->Reset(cut);
    destination_side->Reset(cut);
    flow->Finish(Result::kRefused);
    return;
  }
  io::Relay::Start(std::move(source_side), std::move(destination_side),
                   [flow, destination_may_refuse](const io::Relay::Result& result) {
                     flow->record().sent_bytes = result.a_to_b_bytes;
                     flow->record().received_bytes = result.b_to_a_bytes;
                     if (result.status.ok()) {
                       flow->Finish(Result::kOk);
                     } else if (destination_may_refuse && absl::IsPermissionDenied(result.status)) {
                       flow->Finish(Result::kRefused, result.status.message(),
                                    RefusalReason::kRefusedByPeer);
                     } else {
                       flow->Finish(Result::kError, result.status.message());
                     }
                   });
}

}  // namespace nodeward::proxy
