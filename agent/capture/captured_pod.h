#ifndef NODEWARD_AGENT_CAPTURE_CAPTURED_POD_H_
#define NODEWARD_AGENT_CAPTURE_CAPTURED_POD_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/capture/netns_executor.h"

namespace nodeward::capture {

struct PodMetadata {
  std::string netns_path;
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string service_account;
  std::vector<std::string> ips;
  std::map<std::string, std::string> labels;
};

// An enrolled pod as the data path sees it. Connections hold it by shared_ptr, so a pod that
// is unenrolled while connections are open keeps its netns reachable until they finish.
class CapturedPod {
 public:
  // Takes ownership of `netns_fd`.
  CapturedPod(PodMetadata metadata, int netns_fd, uint64_t netns_cookie, NetnsExecutor* executor);
  ~CapturedPod();
  CapturedPod(const CapturedPod&) = delete;
  CapturedPod& operator=(const CapturedPod&) = delete;

  const PodMetadata& metadata() const { return metadata_; }
  uint64_t netns_cookie() const { return netns_cookie_; }
  int netns_fd() const { return netns_fd_; }
  // "namespace/name" for logs.
  const std::string& display_name() const { return display_name_; }

  // A non-blocking TCP socket inside the pod's netns carrying the agent's socket mark, so the
  // capture programs let it through (no loop back into the agent), with Nagle off.
  // Thread safe. Sockets come from a small stock refilled in batches: making one means a trip
  // into the pod's netns on the executor thread, which would otherwise be paid per connection.
  absl::StatusOr<int> CreateAgentSocket(int family) const;

  // How many sockets one refill makes (the most a pod holds unused).
  static constexpr std::size_t kSocketBatch = 16;

 private:
  const PodMetadata metadata_;
  const int netns_fd_;
  const uint64_t netns_cookie_;
  NetnsExecutor* const executor_;
  const std::string display_name_;
  mutable absl::Mutex stock_mutex_;
  mutable std::vector<int> ipv4_stock_ ABSL_GUARDED_BY(stock_mutex_);
  mutable std::vector<int> ipv6_stock_ ABSL_GUARDED_BY(stock_mutex_);
};

}  // namespace nodeward::capture

#endif  // NODEWARD_AGENT_CAPTURE_CAPTURED_POD_H_
