// Outbound (15001): a connection an application in an enrolled pod made gets its policy
// decision and is carried accordingly: HBONE mTLS through a pooled tunnel to the destination
// pod's 15008, straight to the destination pod when it is enrolled on this node (its inbound
// policy still decides), TLS origination, plaintext, or a refusal (RST, logged with the trace).
// The path of one connection: Handle (decide) -> Upstreams::Open -> io::Relay.
#pragma once

#include <memory>

#include "agent/capture/captured_pod.h"
#include "agent/proxy/context.h"
#include "agent/proxy/upstream.h"
#include "common/net_address.h"

namespace nodeward::proxy {

class Outbound {
 public:
  Outbound(ProxyContext& context, Upstreams& upstreams)
      : context_(context), upstreams_(upstreams) {}

  // `fd` was accepted on `pod`'s outbound listener: the application at `client` dialled
  // `destination`. Runs on `worker`'s loop; `slot` is its place among the live connections.
  void Handle(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod, int fd,
              const SocketAddress& destination, const SocketAddress& client, LiveSlot slot);

 private:
  // Opens `target` and relays `app` to it; the flow ends with the relay.
  void Carry(Worker& worker, std::shared_ptr<const capture::CapturedPod> pod,
             std::shared_ptr<Flow> flow, std::shared_ptr<io::Connection> app,
             UpstreamTarget target);

  ProxyContext& context_;
  Upstreams& upstreams_;
};

}  // namespace nodeward::proxy
