#pragma once

#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace nodeward::capture {

// Runs short pieces of work inside another network namespace. A network namespace is a
// property of the thread, so one dedicated thread enters the target namespace, runs the work
// and returns to the node namespace; no other thread of the agent ever changes namespace.
// Sockets created there stay in that namespace for their whole life and can be used from any
// thread, which is how in-pod listeners are served from the node namespace.
class NetnsExecutor {
 public:
  NetnsExecutor();
  ~NetnsExecutor();
  NetnsExecutor(const NetnsExecutor&) = delete;
  NetnsExecutor& operator=(const NetnsExecutor&) = delete;

  // Runs `work` inside the netns `netns_fd` refers to, blocking until it is done. Fails
  // without running it when the namespace cannot be entered. Thread safe; calls are serialised.
  absl::Status Run(int netns_fd, absl::FunctionRef<void()> work);

  // A socket(family, type) living in that netns, close-on-exec.
  absl::StatusOr<int> CreateSocket(int netns_fd, int family, int type);
  // `count` of them in one visit: each visit costs the caller two thread switches and two
  // setns(), so callers that need sockets often take them in batches.
  absl::StatusOr<std::vector<int>> CreateSockets(int netns_fd, int family, int type,
                                                 std::size_t count);

 private:
  void Loop();

  absl::Mutex call_mutex_;  // one call at a time
  absl::Mutex mutex_;
  int node_netns_fd_ ABSL_GUARDED_BY(mutex_) = -1;
  absl::Status start_status_ ABSL_GUARDED_BY(mutex_);
  bool started_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  // The pending call: set by Run, cleared by the worker once done.
  absl::FunctionRef<void()>* work_ ABSL_GUARDED_BY(mutex_) = nullptr;
  int target_netns_fd_ ABSL_GUARDED_BY(mutex_) = -1;
  bool done_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status result_ ABSL_GUARDED_BY(mutex_);
  std::thread worker_;
};

// The cookie the kernel (and the BPF programs) use for the netns a socket lives in.
absl::StatusOr<uint64_t> NetnsCookieOfSocket(int socket_fd);

}  // namespace nodeward::capture
