#ifndef NODEWARD_AGENT_CAPTURE_PASSTHROUGH_HANDLER_H_
#define NODEWARD_AGENT_CAPTURE_PASSTHROUGH_HANDLER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/capture/connection_handler.h"

namespace nodeward::capture {

// Plaintext passthrough: outbound connections go on to the destination the application dialled
// (connected from inside the pod's netns, with the agent's mark), inbound ones are delivered to
// 127.0.0.1:<port> (or [::1]:<port>) inside the pod. Bytes are copied both ways by one epoll
// thread with a bounded buffer per direction; a half-close on one side is passed on as a
// half-close on the other. No policy and no TLS: the tunnel port is refused here.
class PassthroughHandler final : public ConnectionHandler {
 public:
  struct Options {
    size_t buffer_bytes = 64 * 1024;
    absl::Duration connect_timeout = absl::Seconds(10);
  };

  static absl::StatusOr<std::unique_ptr<PassthroughHandler>> Create(const Options& options);
  static absl::StatusOr<std::unique_ptr<PassthroughHandler>> Create() { return Create(Options()); }
  ~PassthroughHandler() override;
  PassthroughHandler(const PassthroughHandler&) = delete;
  PassthroughHandler& operator=(const PassthroughHandler&) = delete;

  void OnOutbound(std::shared_ptr<const CapturedPod> pod, int client_fd,
                  const SocketAddress& original_destination) override;
  void OnInbound(std::shared_ptr<const CapturedPod> pod, int fd, uint16_t original_port,
                 bool via_tunnel_port) override;

  size_t active_connections() const;

 private:
  struct Relay;

  PassthroughHandler(const Options& options, int epoll_fd, int wake_fd);
  // Connects a new agent socket in the pod to `target` and relays `downstream_fd` to it.
  void StartRelay(std::shared_ptr<const CapturedPod> pod, int downstream_fd,
                  const SocketAddress& target, std::string description);
  void Loop();
  // Moves what can be moved without blocking; returns false when the relay is finished.
  bool Pump(Relay& relay, std::string* close_reason);
  void Finish(Relay* relay, const std::string& reason, bool reset);
  void ExpireConnects();

  const Options options_;
  const int epoll_fd_;
  const int wake_fd_;
  mutable absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  absl::flat_hash_set<Relay*> relays_ ABSL_GUARDED_BY(mutex_);
  std::thread thread_;
};

}  // namespace nodeward::capture

#endif  // NODEWARD_AGENT_CAPTURE_PASSTHROUGH_HANDLER_H_
