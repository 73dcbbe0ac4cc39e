// The agent's side of the CNI socket: accepts nodeward-cni's connections (root callers only),
// reads one Request, answers with what the handler decides. Calls run concurrently, up to a
// bound, because a runtime starts many pods at once and ADD waits for capture.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/cni/cni.pb.h"

namespace nodeward::cni {

class CniHandler {
 public:
  virtual ~CniHandler() = default;
  // Must return by `deadline`.
  virtual v1::Response Add(const v1::AddRequest& request, absl::Time deadline) = 0;
  virtual v1::Response Del(const v1::DelRequest& request) = 0;
  virtual v1::Response Check(const v1::CheckRequest& request) = 0;
};

class CniServer {
 public:
  // Serves `socket_path` (mode 0600; a stale socket there is replaced).
  static absl::StatusOr<std::unique_ptr<CniServer>> Start(const std::string& socket_path,
                                                          CniHandler* handler);
  // Stops accepting, waits for the calls in progress and removes the socket.
  ~CniServer();
  CniServer(const CniServer&) = delete;
  CniServer& operator=(const CniServer&) = delete;

  static constexpr int kMaxCalls = 64;

 private:
  CniServer(std::string socket_path, int listen_fd, CniHandler* handler);
  void AcceptLoop();
  void Serve(int fd);

  const std::string socket_path_;
  const int listen_fd_;
  CniHandler* const handler_;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  absl::Mutex mutex_;
  int calls_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace nodeward::cni
