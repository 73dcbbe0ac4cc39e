// One mesh mTLS connection carrying HBONE streams, each bridged to an application connection:
// TCP (io::Connection) <-> TLS 1.3 (crypto::TlsEngine) <-> HTTP/2 CONNECT (hbone::Session).
// The same class serves both ends: a client tunnel opens streams for captured outbound
// connections, a server tunnel answers CONNECTs for one pod. Loop-thread only.
//
// Memory is bounded per stream by HTTP/2 flow control: received DATA is only credited back to
// the peer as the application connection takes it, and application bytes are only read while
// the stream's send buffer has room.
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
#include "crypto/spiffe_id.h"
#include "crypto/tls.h"

namespace nodeward::proxy {

// How one bridged stream ended.
struct StreamResult {
  absl::Status status;             // OK when both directions ended cleanly
  std::uint64_t to_app_bytes = 0;  // delivered to the application connection
  std::uint64_t from_app_bytes = 0;
};
using StreamDone = absl::AnyInvocable<void(const StreamResult&)>;

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

  // Client: `CONNECT authority`, bridged to `app` (not yet started). Bytes the application sends
  // before the handshake and the response are held and sent once the stream is open. `done`
  // runs once, also when the server refuses (then with its reason).
  absl::Status OpenStream(const std::string& authority, std::shared_ptr<io::Connection> app,
                          StreamDone done);
  // Server: answers a CONNECT with 200 and bridges it to `app` (not yet started).
  absl::Status AcceptStream(hbone::StreamId stream, std::shared_ptr<io::Connection> app,
                            StreamDone done);
  absl::Status RefuseStream(hbone::StreamId stream, int http_status, absl::string_view reason);

  // Clients: whether a new stream may be opened on this tunnel now.
  bool AcceptsNewStreams() const;
  bool established() const { return established_; }
  bool closed() const { return closed_; }
  // The verified peer identity, once established.
  const std::optional<crypto::SpiffeId>& peer_identity() const;
  std::size_t active_streams() const { return bridges_.size(); }
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
  struct Bridge {
    hbone::StreamId id = 0;
    std::shared_ptr<io::Connection> app;
    std::deque<io::IoBuffer> to_stream;  // application bytes the session has not taken yet
    std::size_t to_stream_bytes = 0;
    bool app_started = false;
    bool app_eof = false;
    bool stream_write_closed = false;
    bool app_write_closed = false;  // the peer's END_STREAM was passed on as shutdown(SHUT_WR)
    bool stream_closed = false;
    absl::Status stream_status;
    StreamResult result;
    StreamDone done;
  };

  HboneTunnel(Role role, std::shared_ptr<io::Connection> wire,
              std::unique_ptr<crypto::TlsEngine> engine, const Options& options,
              ConnectHandler on_connect, ClosedHandler on_closed);
  absl::Status Init();
  hbone::Session::Callbacks SessionCallbacks();

  void OnWireData(io::IoBuffer buffer);
  void OnWireEof();
  void ProcessWireInput();
  bool DrainPlaintext();
  void Flush();
  // Hands whatever the engine sealed to the socket; returns whether there was any.
  bool SendPendingWire();
  void FlushAllForClose();

  Bridge* FindBridge(hbone::StreamId id);
  void StartApp(Bridge& bridge);
  void OnAppData(hbone::StreamId id, io::IoBuffer buffer);
  void OnAppEof(hbone::StreamId id);
  void OnAppClosed(hbone::StreamId id, const absl::Status& status);
  void PumpToStream(Bridge& bridge);
  void PumpToApp(Bridge& bridge);
  void OnStreamClosed(hbone::StreamId id, const absl::Status& status);
  void MaybeFinishBridge(hbone::StreamId id);
  void FinishBridge(hbone::StreamId id, absl::Status status);
  void ArmIdleTimer(absl::Duration delay);

  const Role role_;
  std::shared_ptr<io::Connection> wire_;
  std::unique_ptr<crypto::TlsEngine> engine_;
  const Options options_;
  ConnectHandler on_connect_;
  ClosedHandler on_closed_;
  std::unique_ptr<hbone::Session> session_;
  hbone::ClientSession* client_session_ = nullptr;
  hbone::ServerSession* server_session_ = nullptr;

  absl::flat_hash_map<hbone::StreamId, std::unique_ptr<Bridge>> bridges_;
  std::deque<io::IoBuffer> wire_in_;
  std::vector<std::uint8_t> plain_out_;  // session output waiting for the TLS engine
  std::size_t plain_out_offset_ = 0;
  std::vector<std::uint8_t> scratch_;
  bool established_ = false;
  bool draining_ = false;
  bool peer_gone_ = false;  // the wire reached EOF: finish what was received, then close
  bool closed_ = false;
  bool flushing_ = false;
  bool flush_again_ = false;
  std::uint64_t streams_opened_ = 0;
  io::EventLoop::OpId idle_timer_ = 0;
  Description description_;
  const absl::Time created_ = absl::Now();
  absl::Time last_stream_end_ = absl::Now();
};

}  // namespace nodeward::proxy
