#pragma once

#include <memory>

#include "agent/capture/captured_pod.h"
#include "agent/capture/in_pod_listener.h"
#include "common/net_address.h"

namespace nodeward::capture {

// Serves the in-pod listeners: gets each one (from the enrolling thread, before any connection
// is steered to it) and accepts on it on its own event loops, until its accepts fail and it is
// closed().
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;

  virtual void ServeListener(std::shared_ptr<InPodListener> listener) = 0;

  // The pod's listeners are up (enrolled or re-adopted) / it is gone. Handlers that keep
  // per-pod state (certificates of its service account, same-node routing) follow these.
  virtual void OnPodEnrolled(std::shared_ptr<const CapturedPod> pod) {}
  virtual void OnPodUnenrolled(std::shared_ptr<const CapturedPod> pod) {}
};

}  // namespace nodeward::capture
