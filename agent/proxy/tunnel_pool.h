// The client tunnels of one loop, pooled per (source pod, source identity, destination
// identity, destination address), as ztunnel's WorkloadHBONEPool keys them. A captured
// connection asks for a tunnel that takes a new stream: a pooled one with room, else one dialled
// for it, and connections waiting for the same key share that one dial. Tunnels leave the pool
// when they close (idle, GOAWAY then done, failure). Loop-thread only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "agent/proxy/hbone_tunnel.h"
#include "common/net_address.h"
#include "common/spiffe_id.h"

namespace nodeward::proxy {

struct TunnelKey {
  std::uint64_t source_netns_cookie = 0;  // the tunnel's socket lives in the source pod's netns
  SpiffeId source;
  SpiffeId destination;   // the identity the server must present
  SocketAddress address;  // the destination pod's HBONE port
  // Other identities the server may present (a DestinationRule's subjectAltNames).
  std::vector<SpiffeId> also_accepted;

  std::string ToString() const;
  friend bool operator==(const TunnelKey&, const TunnelKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const TunnelKey& key) {
    return H::combine(std::move(h), key.source_netns_cookie, key.source, key.destination,
                      key.address, key.also_accepted);
  }
};

class TunnelPool {
 public:
  using TunnelOrError = absl::StatusOr<std::shared_ptr<HboneTunnel>>;
  // Gets a tunnel that takes a new stream now, or the reason there is none. It must open its
  // stream before returning: the room it saw is the room it gets.
  using Waiter = absl::AnyInvocable<void(TunnelOrError)>;
  // Dials and starts a client tunnel; `on_closed` must be its closed handler. Reports the
  // started tunnel, or why it could not be made, through `done` (now or later).
  using Dial = absl::AnyInvocable<void(HboneTunnel::ClosedHandler on_closed, Waiter done)>;

  TunnelPool();
  ~TunnelPool();
  TunnelPool(const TunnelPool&) = delete;
  TunnelPool& operator=(const TunnelPool&) = delete;

  // `dial` runs only when no pooled tunnel of `key` has room and none is being dialled.
  void Get(const TunnelKey& key, Dial dial, Waiter waiter);

  // Open tunnels in the pool; readable from any thread (the metrics endpoint).
  std::size_t size() const { return pooled_->load(); }
  std::uint64_t dials() const { return dials_; }
  void ForEach(absl::FunctionRef<void(const TunnelKey&, const HboneTunnel&)> visit) const;
  // GOAWAY on every tunnel: their streams finish, new connections get new tunnels.
  void DrainAll(absl::string_view reason);

 private:
  struct Pending {
    Dial dial;
    Waiter waiter;
  };
  void Dialled(const TunnelKey& key, TunnelOrError tunnel);
  void ForgetClosed(const TunnelKey& key);

  absl::flat_hash_map<TunnelKey, std::vector<std::shared_ptr<HboneTunnel>>> tunnels_;
  absl::flat_hash_map<TunnelKey, std::vector<Pending>> dialling_;
  std::shared_ptr<std::atomic<std::size_t>> pooled_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::uint64_t dials_ = 0;
  // Tunnels and dials may report after the pool is gone (loop shutdown): they check this.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace nodeward::proxy
