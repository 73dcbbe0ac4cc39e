// Inbound: what reaches an enrolled pod.
//   15008 (HBONE): mTLS with the pod's own certificate, the client's chain and SPIFFE ID
//     verified; each CONNECT target must be one of the pod's addresses and not one of the
//     agent's ports, is decided per port by the pod's policy and delivered to the application
//     at that address (so a loopback-only service stays private) from the client pod's address.
//   15006 (plaintext): delivered to the address the client dialled, only where the pod's
//     policy allows plaintext.
// The path of one stream: AnswerConnect (decide) -> Upstreams::Deliver -> io::Relay.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "agent/capture/captured_pod.h"
#include "agent/hbone/session.h"
#include "agent/proxy/context.h"
#include "agent/proxy/handshake_budget.h"
#include "agent/proxy/hbone_tunnel.h"
#include "agent/proxy/upstream.h"
#include "common/net_address.h"

namespace nodeward::proxy {

class Inbound {
 public:
  Inbound(ProxyContext& context, Upstreams& upstreams) : context_(context), upstreams_(upstreams) {}

  // `fd` was accepted on `pod`'s plaintext listener for its port `port`.
  void HandlePlaintext(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd,
                       std::uint16_t port, LiveSlot slot);
  // `fd` was accepted on `pod`'s HBONE listener: serves the tunnel. The tunnel itself is not
  // an application connection and holds no live slot; each of its streams does.
  void HandleTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd);

 private:
  // `pending` holds the tunnel's place among unfinished handshakes until it is established
  // (its first CONNECT) or closes; past the place's deadline, an unfinished tunnel is closed.
  void ServeTunnel(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                   std::shared_ptr<io::Connection> wire, const SocketAddress& peer,
                   std::shared_ptr<const crypto::TlsContext> context,
                   std::shared_ptr<std::optional<HandshakeBudget::Ticket>> pending);
  void AnswerConnect(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
                     std::weak_ptr<HboneTunnel> tunnel, const SocketAddress& tunnel_peer,
                     hbone::StreamId stream, const std::string& authority);

  ProxyContext& context_;
  Upstreams& upstreams_;
};

}  // namespace nodeward::proxy
