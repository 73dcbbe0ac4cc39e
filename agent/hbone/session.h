// HBONE: TCP streams carried as HTTP/2 CONNECT streams inside one (mTLS) connection, as in
// Istio ambient. Sans-IO: bytes from the peer go in with Receive(), bytes for the peer come
// out of NextOutput(); no sockets, no threads. One session per connection, single-threaded.
//
// Flow control is end to end: received DATA is credited back to the peer (WINDOW_UPDATE) only
// as the application reads it, so a slow consumer bounds what the peer can send to one stream
// window per stream. Writes are accepted up to a per-stream send buffer and report room again
// through on_writable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

struct nghttp2_session;

namespace nodeward::hbone {

using StreamId = std::int32_t;
using Header = std::pair<std::string, std::string>;

// Response header carrying a human-readable reason for a refused CONNECT.
inline constexpr absl::string_view kReasonHeader = "nodeward-reason";

struct SessionOptions {
  // Advertised to the peer: how many streams it may open toward us at once.
  std::uint32_t max_concurrent_streams = 1024;
  // Receive windows we grant. Large windows keep a single stream fast over real RTTs.
  std::uint32_t stream_window = 4 << 20;
  std::uint32_t connection_window = 16 << 20;
  // Bytes Write() accepts per stream before pushing back.
  std::size_t stream_send_buffer = 256 << 10;
};

// Maps an HTTP status of a refused CONNECT to a status code (403 -> PERMISSION_DENIED, ...).
absl::Status StatusFromHttp(int http_status, absl::string_view reason);

class Session {
 public:
  struct Callbacks {
    // Client: the CONNECT response arrived. OK for 2xx; otherwise the refusal with its reason
    // (the stream then closes).
    absl::AnyInvocable<void(StreamId, const absl::Status&)> on_response;
    // Server: a CONNECT for `authority` arrived; answer with Accept() or Refuse(), now or later.
    absl::AnyInvocable<void(StreamId, const std::string& authority, const std::vector<Header>&)>
        on_connect;
    // Data or end of stream can be read with Read().
    absl::AnyInvocable<void(StreamId)> on_readable;
    // The stream's send buffer has room again after Write() accepted less than offered.
    absl::AnyInvocable<void(StreamId)> on_writable;
    // The stream is over in the session: OK after END_STREAM both ways, else the reset reason.
    // Unread data stays readable until Read() drains it.
    absl::AnyInvocable<void(StreamId, const absl::Status&)> on_stream_closed;
    // The peer sent GOAWAY: no new streams; streams up to `last_stream_id` continue.
    absl::AnyInvocable<void(StreamId last_stream_id, const absl::Status&)> on_goaway;
  };

  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Feeds bytes from the peer. An error means the session is unusable: send what
  // CollectOutput() still has (a GOAWAY with the reason) and close the connection. Some
  // protocol errors are only known once the GOAWAY is serialized, so CollectOutput() reports
  // them; callers always call it after Receive().
  absl::Status Receive(absl::Span<const std::uint8_t> bytes);
  // Appends bytes for the peer to `out`, whole frames, stopping once at least `max_bytes` were
  // appended (so a caller can stop when its transport is full). Returns how many. Every call
  // on the session can produce output (WINDOW_UPDATE after Read, DATA after Write...). After a
  // connection error this returns the error, with the final GOAWAY appended to `out`.
  absl::StatusOr<std::size_t> CollectOutput(std::vector<std::uint8_t>& out,
                                            std::size_t max_bytes = SIZE_MAX);
  bool WantsOutput() const;

  // Stream data. Write returns how much was accepted (less than offered when the stream's
  // send buffer is full). Read returns 0 when nothing is buffered; then ReadEof() tells whether
  // the peer ended its side.
  absl::StatusOr<std::size_t> Write(StreamId stream, absl::Span<const std::uint8_t> bytes);
  absl::StatusOr<std::size_t> Read(StreamId stream, absl::Span<std::uint8_t> out);
  bool ReadEof(StreamId stream) const;
  std::size_t Readable(StreamId stream) const;
  // END_STREAM after what was written (half-close).
  absl::Status CloseWrite(StreamId stream);
  // RST_STREAM with `error_code` (an HTTP/2 error code, e.g. 0x8 CANCEL).
  absl::Status Reset(StreamId stream, std::uint32_t error_code);

  // GOAWAY: the peer may not open more streams; open ones finish. Finished() tells when all
  // streams are done and nothing is left to send.
  absl::Status Drain(absl::string_view reason = "draining");
  bool Finished() const;

  std::size_t open_streams() const { return streams_.size(); }
  // Bytes received and not yet read, over all streams: bounded by the connection window.
  std::size_t buffered_receive_bytes() const { return buffered_receive_bytes_; }
  const absl::Status& status() const { return status_; }

 protected:
  struct Stream;
  Session(const SessionOptions& options, Callbacks callbacks);
  absl::Status Init(bool server);
  Stream* Find(StreamId id);
  const Stream* Find(StreamId id) const;
  Stream& Track(StreamId id);
  absl::Status SubmitStart(Stream& stream);
  void Dispatch();
  void Forget(StreamId id);

  nghttp2_session* session_ = nullptr;
  SessionOptions options_;
  Callbacks callbacks_;
  absl::flat_hash_map<StreamId, std::unique_ptr<Stream>> streams_;
  std::size_t buffered_receive_bytes_ = 0;
  absl::Status status_;

  // Events collected while nghttp2 runs and delivered once it returns, so applications can
  // call back into the session freely.
  enum class EventType { kResponse, kConnect, kReadable, kWritable, kClosed, kGoaway };
  struct Event {
    EventType type;
    StreamId stream;
    absl::Status status;
  };
  std::vector<Event> events_;
  // Where DATA frames go while CollectOutput runs nghttp2, and how many bytes went there.
  std::vector<std::uint8_t>* collect_target_ = nullptr;
  std::size_t collected_in_callbacks_ = 0;
  bool dispatching_ = false;
  bool drain_requested_ = false;
  bool goaway_received_ = false;
  bool connection_failed_ = false;
  std::string last_error_;

  friend struct Nghttp2Callbacks;
};

class ClientSession : public Session {
 public:
  static absl::StatusOr<std::unique_ptr<ClientSession>> Create(const SessionOptions& options,
                                                               Callbacks callbacks);
  // Opens `CONNECT authority` (e.g. "10.0.0.2:8080"). Data written before the 2xx response is
  // held and sent once the stream is established.
  absl::StatusOr<StreamId> OpenStream(absl::string_view authority,
                                      const std::vector<Header>& extra_headers = {});

 private:
  using Session::Session;
};

class ServerSession : public Session {
 public:
  static absl::StatusOr<std::unique_ptr<ServerSession>> Create(const SessionOptions& options,
                                                               Callbacks callbacks);
  // Answers a pending CONNECT with 200; the stream then carries data both ways.
  absl::Status Accept(StreamId stream);
  // Answers with `http_status` (e.g. 401, 403, 503) and `reason`, then ends the stream.
  absl::Status Refuse(StreamId stream, int http_status, absl::string_view reason);

 private:
  using Session::Session;
};

// Splits "host:port" / "[v6]:port" and checks the port; CONNECT targets must have both.
absl::StatusOr<std::pair<std::string, std::uint16_t>> ParseAuthority(absl::string_view authority);

}  // namespace nodeward::hbone
