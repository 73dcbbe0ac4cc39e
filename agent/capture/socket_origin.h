// Where the data plane's outgoing sockets are made, and in whose name: an enrolled pod's netns
// for the agent (CapturedPod), the process's own netns for the ingress gateway. The upstream
// side of the data plane (proxy::Upstreams, its tunnel pool) needs nothing else of a source.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace nodeward::capture {

class SocketOrigin {
 public:
  virtual ~SocketOrigin() = default;
  // A non-blocking TCP socket with Nagle off, living where this origin's connections leave
  // from (and exempt from capture there). Thread safe.
  virtual absl::StatusOr<int> CreateAgentSocket(int family) const = 0;
  // The netns those sockets live in: tunnels are pooled per source netns.
  virtual uint64_t netns_cookie() const = 0;
  // "namespace/name" for logs.
  virtual const std::string& display_name() const = 0;
};

}  // namespace nodeward::capture
