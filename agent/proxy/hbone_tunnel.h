// One mesh mTLS connection carrying HBONE streams: TCP (io::Connection) <-> TLS 1.3
// (io::TlsConnection) <-> HTTP/2 CONNECT (hbone::Session) <-> one HboneStream per CONNECT.
// The tunnel maps HTTP/2 streams to HboneStreams and never pumps TLS itself; the relay carries
// each stream's application connection. The same class serves both ends: a client tunnel opens
// streams for captured outbound connections, a server tunnel answers CONNECTs for one pod.
// Loop-thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/hbone/session.h"
#include "agent/io/connection.h"
#include "agent/io/event_loop.h"
#include "agent/io/tls_connection.h"
#include "agent/proxy/hbone_stream.h"
#include "common/spiffe_id.h"
#include "crypto/tls.h"

namespace nodeward::proxy {

class HboneTunnel : public std::enable_shared_from_this<HboneTunnel> {
 public:
  enum class Role { kClient, kServer };

  struct Options {
    hbone::SessionOptions session;
    // Client tunnels: no new streams beyond this many; the pool opens another tunnel.
    std::size_t max_streams = 100;
    // Application bytes held for a stream whose send buffer is full, before reading pauses.
    std::size_t app_read_budget = 64 * 1024;
    // A tunnel without streams for this long closes.
    absl::Duration idle_timeout = absl::Seconds(60);
  };

  // Server: a CONNECT for `authority` arrived; answer with AcceptStream or RefuseStream.
  using ConnectHandler = absl::AnyInvocable<void(hbone::StreamId, const std::string& authority)>;
  using ClosedHandler = absl::AnyInvocable<void(const absl::Status&)>;

  // Takes a connected, not yet started `wire` and an engine of the matching role. `on_connect`
  // is required for servers. `on_closed` runs once, after every stream was finished.
  static absl::StatusOr<std::shared_ptr<HboneTunnel>> Start(
      Role role, std::shared_ptr<io::Connection> wire, std::unique_ptr<crypto::TlsEngine> engine,
      const Options& options, ConnectHandler on_connect, ClosedHandler on_closed);
  ~HboneTunnel();

  // Client: `CONNECT authority`. The stream may be written at once: bytes sent before the
  // handshake and the response are held and sent once it is open. A refusal closes the stream
  // with the server's reason (PERMISSION_DENIED for 403, ...).
  absl::StatusOr<std::shared_ptr<HboneStream>> OpenStream(const std::string& authority);
  // Server: answers a CONNECT with 200; data that came with it waits for the stream's start.
  absl::StatusOr<std::shared_ptr<HboneStream>> AcceptStream(hbone::StreamId stream);
  absl::Status RefuseStream(hbone::StreamId stream, int http_status, absl::string_view reason);

  // Clients: whether a new stream may be opened on this tunnel now.
  bool AcceptsNewStreams() const;
  bool established() const { return tls_->established(); }
  bool closed() const { return closed_; }
  // The verified peer identity, once established.
  const std::optional<SpiffeId>& peer_identity() const;
  std::size_t active_streams() const { return streams_.size(); }
  // Bytes the tunnel holds right now: received and not yet delivered, accepted and not yet
  // encrypted. Bounded by the flow-control windows and per-stream budgets, whatever the peers do.
  std::size_t buffered_bytes() const;
  std::uint64_t streams_opened() const { return streams_opened_; }

  // What the debug CLI shows about a tunnel; set by whoever creates it.
  struct Description {
    std::string pod;  // namespace/name of the local pod
    std::string local_identity;
    std::string peer_address;
  };
  void set_description(Description description) { description_ = std::move(description); }
  const Description& description() const { return description_; }
  absl::Time created() const { return created_; }
  bool draining() const { return draining_; }

  // GOAWAY: open streams finish, then the tunnel closes.
  void Drain(absl::string_view reason);
  // Cuts the tunnel and every stream on it.
  void Close(const absl::Status& reason);

 private:
  friend class HboneStream;

  HboneTunnel(Role role, std::shared_ptr<io::TlsConnection> tls, const Options& options,
              ConnectHandler on_connect, ClosedHandler on_closed);
  absl::Status Init();
  hbone::Session::Callbacks SessionCallbacks();

  HboneStream* FindStream(hbone::StreamId id);
  std::shared_ptr<HboneStream> AddStream(hbone::StreamId id);
  // The stream is done (it closed): out of the tunnel, which may then close or go idle.
  void Forget(hbone::StreamId id);
  void OnPlaintext(io::IoBuffer buffer);
  void OnWireEof();
  // Session output -> TLS while the socket keeps up.
  void Flush();
  // Flush once the loop has handled its current batch of completions: the frames that many
  // chunks of one batch produce (WINDOW_UPDATEs above all) leave in one TLS write.
  void FlushSoon();
  void FlushAllForClose();
  void ArmIdleTimer(absl::Duration delay);

  const Role role_;
  std::shared_ptr<io::TlsConnection> tls_;
  const Options options_;
  ConnectHandler on_connect_;
  ClosedHandler on_closed_;
  std::unique_ptr<hbone::Session> session_;
  hbone::ClientSession* client_session_ = nullptr;
  hbone::ServerSession* server_session_ = nullptr;

  absl::flat_hash_map<hbone::StreamId, std::shared_ptr<HboneStream>> streams_;
  std::vector<std::uint8_t> plain_out_;  // session output not yet taken by TLS
  std::size_t plain_out_offset_ = 0;
  bool draining_ = false;
  bool peer_gone_ = false;  // the wire ended: finish what was received, then close
  bool closed_ = false;
  bool flushing_ = false;
  bool flush_again_ = false;
  bool flush_scheduled_ = false;
  std::uint64_t streams_opened_ = 0;
  io::EventLoop::OpId idle_timer_ = 0;
  Description description_;
  const absl::Time created_ = absl::Now();
  absl::Time last_stream_end_ = absl::Now();
};

}  // namespace nodeward::proxy
