#include "agent/proxy/hbone_tunnel.h"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {
namespace {

constexpr std::size_t kScratchBytes = 16 * 1024;
// Most stream bytes handed to an application connection in one chunk.
constexpr std::size_t kAppChunkBytes = 64 * 1024;
// Session output gathered per round before it is handed to TLS: several records' worth.
constexpr std::size_t kCollectBytes = 64 * 1024;
constexpr std::uint32_t kHttp2Cancel = 0x8;

// Closes with RST rather than FIN, so the application sees the failure at once.
void Reset(io::Connection& connection, const absl::Status& reason) {
  if (connection.closed()) return;
  linger option{1, 0};
  setsockopt(connection.fd(), SOL_SOCKET, SO_LINGER, &option, sizeof(option));
  connection.Close(reason);
}

}  // namespace

absl::StatusOr<std::shared_ptr<HboneTunnel>> HboneTunnel::Start(
    Role role, std::shared_ptr<io::Connection> wire, std::unique_ptr<crypto::TlsEngine> engine,
    const Options& options, ConnectHandler on_connect, ClosedHandler on_closed) {
  if (role == Role::kServer && !on_connect) {
    return absl::InvalidArgumentError("a server tunnel needs a CONNECT handler");
  }
  std::shared_ptr<HboneTunnel> tunnel(new HboneTunnel(role, std::move(wire), std::move(engine),
                                                      options, std::move(on_connect),
                                                      std::move(on_closed)));
  if (absl::Status status = tunnel->Init(); !status.ok()) {
    tunnel->wire_->Close(status);
    return status;
  }
  return tunnel;
}

HboneTunnel::HboneTunnel(Role role, std::shared_ptr<io::Connection> wire,
                         std::unique_ptr<crypto::TlsEngine> engine, const Options& options,
                         ConnectHandler on_connect, ClosedHandler on_closed)
    : role_(role),
      wire_(std::move(wire)),
      engine_(std::move(engine)),
      options_(options),
      on_connect_(std::move(on_connect)),
      on_closed_(std::move(on_closed)),
      scratch_(kScratchBytes) {}

HboneTunnel::~HboneTunnel() = default;

absl::Status HboneTunnel::Init() {
  if (role_ == Role::kClient) {
    absl::StatusOr<std::unique_ptr<hbone::ClientSession>> session =
        hbone::ClientSession::Create(options_.session, SessionCallbacks());
    if (!session.ok()) return session.status();
    client_session_ = session->get();
    session_ = std::move(*session);
  } else {
    absl::StatusOr<std::unique_ptr<hbone::ServerSession>> session =
        hbone::ServerSession::Create(options_.session, SessionCallbacks());
    if (!session.ok()) return session.status();
    server_session_ = session->get();
    session_ = std::move(*session);
  }
  std::weak_ptr<HboneTunnel> weak = weak_from_this();
  io::Connection::Callbacks callbacks;
  callbacks.on_data = [weak](io::IoBuffer buffer) {
    if (auto self = weak.lock()) self->OnWireData(std::move(buffer));
  };
  callbacks.on_read_eof = [weak] {
    if (auto self = weak.lock()) self->OnWireEof();
  };
  callbacks.on_send_drained = [weak] {
    if (auto self = weak.lock()) self->Flush();
  };
  // After a graceful close our close_notify and FIN are out: nothing more to wait for.
  callbacks.on_write_closed = [weak] {
    if (auto self = weak.lock(); self != nullptr && self->closed_) self->wire_->Close();
  };
  callbacks.on_closed = [weak](const absl::Status& status) {
    if (auto self = weak.lock()) {
      self->Close(status.ok() ? absl::UnavailableError("tunnel connection closed") : status);
    }
  };
  // The tunnel owns the wire; the wire's callbacks only point back weakly. What keeps the
  // tunnel alive is whoever holds it (the pool or the server side's own registry) plus this
  // observer-held reference, dropped when the wire closes.
  wire_->AddCloseObserver([self = shared_from_this()] {});
  wire_->Start(std::move(callbacks));
  // Clients speak first in TLS; the HTTP/2 preface waits in plain_out_ until it is up.
  Flush();
  ArmIdleTimer(options_.idle_timeout);
  return absl::OkStatus();
}

hbone::Session::Callbacks HboneTunnel::SessionCallbacks() {
  // The session is owned by this tunnel and never outlives it: plain `this` is safe here.
  hbone::Session::Callbacks callbacks;
  callbacks.on_response = [this](hbone::StreamId id, const absl::Status& status) {
    if (status.ok()) return;
    if (Bridge* bridge = FindBridge(id)) bridge->stream_status = status;
  };
  callbacks.on_connect = [this](hbone::StreamId id, const std::string& authority,
                                const std::vector<hbone::Header>&) {
    if (draining_ || closed_) {
      server_session_->Refuse(id, 503, "tunnel is draining").IgnoreError();
      return;
    }
    on_connect_(id, authority);
  };
  callbacks.on_readable = [this](hbone::StreamId id) {
    if (Bridge* bridge = FindBridge(id)) PumpToApp(*bridge);
  };
  callbacks.on_writable = [this](hbone::StreamId id) {
    if (Bridge* bridge = FindBridge(id)) PumpToStream(*bridge);
  };
  callbacks.on_stream_closed = [this](hbone::StreamId id, const absl::Status& status) {
    OnStreamClosed(id, status);
  };
  callbacks.on_goaway = [this](hbone::StreamId, const absl::Status&) { draining_ = true; };
  return callbacks;
}

bool HboneTunnel::AcceptsNewStreams() const {
  return role_ == Role::kClient && !closed_ && !draining_ && session_->status().ok() &&
         bridges_.size() < options_.max_streams;
}

const std::optional<crypto::SpiffeId>& HboneTunnel::peer_identity() const {
  return engine_->peer_identity();
}

absl::Status HboneTunnel::OpenStream(const std::string& authority,
                                     std::shared_ptr<io::Connection> app, StreamDone done) {
  if (!AcceptsNewStreams()) return absl::UnavailableError("tunnel takes no new streams");
  absl::StatusOr<hbone::StreamId> id = client_session_->OpenStream(authority);
  if (!id.ok()) return id.status();
  auto bridge = std::make_unique<Bridge>();
  bridge->id = *id;
  bridge->app = std::move(app);
  bridge->done = std::move(done);
  Bridge& stored = *bridge;
  bridges_[*id] = std::move(bridge);
  ++streams_opened_;
  StartApp(stored);
  Flush();
  return absl::OkStatus();
}

absl::Status HboneTunnel::AcceptStream(hbone::StreamId stream, std::shared_ptr<io::Connection> app,
                                       StreamDone done) {
  if (closed_) return absl::UnavailableError("tunnel closed");
  if (absl::Status status = server_session_->Accept(stream); !status.ok()) {
    Flush();
    return status;
  }
  auto bridge = std::make_unique<Bridge>();
  bridge->id = stream;
  bridge->app = std::move(app);
  bridge->done = std::move(done);
  Bridge& stored = *bridge;
  bridges_[stream] = std::move(bridge);
  ++streams_opened_;
  StartApp(stored);
  // Data may have arrived with the CONNECT, before the stream had an application.
  if (Bridge* again = FindBridge(stream)) PumpToApp(*again);
  Flush();
  return absl::OkStatus();
}

absl::Status HboneTunnel::RefuseStream(hbone::StreamId stream, int http_status,
                                       absl::string_view reason) {
  if (closed_) return absl::UnavailableError("tunnel closed");
  absl::Status status = server_session_->Refuse(stream, http_status, reason);
  Flush();
  return status;
}

std::size_t HboneTunnel::buffered_bytes() const {
  std::size_t total = session_->buffered_receive_bytes() + (plain_out_.size() - plain_out_offset_);
  for (const io::IoBuffer& held : wire_in_) total += held.size();
  for (const auto& [id, bridge] : bridges_) total += bridge->to_stream_bytes;
  return total;
}

HboneTunnel::Bridge* HboneTunnel::FindBridge(hbone::StreamId id) {
  auto it = bridges_.find(id);
  return it == bridges_.end() ? nullptr : it->second.get();
}

void HboneTunnel::StartApp(Bridge& bridge) {
  std::weak_ptr<HboneTunnel> weak = weak_from_this();
  const hbone::StreamId id = bridge.id;
  io::Connection::Callbacks callbacks;
  callbacks.on_data = [weak, id](io::IoBuffer buffer) {
    if (auto self = weak.lock()) self->OnAppData(id, std::move(buffer));
  };
  callbacks.on_read_eof = [weak, id] {
    if (auto self = weak.lock()) self->OnAppEof(id);
  };
  callbacks.on_send_drained = [weak, id] {
    if (auto self = weak.lock()) {
      if (Bridge* bridge = self->FindBridge(id)) self->PumpToApp(*bridge);
      self->Flush();
    }
  };
  callbacks.on_write_closed = [weak, id] {
    if (auto self = weak.lock()) self->MaybeFinishBridge(id);
  };
  callbacks.on_closed = [weak, id](const absl::Status& status) {
    if (auto self = weak.lock()) self->OnAppClosed(id, status);
  };
  bridge.app_started = true;
  bridge.app->Start(std::move(callbacks));
}

void HboneTunnel::OnAppData(hbone::StreamId id, io::IoBuffer buffer) {
  Bridge* bridge = FindBridge(id);
  if (bridge == nullptr) return;
  bridge->result.from_app_bytes += buffer.size();
  bridge->to_stream_bytes += buffer.size();
  bridge->to_stream.push_back(std::move(buffer));
  PumpToStream(*bridge);
  Flush();
}

void HboneTunnel::OnAppEof(hbone::StreamId id) {
  Bridge* bridge = FindBridge(id);
  if (bridge == nullptr) return;
  bridge->app_eof = true;
  PumpToStream(*bridge);
  Flush();
}

void HboneTunnel::PumpToStream(Bridge& bridge) {
  if (bridge.stream_closed) return;
  while (!bridge.to_stream.empty()) {
    io::IoBuffer& front = bridge.to_stream.front();
    absl::StatusOr<std::size_t> taken = session_->Write(bridge.id, front.data());
    if (!taken.ok()) {
      FinishBridge(bridge.id, taken.status());
      return;
    }
    if (*taken == 0) break;
    front.Consume(*taken);
    bridge.to_stream_bytes -= *taken;
    if (front.empty()) bridge.to_stream.pop_front();
  }
  // Held chunks would otherwise pin receive buffers the whole loop shares.
  for (io::IoBuffer& held : bridge.to_stream) held.DetachFromRing();
  if (bridge.to_stream_bytes >= options_.app_read_budget) {
    bridge.app->PauseReading();
  } else if (bridge.app->reading_paused()) {
    bridge.app->ResumeReading();
  }
  if (bridge.to_stream.empty() && bridge.app_eof && !bridge.stream_write_closed) {
    bridge.stream_write_closed = true;
    if (absl::Status status = session_->CloseWrite(bridge.id); !status.ok()) {
      FinishBridge(bridge.id, status);
    }
  }
}

void HboneTunnel::PumpToApp(Bridge& bridge) {
  if (!bridge.app_started || bridge.app->closed()) return;
  while (!bridge.app->over_high_water()) {
    const std::size_t readable = std::min(session_->Readable(bridge.id), kAppChunkBytes);
    if (readable == 0) break;
    // Read straight into the chunk the app connection will send.
    bool failed = false;
    io::IoBuffer chunk = io::IoBuffer::Filled(readable, [&](absl::Span<std::uint8_t> space) {
      absl::StatusOr<std::size_t> n = session_->Read(bridge.id, space);
      failed = !n.ok();
      return n.value_or(0);
    });
    if (failed || chunk.empty()) break;
    bridge.result.to_app_bytes += chunk.size();
    bridge.app->Send(std::move(chunk));
  }
  if (!bridge.app_write_closed && session_->Readable(bridge.id) == 0 &&
      session_->ReadEof(bridge.id)) {
    bridge.app_write_closed = true;
    bridge.app->ShutdownWrite();
  }
  MaybeFinishBridge(bridge.id);
}

void HboneTunnel::OnStreamClosed(hbone::StreamId id, const absl::Status& status) {
  Bridge* bridge = FindBridge(id);
  if (bridge == nullptr) return;
  bridge->stream_closed = true;
  if (bridge->stream_status.ok()) bridge->stream_status = status;
  if (!bridge->stream_status.ok()) {
    FinishBridge(id, bridge->stream_status);
    return;
  }
  PumpToApp(*bridge);
}

void HboneTunnel::MaybeFinishBridge(hbone::StreamId id) {
  Bridge* bridge = FindBridge(id);
  if (bridge == nullptr) return;
  const bool app_done = bridge->app_write_closed && bridge->app->write_closed() &&
                        (bridge->app_eof || bridge->app->closed());
  if (bridge->stream_closed && app_done) FinishBridge(id, absl::OkStatus());
}

void HboneTunnel::OnAppClosed(hbone::StreamId id, const absl::Status& status) {
  Bridge* bridge = FindBridge(id);
  if (bridge == nullptr) return;
  if (!bridge->stream_closed) {
    session_->Reset(id, kHttp2Cancel).IgnoreError();
    Flush();
  }
  FinishBridge(id, status.ok() && bridge->stream_closed
                       ? absl::OkStatus()
                       : (status.ok() ? absl::CancelledError("application closed") : status));
}

void HboneTunnel::FinishBridge(hbone::StreamId id, absl::Status status) {
  auto it = bridges_.find(id);
  if (it == bridges_.end()) return;
  std::unique_ptr<Bridge> bridge = std::move(it->second);
  bridges_.erase(it);
  if (!bridge->stream_closed) {
    session_->Reset(id, kHttp2Cancel).IgnoreError();
  }
  if (!bridge->app->closed()) {
    if (status.ok()) {
      bridge->app->Close();
    } else {
      Reset(*bridge->app, status);
    }
  }
  bridge->result.status = std::move(status);
  if (bridge->done) bridge->done(bridge->result);
  if (bridges_.empty()) {
    last_stream_end_ = absl::Now();
    if (peer_gone_ || (draining_ && session_->Finished())) Close(absl::OkStatus());
  }
  if (!closed_) Flush();
}

void HboneTunnel::OnWireData(io::IoBuffer buffer) {
  wire_in_.push_back(std::move(buffer));
  ProcessWireInput();
}

void HboneTunnel::ProcessWireInput() {
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  while (!closed_ && !wire_in_.empty()) {
    io::IoBuffer& front = wire_in_.front();
    const std::size_t fed = engine_->FeedWire(front.data());
    front.Consume(fed);
    if (front.empty()) wire_in_.pop_front();
    if (absl::Status status = engine_->Advance(); !status.ok()) {
      Flush();  // the alert, if any
      Close(status);
      return;
    }
    if (!DrainPlaintext()) return;
    if (fed == 0) break;
  }
  if (closed_) return;
  if (!wire_in_.empty()) {
    for (io::IoBuffer& held : wire_in_) held.DetachFromRing();
  }
  Flush();
}

bool HboneTunnel::DrainPlaintext() {
  if (!established_ && engine_->state() == crypto::TlsEngine::State::kEstablished) {
    established_ = true;
  }
  for (;;) {
    absl::StatusOr<std::size_t> n = engine_->ReadPlaintext(absl::MakeSpan(scratch_));
    if (!n.ok()) {
      Close(n.status());
      return false;
    }
    if (*n == 0) break;
    if (absl::Status status = session_->Receive(absl::MakeConstSpan(scratch_.data(), *n));
        !status.ok()) {
      Flush();  // the GOAWAY that explains it
      Close(status);
      return false;
    }
    if (closed_) return false;
  }
  if (engine_->PeerClosed()) draining_ = true;
  return !closed_;
}

void HboneTunnel::OnWireEof() {
  if (closed_) {
    wire_->Close();
    return;
  }
  engine_->FeedWireEof();
  ProcessWireInput();
  if (closed_) return;
  if (absl::Status status = engine_->Advance(); !status.ok()) {
    Close(status);
    return;
  }
  // Streams the peer already finished only wait for their last bytes to reach the
  // application; the others cannot complete any more.
  std::vector<hbone::StreamId> cut;
  for (const auto& [id, bridge] : bridges_) {
    if (!bridge->stream_closed) cut.push_back(id);
  }
  for (hbone::StreamId id : cut) {
    FinishBridge(id, absl::UnavailableError("peer closed the tunnel with the stream open"));
  }
  peer_gone_ = true;
  draining_ = true;
  if (bridges_.empty() && !closed_) Close(absl::OkStatus());
}

void HboneTunnel::Flush() {
  if (closed_) return;
  if (flushing_) {
    flush_again_ = true;
    return;
  }
  flushing_ = true;
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  bool progress = true;
  while (progress && !closed_) {
    progress = false;
    flush_again_ = false;
    // Session frames -> plain_out_, unless the socket is already backed up: then the session
    // keeps them and its flow control pushes back on the streams.
    if (!wire_->over_high_water() && plain_out_.size() - plain_out_offset_ < kCollectBytes) {
      absl::StatusOr<std::size_t> collected = session_->CollectOutput(plain_out_, kCollectBytes);
      if (!collected.ok()) {
        // The final GOAWAY was appended: try to get it out, then stop.
        engine_->WritePlaintext(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_))
            .IgnoreError();
        SendPendingWire();
        flushing_ = false;
        Close(collected.status());
        return;
      }
      if (*collected > 0) progress = true;
    }
    if (plain_out_offset_ < plain_out_.size()) {
      absl::StatusOr<std::size_t> written =
          engine_->WritePlaintext(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_));
      if (!written.ok()) {
        flushing_ = false;
        Close(written.status());
        return;
      }
      if (*written > 0) progress = true;
      plain_out_offset_ += *written;
      if (plain_out_offset_ == plain_out_.size()) {
        plain_out_.clear();
        plain_out_offset_ = 0;
      }
    }
    if (SendPendingWire()) progress = true;
    if (!established_ && engine_->state() == crypto::TlsEngine::State::kEstablished) {
      established_ = true;
      progress = true;
    }
    if (flush_again_) progress = true;
  }
  flushing_ = false;
}

bool HboneTunnel::SendPendingWire() {
  crypto::TlsEngine::WireChunk out = engine_->TakeWire();
  if (out.size == 0) return false;
  // The sealed records go to the socket in the engine's own block, not a copy of it.
  wire_->Send(io::IoBuffer::Adopt(std::move(out.storage), out.offset, out.size));
  return true;
}

void HboneTunnel::FlushAllForClose() {
  // Everything the session still has (last DATA, END_STREAM, GOAWAY) goes out before
  // close_notify, whatever the socket's high-water mark: it is bounded by the windows.
  for (;;) {
    absl::StatusOr<std::size_t> collected = session_->CollectOutput(plain_out_, kCollectBytes);
    if (!collected.ok() || *collected == 0) break;
  }
  while (plain_out_offset_ < plain_out_.size()) {
    absl::StatusOr<std::size_t> written =
        engine_->WritePlaintext(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_));
    if (!written.ok() || *written == 0) break;
    plain_out_offset_ += *written;
    SendPendingWire();
  }
  plain_out_.clear();
  plain_out_offset_ = 0;
}

void HboneTunnel::ArmIdleTimer(absl::Duration delay) {
  std::weak_ptr<HboneTunnel> weak = weak_from_this();
  idle_timer_ = wire_->loop().Timer(delay, [weak](io::Completion& completion) {
    auto self = weak.lock();
    if (self == nullptr || self->closed_ || completion.result == -ECANCELED) return;
    self->idle_timer_ = 0;
    const absl::Duration quiet = absl::Now() - self->last_stream_end_;
    if (self->bridges_.empty() && quiet >= self->options_.idle_timeout) {
      self->Drain("idle");
      if (self->bridges_.empty()) self->Close(absl::OkStatus());
      return;
    }
    // Look again when the last stream's end is idle_timeout old, not a whole period later.
    self->ArmIdleTimer(self->bridges_.empty() ? self->options_.idle_timeout - quiet
                                              : self->options_.idle_timeout);
  });
}

void HboneTunnel::Drain(absl::string_view reason) {
  if (closed_ || draining_) return;
  draining_ = true;
  session_->Drain(reason).IgnoreError();
  Flush();
  if (bridges_.empty() && session_->Finished()) Close(absl::OkStatus());
}

void HboneTunnel::Close(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  if (idle_timer_ != 0) {
    wire_->loop().Cancel(idle_timer_);
    idle_timer_ = 0;
  }
  std::vector<hbone::StreamId> ids;
  for (const auto& [id, bridge] : bridges_) ids.push_back(id);
  for (hbone::StreamId id : ids) {
    FinishBridge(id, reason.ok() ? absl::UnavailableError("tunnel closed") : reason);
  }
  if (!wire_->closed()) {
    if (reason.ok()) {
      FlushAllForClose();
      engine_->Shutdown();
      SendPendingWire();
      wire_->ShutdownWrite();
    } else {
      wire_->Close(reason);
    }
  }
  if (on_closed_) std::exchange(on_closed_, nullptr)(reason);
}

}  // namespace nodeward::proxy
