// The one way the data plane opens the other side of a connection, whatever carries it: plain
// TCP, TLS origination, a stream on a pooled HBONE tunnel, or a delivery to an application in
// a pod of this node. Each comes back as an io::Stream, and the relay does the rest, as
// Envoy's GenericConnPool hides whether its upstream is TCP or a CONNECT stream.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/capture/captured_pod.h"
#include "agent/capture/socket_origin.h"
#include "agent/io/connection.h"
#include "agent/io/stream.h"
#include "agent/proxy/context.h"
#include "common/net_address.h"
#include "common/spiffe_id.h"
#include "crypto/tls.h"
#include "policy/decisions.h"

namespace nodeward::proxy {

struct UpstreamTarget {
  enum class Kind {
    kTcp,             // plaintext to `address`
    kTlsOrigination,  // TLS with `tls` to `address`
    kHbone,           // CONNECT `address` (the destination pod's ip:port) in a tunnel to its pod
    kLocalPod,        // delivery to the application at `address` in `local_pod`
  };
  Kind kind = Kind::kTcp;
  SocketAddress address;
  std::shared_ptr<const crypto::TlsContext> tls;          // kTlsOrigination
  std::optional<SpiffeId> source;                         // kHbone: the client's identity
  std::optional<SpiffeId> peer;                           // kHbone: what the server must be
  std::vector<SpiffeId> also_accepted;                    // kHbone: ... or one of these
  std::shared_ptr<const capture::CapturedPod> local_pod;  // kLocalPod
  std::optional<SocketAddress> client;                    // kLocalPod: the source to keep
};

class Upstreams {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<std::shared_ptr<io::Stream>>)>;

  explicit Upstreams(ProxyContext& context) : context_(context) {}

  // Opens `target` for a connection leaving from `from` (whose netns the socket lives in: the
  // source pod's, or the gateway's own), on
  // `worker`'s loop; `deadline` bounds a wait for `from`'s first certificate. `done` runs once,
  // on that loop. The stream comes back not yet started.
  void Open(Worker& worker, std::shared_ptr<const capture::SocketOrigin> from,
            UpstreamTarget target, absl::Time deadline, Done done);

  // Connects to `application` (one of `pod`'s addresses) from inside the pod, past its inbound
  // steering, from `client`'s address when the pod's routing lets it be kept.
  void Deliver(Worker& worker, const capture::CapturedPod& pod, const SocketAddress& application,
               const std::optional<SocketAddress>& client, Done done);

  // A client tunnel from `from` as `source` to the pod at `address` that must be `peer`:
  // dialled once per pool key, with the context fetched once per tunnel (waiting for the
  // certificate, pushed when it arrives, until `deadline`).
  void OpenHbone(Worker& worker, std::shared_ptr<const capture::SocketOrigin> from,
                 const SpiffeId& source, const SpiffeId& peer, std::vector<SpiffeId> also_accepted,
                 const SocketAddress& address, absl::Time deadline, Done done);

 private:
  void ConnectFrom(Worker& worker, const capture::SocketOrigin& origin,
                   const SocketAddress& address, io::Connection::ConnectCallback done);

  ProxyContext& context_;
};

// What a decision to carry a connection (plaintext, TLS origination, HBONE with `source` as the
// client identity) opens, or why it cannot be opened; `record` learns how the connection is
// carried. Refusals and same-node decisions are the caller's (they open no upstream of this).
struct UpstreamChoice {
  std::optional<UpstreamTarget> target;
  RefusalReason refusal = RefusalReason::kNone;
  std::string reason;  // why there is no target
};
UpstreamChoice ChooseUpstream(ProxyContext& context, const policy::OutboundDecision& decision,
                              const SpiffeId& source, AccessRecord& record);

// The Done of an upstream opened for `source_side`: once it is open, relays the two as `flow`
// (RelayFlow); else resets `source_side` and ends the flow with why.
Upstreams::Done RelayOnceOpen(std::shared_ptr<Flow> flow, std::shared_ptr<io::Stream> source_side,
                              bool destination_may_refuse);

// Where a decision says to connect (its address and port), as an address.
absl::StatusOr<SocketAddress> DecidedAddress(const policy::OutboundDecision& decision);

// What the application at `application` in `pod` will see as the source of a delivery for
// `client`, for the access log: the client's address when it can be kept, else the pod's own.
std::string DeliveredFrom(const capture::CapturedPod& pod, const SocketAddress& application,
                          const std::optional<SocketAddress>& client);

// Calls `done` on `worker`'s loop with `identity`'s context (client or server side) once it
// is there, or with the reason at `deadline`. Certificates arrive by push, not by polling.
void WithCredentials(
    ProxyContext& context, Worker& worker, const SpiffeId& identity, bool server,
    absl::Time deadline,
    absl::AnyInvocable<void(absl::StatusOr<std::shared_ptr<const crypto::TlsContext>>)> done);

}  // namespace nodeward::proxy
