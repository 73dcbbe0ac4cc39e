#ifndef NODEWARD_AGENT_CAPTURE_CONNECTION_HANDLER_H_
#define NODEWARD_AGENT_CAPTURE_CONNECTION_HANDLER_H_

#include <cstdint>
#include <memory>

#include "agent/capture/captured_pod.h"
#include "agent/capture/in_pod_listener.h"
#include "common/net_address.h"

namespace nodeward::capture {

// Receives the connections the in-pod listeners accept. Each call hands over ownership of
// the (non-blocking) fd. Called from the accept thread: implementations must not block long.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;

  // A handler with event loops of its own may accept on the in-pod listeners there, which
  // saves the accept thread's wake-up and the hand-off to a loop on every connection. It then
  // gets each listener through ServeListener (from the enrolling thread, before any connection
  // is steered to it) instead of OnOutbound/OnInbound calls, and stops accepting on a listener
  // once its accepts fail and it is closed().
  virtual bool ServesListeners() const { return false; }
  virtual void ServeListener(std::shared_ptr<InPodListener> listener) {}

  // An application in `pod` dialled `original_destination`.
  virtual void OnOutbound(std::shared_ptr<const CapturedPod> pod, int client_fd,
                          const SocketAddress& original_destination) = 0;

  // A peer connected to `pod` on `original_port` (of the pod's address). `via_tunnel_port`:
  // it arrived on 15008, the HBONE port.
  virtual void OnInbound(std::shared_ptr<const CapturedPod> pod, int fd, uint16_t original_port,
                         bool via_tunnel_port) = 0;

  // The pod's listeners are up (enrolled or re-adopted) / it is gone. Handlers that keep
  // per-pod state (certificates of its service account, same-node routing) follow these.
  virtual void OnPodEnrolled(std::shared_ptr<const CapturedPod> pod) {}
  virtual void OnPodUnenrolled(std::shared_ptr<const CapturedPod> pod) {}
};

}  // namespace nodeward::capture

#endif  // NODEWARD_AGENT_CAPTURE_CONNECTION_HANDLER_H_
