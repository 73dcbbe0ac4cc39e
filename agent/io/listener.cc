#include "agent/io/listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace nodeward::io {
namespace {

constexpr absl::Duration kAcceptRetryDelay = absl::Milliseconds(100);

}  // namespace

struct Listener::State {
  State(EventLoop& loop) : loop(loop) {}
  EventLoop& loop;
  int listen_fd = -1;
  SocketAddress address;
  Options options;
  AcceptCallback on_accept;
  Stats stats;
  EventLoop::OpId accept_op = 0;
  bool accepting = false;
  absl::flat_hash_map<Connection*, std::weak_ptr<Connection>> live;
  absl::AnyInvocable<void()> drain_done;
  EventLoop::OpId drain_timer = 0;
};

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(EventLoop& loop,
                                                         const SocketAddress& address,
                                                         const Options& options,
                                                         AcceptCallback on_accept) {
  absl::StatusOr<int> fd = ListenTcp(address, options.backlog);
  if (!fd.ok()) return fd.status();
  return Adopt(loop, *fd, options, std::move(on_accept));
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Adopt(EventLoop& loop, int listen_fd,
                                                          const Options& options,
                                                          AcceptCallback on_accept) {
  auto state = std::make_shared<State>(loop);
  state->listen_fd = listen_fd;
  state->options = options;
  state->on_accept = std::move(on_accept);
  absl::StatusOr<SocketAddress> address = SocketAddress::LocalOf(listen_fd);
  if (!address.ok()) {
    close(listen_fd);
    return address.status();
  }
  state->address = *address;
  state->accepting = true;
  ArmAccept(state);
  return std::unique_ptr<Listener>(new Listener(std::move(state)));
}

Listener::~Listener() {
  StopAccepting();
  state_->drain_done = nullptr;
  if (state_->drain_timer != 0) state_->loop.Cancel(state_->drain_timer);
}

const SocketAddress& Listener::local_address() const { return state_->address; }
std::size_t Listener::active_connections() const { return state_->live.size(); }
const Listener::Stats& Listener::stats() const { return state_->stats; }

void Listener::ArmAccept(const std::shared_ptr<State>& state) {
  state->accept_op = state->loop.AcceptMultishot(
      state->listen_fd, [state](Completion& completion) { OnAccepted(state, completion); });
}

void Listener::OnAccepted(const std::shared_ptr<State>& state, Completion& completion) {
  const bool final = !completion.more();
  if (final) state->accept_op = 0;
  if (completion.result >= 0) {
    const int fd = completion.result;
    if (!state->accepting) {
      close(fd);
    } else if (state->live.size() >= state->options.max_connections) {
      ++state->stats.rejected_over_cap;
      close(fd);
    } else {
      ++state->stats.accepted;
      std::shared_ptr<Connection> connection =
          Connection::Adopt(state->loop, fd, state->options.connection);
      Connection* key = connection.get();
      state->live.emplace(key, connection);
      connection->AddCloseObserver([weak_state = std::weak_ptr<State>(state), key] {
        std::shared_ptr<State> state = weak_state.lock();
        if (state == nullptr) return;
        state->live.erase(key);
        MaybeFinishDrain(state);
      });
      if (state->on_accept) state->on_accept(std::move(connection));
    }
  } else if (completion.result != -ECANCELED) {
    // Per-connection failures (e.g. the client reset before accept, EMFILE) must not stop the
    // listener.
    ++state->stats.accept_errors;
  }
  if (!final || !state->accepting) return;
  if (completion.result < 0 && completion.result != -ECANCELED) {
    // The accept ended on an error (e.g. out of descriptors): retrying at once would spin.
    state->loop.Timer(kAcceptRetryDelay, [state](Completion&) {
      if (state->accepting && state->accept_op == 0) ArmAccept(state);
    });
    return;
  }
  ArmAccept(state);
}

void Listener::StopAccepting() {
  if (!state_->accepting) return;
  state_->accepting = false;
  if (state_->accept_op != 0) state_->loop.Cancel(state_->accept_op);
  // The pending accept keeps the socket alive until its cancellation is processed; shutdown()
  // stops listening right now, so new clients are refused rather than queued.
  shutdown(state_->listen_fd, SHUT_RDWR);
  close(state_->listen_fd);
  state_->listen_fd = -1;
  state_->on_accept = nullptr;
}

void Listener::Drain(absl::Duration grace, absl::AnyInvocable<void()> done) {
  StopAccepting();
  state_->drain_done = std::move(done);
  if (state_->live.empty()) {
    MaybeFinishDrain(state_);
    return;
  }
  state_->drain_timer = state_->loop.Timer(
      grace, [weak_state = std::weak_ptr<State>(state_)](Completion& completion) {
        std::shared_ptr<State> state = weak_state.lock();
        if (state == nullptr) return;
        state->drain_timer = 0;
        if (completion.result == -ECANCELED) return;
        std::vector<std::shared_ptr<Connection>> remaining;
        for (auto& [key, weak] : state->live) {
          if (auto connection = weak.lock()) remaining.push_back(std::move(connection));
        }
        for (auto& connection : remaining) {
          connection->Close(absl::AbortedError("listener drained: grace period over"));
        }
      });
}

void Listener::MaybeFinishDrain(const std::shared_ptr<State>& state) {
  if (!state->drain_done || !state->live.empty()) return;
  if (state->drain_timer != 0) {
    state->loop.Cancel(state->drain_timer);
    state->drain_timer = 0;
  }
  auto done = std::move(state->drain_done);
  state->drain_done = nullptr;
  done();
}

}  // namespace nodeward::io
