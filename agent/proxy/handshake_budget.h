// Bounds what clients that never finish their TLS handshake can hold: each connection takes a
// ticket from accept until its handshake is done; there are at most `max_pending` tickets in
// all and `max_pending_per_source` for one source address, and each is due `timeout` after it
// was taken. A connection refused a ticket, or past its deadline, is closed; others carry on.
// Used by the agent's HBONE port (15008) and by the gateway's listeners. Envoy's comparable
// limits: listener_filters_timeout (15 s) for the TLS inspector, and its connection limits;
// ztunnel bounds a handshake by seconds, too.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/net_address.h"

namespace nodeward::proxy {

class HandshakeBudget {
 public:
  struct Options {
    // About 1024 × the ~40 KiB a pending TLS connection holds: 40 MiB at most for clients
    // that stall.
    std::size_t max_pending = 1024;
    // One source (a pod or a host) may hold this many of them; 0: no per-source limit.
    std::size_t max_pending_per_source = 64;
    // Long enough for a client on a slow link to finish a handshake (two round trips), short
    // enough that a stalled one does not keep its ticket.
    absl::Duration timeout = absl::Seconds(10);
  };

  // Why no ticket was given. Stable: a metric label.
  enum class Refusal { kAgentLimit, kSourceLimit };
  static absl::string_view RefusalName(Refusal refusal);

  // Held by one connection while it handshakes; gives its places back when destroyed.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept { *this = std::move(other); }
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { Release(); }

    absl::Time deadline() const { return deadline_; }
    bool Expired(absl::Time now) const { return now >= deadline_; }
    // Gives the places back now (the handshake finished).
    void Release();

   private:
    friend class HandshakeBudget;
    struct Shared;
    Ticket(std::shared_ptr<Shared> shared, std::optional<IpAddress> source, absl::Time deadline)
        : shared_(std::move(shared)), source_(std::move(source)), deadline_(deadline) {}
    std::shared_ptr<Shared> shared_;
    std::optional<IpAddress> source_;
    absl::Time deadline_;
  };

  HandshakeBudget() : HandshakeBudget(Options{}) {}
  explicit HandshakeBudget(Options options);

  // A ticket, or nullopt when `max_pending` handshakes are already pending (`why`, when
  // given, says which limit). Thread-safe.
  std::optional<Ticket> TryAdmit(absl::Time now = absl::Now(), Refusal* why = nullptr);
  // The same, also bounded per `source`.
  std::optional<Ticket> TryAdmit(const IpAddress& source, absl::Time now = absl::Now(),
                                 Refusal* why = nullptr);
  std::size_t pending() const;
  std::size_t pending_from(const IpAddress& source) const;
  const Options& options() const { return options_; }

 private:
  std::optional<Ticket> Admit(const std::optional<IpAddress>& source, absl::Time now, Refusal* why);

  const Options options_;
  // Shared with the tickets, so one outliving the budget still gives its place back safely.
  std::shared_ptr<Ticket::Shared> shared_;
};

struct HandshakeBudget::Ticket::Shared {
  mutable absl::Mutex mutex;
  std::size_t pending ABSL_GUARDED_BY(mutex) = 0;
  absl::flat_hash_map<IpAddress, std::size_t> by_source ABSL_GUARDED_BY(mutex);
};

}  // namespace nodeward::proxy
