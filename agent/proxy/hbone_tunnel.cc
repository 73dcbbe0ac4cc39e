#include "agent/proxy/hbone_tunnel.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {
namespace {

// Session output gathered per round before it is handed to TLS: several records' worth.
constexpr std::size_t kCollectBytes = 64 * 1024;

}  // namespace

absl::StatusOr<std::shared_ptr<HboneTunnel>> HboneTunnel::Start(
    Role role, std::shared_ptr<io::Connection> wire, std::unique_ptr<crypto::TlsEngine> engine,
    const Options& options, ConnectHandler on_connect, ClosedHandler on_closed) {
  if (role == Role::kServer && !on_connect) {
    return absl::InvalidArgumentError("a server tunnel needs a CONNECT handler");
  }
  std::shared_ptr<io::TlsConnection> tls =
      io::TlsConnection::Create(std::move(wire), std::move(engine));
  std::shared_ptr<HboneTunnel> tunnel(
      new HboneTunnel(role, tls, options, std::move(on_connect), std::move(on_closed)));
  if (absl::Status status = tunnel->Init(); !status.ok()) {
    tls->Close(status);
    return status;
  }
  return tunnel;
}

HboneTunnel::HboneTunnel(Role role, std::shared_ptr<io::TlsConnection> tls, const Options& options,
                         ConnectHandler on_connect, ClosedHandler on_closed)
    : role_(role),
      tls_(std::move(tls)),
      options_(options),
      on_connect_(std::move(on_connect)),
      on_closed_(std::move(on_closed)) {}

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
  io::Stream::Callbacks callbacks;
  callbacks.on_data = [weak](io::IoBuffer buffer) {
    if (auto self = weak.lock()) self->OnPlaintext(std::move(buffer));
  };
  callbacks.on_read_eof = [weak] {
    if (auto self = weak.lock()) self->OnWireEof();
  };
  callbacks.on_send_drained = [weak] {
    if (auto self = weak.lock()) self->Flush();
  };
  // After a graceful close our close_notify and FIN are out: nothing more to wait for.
  callbacks.on_write_closed = [weak] {
    if (auto self = weak.lock(); self != nullptr && self->closed_) self->tls_->Close();
  };
  callbacks.on_closed = [weak](const absl::Status& status) {
    if (auto self = weak.lock()) {
      self->Close(status.ok() ? absl::UnavailableError("tunnel connection closed") : status);
    }
  };
  // The tunnel owns its connection; the connection's callbacks only point back weakly. What
  // keeps the tunnel alive is whoever holds it (the pool or the server side's own registry)
  // plus this observer-held reference, dropped when the socket closes.
  tls_->wire().AddCloseObserver([self = shared_from_this()] {});
  tls_->Start(std::move(callbacks));
  // The HTTP/2 preface waits in plain_out_ until TLS is up.
  Flush();
  ArmIdleTimer(options_.idle_timeout);
  return absl::OkStatus();
}

hbone::Session::Callbacks HboneTunnel::SessionCallbacks() {
  // The session is owned by this tunnel and never outlives it: plain `this` is safe here.
  hbone::Session::Callbacks callbacks;
  callbacks.on_response = [this](hbone::StreamId id, const absl::Status& status) {
    if (HboneStream* stream = FindStream(id)) stream->OnResponse(status);
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
    if (HboneStream* stream = FindStream(id)) stream->Deliver();
  };
  callbacks.on_writable = [this](hbone::StreamId id) {
    if (HboneStream* stream = FindStream(id)) stream->PumpToSession();
  };
  callbacks.on_stream_closed = [this](hbone::StreamId id, const absl::Status& status) {
    if (HboneStream* stream = FindStream(id)) stream->OnSessionClosed(status);
  };
  callbacks.on_goaway = [this](hbone::StreamId, const absl::Status&) { draining_ = true; };
  return callbacks;
}

bool HboneTunnel::AcceptsNewStreams() const {
  return role_ == Role::kClient && !closed_ && !draining_ && session_->status().ok() &&
         streams_.size() < options_.max_streams;
}

const std::optional<SpiffeId>& HboneTunnel::peer_identity() const {
  return tls_->engine().peer_identity();
}

std::shared_ptr<HboneStream> HboneTunnel::AddStream(hbone::StreamId id) {
  auto stream =
      std::make_shared<HboneStream>(weak_from_this(), id, options_.app_read_budget, tls_->loop());
  streams_[id] = stream;
  ++streams_opened_;
  return stream;
}

absl::StatusOr<std::shared_ptr<HboneStream>> HboneTunnel::OpenStream(const std::string& authority) {
  if (!AcceptsNewStreams()) return absl::UnavailableError("tunnel takes no new streams");
  absl::StatusOr<hbone::StreamId> id = client_session_->OpenStream(authority);
  if (!id.ok()) return id.status();
  std::shared_ptr<HboneStream> stream = AddStream(*id);
  Flush();
  return stream;
}

absl::StatusOr<std::shared_ptr<HboneStream>> HboneTunnel::AcceptStream(hbone::StreamId id) {
  if (closed_) return absl::UnavailableError("tunnel closed");
  if (absl::Status status = server_session_->Accept(id); !status.ok()) {
    Flush();
    return status;
  }
  std::shared_ptr<HboneStream> stream = AddStream(id);
  Flush();
  return stream;
}

absl::Status HboneTunnel::RefuseStream(hbone::StreamId stream, int http_status,
                                       absl::string_view reason) {
  if (closed_) return absl::UnavailableError("tunnel closed");
  absl::Status status = server_session_->Refuse(stream, http_status, reason);
  Flush();
  return status;
}

std::size_t HboneTunnel::buffered_bytes() const {
  std::size_t total = session_->buffered_receive_bytes() + (plain_out_.size() - plain_out_offset_) +
                      tls_->buffered_bytes();
  for (const auto& [id, stream] : streams_) total += stream->queued_bytes();
  return total;
}

HboneStream* HboneTunnel::FindStream(hbone::StreamId id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void HboneTunnel::Forget(hbone::StreamId id) {
  if (streams_.erase(id) == 0) return;
  if (closed_) return;
  if (streams_.empty()) {
    last_stream_end_ = absl::Now();
    if (peer_gone_ || (draining_ && session_->Finished())) {
      Close(absl::OkStatus());
      return;
    }
  }
  Flush();
}

void HboneTunnel::OnPlaintext(io::IoBuffer buffer) {
  if (closed_) return;
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  if (absl::Status status = session_->Receive(buffer.data()); !status.ok()) {
    Flush();  // the GOAWAY that explains it
    Close(status);
    return;
  }
  FlushSoon();
}

void HboneTunnel::OnWireEof() {
  if (closed_) return;
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  // Streams the peer already finished only wait for their last bytes to reach the
  // application; the others cannot complete any more.
  std::vector<std::shared_ptr<HboneStream>> cut;
  for (const auto& [id, stream] : streams_) {
    if (!stream->session_closed_) cut.push_back(stream);
  }
  for (const std::shared_ptr<HboneStream>& stream : cut) {
    stream->Close(absl::UnavailableError("peer closed the tunnel with the stream open"));
  }
  peer_gone_ = true;
  draining_ = true;
  if (streams_.empty() && !closed_) Close(absl::OkStatus());
}

void HboneTunnel::FlushSoon() {
  if (closed_ || flush_scheduled_) return;
  flush_scheduled_ = true;
  tls_->loop().Defer([weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->flush_scheduled_ = false;
      self->Flush();
    }
  });
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
    if (!tls_->over_high_water() && plain_out_.size() - plain_out_offset_ < kCollectBytes) {
      absl::StatusOr<std::size_t> collected = session_->CollectOutput(plain_out_, kCollectBytes);
      if (!collected.ok()) {
        // The final GOAWAY was appended: try to get it out, then stop.
        tls_->Write(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_)).IgnoreError();
        flushing_ = false;
        Close(collected.status());
        return;
      }
      if (*collected > 0) progress = true;
    }
    if (plain_out_offset_ < plain_out_.size()) {
      absl::StatusOr<std::size_t> written =
          tls_->Write(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_));
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
    if (flush_again_) progress = true;
  }
  flushing_ = false;
}

void HboneTunnel::FlushAllForClose() {
  // Everything the session still has (last DATA, END_STREAM, GOAWAY) goes out before
  // close_notify, whatever the socket's high-water mark: it is bounded by the windows.
  for (;;) {
    absl::StatusOr<std::size_t> collected = session_->CollectOutput(plain_out_, kCollectBytes);
    if (!collected.ok() || *collected == 0) break;
  }
  if (plain_out_offset_ < plain_out_.size()) {
    tls_->Send(io::IoBuffer::Copy(absl::MakeConstSpan(plain_out_).subspan(plain_out_offset_)));
  }
  plain_out_.clear();
  plain_out_offset_ = 0;
}

void HboneTunnel::ArmIdleTimer(absl::Duration delay) {
  std::weak_ptr<HboneTunnel> weak = weak_from_this();
  idle_timer_ = tls_->loop().Timer(delay, [weak](io::Completion& completion) {
    auto self = weak.lock();
    if (self == nullptr || self->closed_ || completion.result == -ECANCELED) return;
    self->idle_timer_ = 0;
    const absl::Duration quiet = absl::Now() - self->last_stream_end_;
    if (self->streams_.empty() && quiet >= self->options_.idle_timeout) {
      self->Drain("idle");
      if (self->streams_.empty()) self->Close(absl::OkStatus());
      return;
    }
    // Look again when the last stream's end is idle_timeout old, not a whole period later.
    self->ArmIdleTimer(self->streams_.empty() ? self->options_.idle_timeout - quiet
                                              : self->options_.idle_timeout);
  });
}

void HboneTunnel::Drain(absl::string_view reason) {
  if (closed_ || draining_) return;
  draining_ = true;
  session_->Drain(reason).IgnoreError();
  Flush();
  if (streams_.empty() && session_->Finished()) Close(absl::OkStatus());
}

void HboneTunnel::Close(const absl::Status& reason) {
  if (closed_) return;
  closed_ = true;
  std::shared_ptr<HboneTunnel> keep = shared_from_this();
  // The session still resets the open streams; their RST_STREAMs go out with the rest.
  std::vector<std::shared_ptr<HboneStream>> open;
  for (const auto& [id, stream] : streams_) open.push_back(stream);
  for (const std::shared_ptr<HboneStream>& stream : open) {
    stream->Close(reason.ok() ? absl::UnavailableError("tunnel closed") : reason);
  }
  streams_.clear();
  if (idle_timer_ != 0) {
    tls_->loop().Cancel(idle_timer_);
    idle_timer_ = 0;
  }
  if (!tls_->closed()) {
    if (reason.ok()) {
      FlushAllForClose();
      tls_->ShutdownWrite();
    } else {
      tls_->Close(reason);
    }
  }
  if (on_closed_) std::exchange(on_closed_, nullptr)(reason);
}

}  // namespace nodeward::proxy
