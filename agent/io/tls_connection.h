// TLS inside a Connection, offered as a Stream of plaintext. The engine (crypto::TlsEngine,
// sans-IO) is pumped here and only here: the relay (TLS origination) and the HBONE tunnel both
// see plaintext bytes and never drive TLS themselves, as Envoy's transport sockets sit under
// its connections.
//
// Ciphertext received is fed to the engine as it can take it; plaintext is delivered as the
// receiver has room; plaintext to send is encrypted while the socket is under its high-water
// mark, and the sealed records are handed to the socket without a copy. ShutdownWrite sends
// close_notify after everything queued, then the TCP FIN; the peer's close_notify or FIN ends
// reading (a FIN in the middle of the handshake is an error).
#pragma once

#include <cstddef>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "agent/io/buffer_queue.h"
#include "agent/io/connection.h"
#include "agent/io/stream.h"
#include "crypto/tls.h"

namespace nodeward::io {

class TlsConnection : public Stream, public std::enable_shared_from_this<TlsConnection> {
 public:
  struct Options {
    // Plaintext queued beyond this counts as over the high-water mark (with what the socket
    // itself still queues).
    std::size_t send_high_water = 256 * 1024;
    // Plaintext is delivered in chunks of at most this: one TLS record by default, so a short
    // read holds little. A stream that mostly carries bulk uploads (the gateway's clients)
    // takes several records a chunk: a quarter of the relay passes per byte (make bench's
    // gateway rows: 3.4 -> 2.9 CPU s/GB).
    std::size_t plaintext_chunk = 16 * 1024;
  };

  // Takes a connected, not yet started `wire` and an engine of either role.
  static std::shared_ptr<TlsConnection> Create(std::shared_ptr<Connection> wire,
                                               std::unique_ptr<crypto::TlsEngine> engine,
                                               const Options& options);
  static std::shared_ptr<TlsConnection> Create(std::shared_ptr<Connection> wire,
                                               std::unique_ptr<crypto::TlsEngine> engine) {
    return Create(std::move(wire), std::move(engine), Options());
  }
  ~TlsConnection() override;

  void Start(Callbacks callbacks) override;
  // Runs the handshake alone, before Start(): `done` runs once, OK when it is established,
  // else with why it failed or the connection closed. A server that must know its client before
  // doing anything on the client's behalf (the gateway opens the upstream only then) starts
  // with this; plaintext that arrives meanwhile waits for Start().
  void Handshake(absl::AnyInvocable<void(const absl::Status&)> done);
  void PauseReading() override;
  void ResumeReading() override;
  bool reading_paused() const override { return paused_; }
  void ReceiveRoomChanged() override { Process(); }

  void Send(IoBuffer chunk) override;
  // Encrypts and sends what it can of `bytes` at once and returns how much it took: nothing
  // before the handshake is done, while the socket is over its high-water mark or while
  // Send() chunks wait. For producers that keep their own output buffer (the HTTP/2 session)
  // and would otherwise copy it into a chunk first.
  absl::StatusOr<std::size_t> Write(absl::Span<const std::uint8_t> bytes);
  std::size_t queued_bytes() const override;
  std::size_t send_high_water() const override { return options_.send_high_water; }
  void ShutdownWrite() override;
  bool write_closed() const override { return write_closed_; }

  void Close(const absl::Status& reason = absl::OkStatus()) override;
  void Reset(const absl::Status& reason) override;
  bool closed() const override { return closed_; }

  const Stats& stats() const override { return stats_; }
  EventLoop& loop() override { return wire_->loop(); }

  bool established() const {
    return engine_->state() == crypto::TlsEngine::State::kEstablished ||
           engine_->state() == crypto::TlsEngine::State::kClosed;
  }
  const crypto::TlsEngine& engine() const { return *engine_; }
  Connection& wire() { return *wire_; }
  // Ciphertext received and not yet taken by the engine, plaintext not yet encrypted: what
  // this layer holds on top of the socket's own queue.
  std::size_t buffered_bytes() const { return wire_in_bytes_ + out_bytes_; }

 private:
  TlsConnection(std::shared_ptr<Connection> wire, std::unique_ptr<crypto::TlsEngine> engine,
                const Options& options);
  // Feeds what was received, decrypts, delivers plaintext, ends reading when the peer did.
  void Process();
  // Encrypts queued plaintext while the socket keeps up, and sends close_notify when asked.
  void Flush();
  bool SendSealed();
  void Fail(const absl::Status& status);
  void MaybeSignalDrained();
  // Starts the socket under the engine (from Start or Handshake, once).
  void StartWire();

  std::shared_ptr<Connection> wire_;
  std::unique_ptr<crypto::TlsEngine> engine_;
  const Options options_;
  // Shared so that a callback that closes this stream keeps its own closure alive.
  std::shared_ptr<Callbacks> callbacks_ = std::make_shared<Callbacks>();
  Stats stats_;

  BufferQueue wire_in_;
  std::size_t wire_in_bytes_ = 0;
  bool wire_eof_ = false;
  BufferQueue out_;
  std::size_t out_bytes_ = 0;
  bool wire_started_ = false;
  bool started_ = false;  // Start() was called: plaintext goes to the callbacks
  absl::AnyInvocable<void(const absl::Status&)> handshake_done_;
  bool paused_ = false;
  bool read_eof_delivered_ = false;
  bool shutdown_requested_ = false;
  bool close_notify_sent_ = false;
  bool write_closed_ = false;
  bool crossed_high_water_ = false;
  bool was_established_ = false;
  bool processing_ = false;
  bool flushing_ = false;
  bool closed_ = false;
};

}  // namespace nodeward::io
