// One HTTP/2 CONNECT stream of an HBONE tunnel, as an io::Stream: the relay carries an
// application connection over it exactly as over a TCP or TLS connection.
//
// Memory is bounded by HTTP/2 flow control: what the peer sent is read out of the session only
// as the receiver has room, and only then credited back (WINDOW_UPDATE), so a slow application
// holds at most one stream window on this side; what the application sends is queued up to
// the stream's budget before the relay stops reading it.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "agent/hbone/session.h"
#include "agent/io/buffer_queue.h"
#include "agent/io/io_buffer.h"
#include "agent/io/stream.h"

namespace nodeward::proxy {

class HboneTunnel;

class HboneStream : public io::Stream, public std::enable_shared_from_this<HboneStream> {
 public:
  // Made by the tunnel (OpenStream, AcceptStream). `send_budget`: bytes queued toward the
  // session before the stream counts as over its high-water mark.
  HboneStream(std::weak_ptr<HboneTunnel> tunnel, hbone::StreamId id, std::size_t send_budget,
              io::EventLoop& loop);
  ~HboneStream() override;

  void Start(Callbacks callbacks) override;
  void PauseReading() override { paused_ = true; }
  void ResumeReading() override;
  bool reading_paused() const override { return paused_; }
  void ReceiveRoomChanged() override { Deliver(); }

  void Send(io::IoBuffer chunk) override;
  std::size_t queued_bytes() const override { return to_session_bytes_; }
  std::size_t send_high_water() const override { return send_budget_; }
  // END_STREAM once what was sent is in the session. Writing counts as closed once the
  // session has the stream over both ways, so a relay never cuts trailing DATA short.
  void ShutdownWrite() override;
  bool write_closed() const override { return write_closed_; }

  // RST_STREAM (CANCEL) unless the stream already ended cleanly.
  void Close(const absl::Status& reason = absl::OkStatus()) override;
  void Reset(const absl::Status& reason) override { Close(reason); }
  bool closed() const override { return closed_; }

  const Stats& stats() const override { return stats_; }
  io::EventLoop& loop() override { return loop_; }

  hbone::StreamId id() const { return id_; }

 private:
  friend class HboneTunnel;

  // Session events, from the tunnel.
  void Deliver();
  void PumpToSession();
  void OnResponse(const absl::Status& status);
  void OnSessionClosed(const absl::Status& status);

  std::weak_ptr<HboneTunnel> tunnel_;
  const hbone::StreamId id_;
  const std::size_t send_budget_;
  io::EventLoop& loop_;
  std::shared_ptr<Callbacks> callbacks_ = std::make_shared<Callbacks>();
  Stats stats_;
  io::BufferQueue to_session_;  // accepted from the relay, not yet in the session
  std::size_t to_session_bytes_ = 0;
  absl::Status response_status_;  // a client's refused CONNECT
  bool started_ = false;
  bool paused_ = false;
  bool crossed_high_water_ = false;
  bool shutdown_requested_ = false;
  bool end_stream_submitted_ = false;
  bool session_closed_ = false;
  bool read_eof_delivered_ = false;
  bool write_closed_ = false;
  bool closed_ = false;
};

}  // namespace nodeward::proxy
