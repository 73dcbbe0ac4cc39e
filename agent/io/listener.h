// Accepts TCP connections with one multishot accept, enforces a connection cap, and drains:
// stop accepting, give live connections a grace period to finish, then close what is left.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/io/connection.h"
#include "agent/io/event_loop.h"
#include "agent/io/socket.h"

namespace nodeward::io {

class Listener {
 public:
  struct Options {
    // Connections beyond this many live ones are accepted and closed at once, so a flood
    // cannot exhaust descriptors or memory.
    std::size_t max_connections = 4096;
    int backlog = 1024;
    Connection::Options connection;
  };
  struct Stats {
    std::uint64_t accepted = 0;
    std::uint64_t rejected_over_cap = 0;
    std::uint64_t accept_errors = 0;
  };
  // Receives each accepted connection (not yet started).
  using AcceptCallback = absl::AnyInvocable<void(std::shared_ptr<Connection>)>;

  static absl::StatusOr<std::unique_ptr<Listener>> Bind(EventLoop& loop,
                                                        const SocketAddress& address,
                                                        const Options& options,
                                                        AcceptCallback on_accept);
  // Serves an already listening socket (e.g. one created inside a pod's network namespace).
  static absl::StatusOr<std::unique_ptr<Listener>> Adopt(EventLoop& loop, int listen_fd,
                                                         const Options& options,
                                                         AcceptCallback on_accept);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  const SocketAddress& local_address() const;
  void StopAccepting();
  // Stops accepting; `done` runs once no accepted connection is left, which is at most
  // `grace` later because the rest are closed with ABORTED then.
  void Drain(absl::Duration grace, absl::AnyInvocable<void()> done);
  std::size_t active_connections() const;
  const Stats& stats() const;

 private:
  struct State;
  explicit Listener(std::shared_ptr<State> state) : state_(std::move(state)) {}
  static void ArmAccept(const std::shared_ptr<State>& state);
  static void OnAccepted(const std::shared_ptr<State>& state, Completion& completion);
  static void MaybeFinishDrain(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
};

}  // namespace nodeward::io
