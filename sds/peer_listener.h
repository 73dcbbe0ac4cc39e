// Unix sockets whose connections nodeward-sds accepts itself, so that the kernel's account of
// each peer (SO_PEERCRED) is taken before gRPC gets the connection: gRPC then names the
// connection "fd:<n>" as its peer, and the table here says who that is.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "sds/caller.h"

namespace nodeward::sds {

struct AcceptedPeer {
  PeerCredentials credentials;
  CallerScope scope = CallerScope::kNode;
};

class PeerListener {
 public:
  struct Socket {
    std::string path;
    mode_t mode = 0660;
    CallerScope scope = CallerScope::kNode;
  };
  // Called from the accept thread with each connection, which it then owns.
  using Handoff = std::function<void(int fd)>;

  // Binds every socket (replacing stale sockets, never another kind of file) and sets its
  // mode; nothing is accepted until Start.
  static absl::StatusOr<std::unique_ptr<PeerListener>> Bind(std::vector<Socket> sockets);
  // Stops accepting, closes and unlinks the sockets.
  ~PeerListener();
  PeerListener(const PeerListener&) = delete;
  PeerListener& operator=(const PeerListener&) = delete;

  void Start(Handoff handoff);
  // Stops accepting; connections already handed off are the receiver's.
  void Stop();

  // Who is behind the gRPC peer string "fd:<n>" of a live connection.
  std::optional<AcceptedPeer> Lookup(absl::string_view grpc_peer) const;

 private:
  PeerListener(std::vector<Socket> sockets, std::vector<int> fds, int wake_fd);
  void AcceptLoop();

  const std::vector<Socket> sockets_;
  const std::vector<int> fds_;
  const int wake_fd_;
  Handoff handoff_;
  std::thread thread_;
  // Keyed by descriptor. A descriptor is only reused once gRPC closed its connection, after
  // which nothing can be sent on that connection, so an entry overwritten for a new one is
  // never the answer for a call still able to receive.
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, AcceptedPeer> peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace nodeward::sds
