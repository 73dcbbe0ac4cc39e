// The plugin's side of the CNI socket: one Request, one Response, within a deadline.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/cni/cni.pb.h"

namespace nodeward::cni {

// Requests and responses are small; anything larger is refused by both ends.
inline constexpr std::size_t kMaxMessage = 64 * 1024;

// Unavailable when no agent serves `socket_path` (missing, refused), DeadlineExceeded when it
// did not answer within `timeout`, DataLoss when the answer does not parse.
absl::StatusOr<v1::Response> CallAgent(const std::string& socket_path, const v1::Request& request,
                                       absl::Duration timeout);

}  // namespace nodeward::cni
