// Internal to policy/: the blocking connections KubeSource talks to the API server over, plain
// or TLS (the memory-BIO engine driven by hand), whose waits give up when the source stops or
// the server stalls.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "crypto/tls.h"
#include "policy/http_client.h"
#include "policy/kube_source.h"

namespace nodeward::policy::internal {

// "host:port" with IPv6 literals bracketed, for the Host header and messages.
std::string HostHeader(const KubeSourceOptions& options);

// A connected TCP socket whose waits give up when the source stops or the peer stalls.
class Socket {
 public:
  Socket(int fd, const std::atomic<bool>& stopping) : fd_(fd), stopping_(stopping) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Waits for `events`; the idle limit counts from the last progress.
  absl::Status Wait(short events, absl::Duration idle_limit) {
    absl::Time deadline = absl::Now() + idle_limit;
    while (true) {
      if (stopping_.load()) return absl::CancelledError("source stopping");
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(
            absl::StrCat("no progress from the API server in ", absl::FormatDuration(idle_limit)));
      }
      pollfd fd = {fd_, events, 0};
      int slice = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 200));
      int ready = poll(&fd, 1, slice);
      if (ready < 0 && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("poll: ", std::strerror(errno)));
      }
      if (ready > 0) return absl::OkStatus();
    }
  }

  absl::Status SendAll(absl::string_view data, absl::Duration idle_limit) {
    while (!data.empty()) {
      ssize_t sent = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent > 0) {
        data.remove_prefix(static_cast<size_t>(sent));
      } else if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (absl::Status status = Wait(POLLOUT, idle_limit); !status.ok()) return status;
      } else {
        return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
      }
    }
    return absl::OkStatus();
  }

  // 0 at end of stream.
  absl::StatusOr<size_t> Receive(char* buffer, size_t size, absl::Duration idle_limit) {
    while (true) {
      ssize_t received = recv(fd_, buffer, size, 0);
      if (received >= 0) return static_cast<size_t>(received);
      if (errno != EAGAIN && errno != EINTR) {
        return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
      }
      if (absl::Status status = Wait(POLLIN, idle_limit); !status.ok()) return status;
    }
  }

 private:
  int fd_;
  const std::atomic<bool>& stopping_;
};

// Connects to the API server, waiting at most options.io_timeout.
absl::StatusOr<std::unique_ptr<Socket>> Connect(const KubeSourceOptions& options,
                                                const std::atomic<bool>& stopping);

class PlainStream : public http::Stream {
 public:
  PlainStream(std::unique_ptr<Socket> socket, absl::Duration idle_limit)
      : socket_(std::move(socket)), idle_limit_(idle_limit) {}
  absl::Status WriteAll(absl::string_view data) override {
    return socket_->SendAll(data, idle_limit_);
  }
  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    return socket_->Receive(buffer, size, idle_limit_);
  }
  void set_idle_limit(absl::Duration limit) { idle_limit_ = limit; }

 private:
  std::unique_ptr<Socket> socket_;
  absl::Duration idle_limit_;
};

// TLS over the blocking socket, driving the memory-BIO engine by hand.
class TlsStream : public http::Stream {
 public:
  TlsStream(std::unique_ptr<Socket> socket, std::unique_ptr<crypto::TlsEngine> engine,
            absl::Duration idle_limit)
      : socket_(std::move(socket)), engine_(std::move(engine)), idle_limit_(idle_limit) {}

  absl::Status Handshake() {
    while (engine_->state() == crypto::TlsEngine::State::kHandshaking) {
      if (absl::Status status = engine_->Advance(); !status.ok()) {
        return absl::UnavailableError(absl::StrCat("TLS handshake: ", status.message()));
      }
      if (absl::Status status = Flush(); !status.ok()) return status;
      if (engine_->state() != crypto::TlsEngine::State::kHandshaking) break;
      if (absl::StatusOr<bool> more = Pull(); !more.ok()) {
        return absl::Status(more.status().code(),
                            absl::StrCat("TLS handshake: ", more.status().message()));
      } else if (!*more) {
        return absl::UnavailableError("connection closed during the TLS handshake");
      }
    }
    if (engine_->state() != crypto::TlsEngine::State::kEstablished) {
      return absl::UnavailableError(absl::StrCat("TLS handshake: ", engine_->error().message()));
    }
    return absl::OkStatus();
  }

  absl::Status WriteAll(absl::string_view data) override {
    while (!data.empty()) {
      absl::StatusOr<size_t> written = engine_->WritePlaintext(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
      if (!written.ok()) return written.status();
      data.remove_prefix(*written);
      if (absl::Status status = Flush(); !status.ok()) return status;
      if (*written == 0) return absl::UnavailableError("TLS connection not writable");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    while (true) {
      absl::StatusOr<size_t> n =
          engine_->ReadPlaintext(absl::MakeSpan(reinterpret_cast<uint8_t*>(buffer), size));
      if (!n.ok()) return n.status();
      if (*n > 0) return *n;
      if (engine_->PeerClosed() || engine_->state() == crypto::TlsEngine::State::kClosed) {
        return 0;
      }
      if (engine_->state() == crypto::TlsEngine::State::kFailed) return engine_->error();
      if (absl::Status status = Flush(); !status.ok()) return status;
      absl::StatusOr<bool> more = Pull();
      if (!more.ok()) return more.status();
      if (!*more) {
        // The server closed TCP without close_notify: treat what was framed as the end.
        return 0;
      }
      if (absl::Status status = engine_->Advance(); !status.ok()) return status;
    }
  }

  void set_idle_limit(absl::Duration limit) { idle_limit_ = limit; }

 private:
  absl::Status Flush() {
    uint8_t buffer[16 * 1024];
    while (engine_->PendingWire() > 0) {
      size_t n = engine_->ReadWire(absl::MakeSpan(buffer));
      if (absl::Status status = socket_->SendAll(
              absl::string_view(reinterpret_cast<const char*>(buffer), n), idle_limit_);
          !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  // Feeds received ciphertext to the engine; false at end of stream.
  absl::StatusOr<bool> Pull() {
    char buffer[16 * 1024];
    absl::StatusOr<size_t> n = socket_->Receive(buffer, sizeof(buffer), idle_limit_);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      engine_->FeedWireEof();
      return false;
    }
    absl::Span<const uint8_t> data(reinterpret_cast<const uint8_t*>(buffer), *n);
    while (!data.empty()) {
      size_t consumed = engine_->FeedWire(data);
      data.remove_prefix(consumed);
      if (absl::Status status = engine_->Advance(); !status.ok()) return status;
      if (consumed == 0 && !data.empty()) {
        return absl::InternalError("TLS engine accepts no more input");
      }
    }
    return true;
  }

  std::unique_ptr<Socket> socket_;
  std::unique_ptr<crypto::TlsEngine> engine_;
  absl::Duration idle_limit_;
};

}  // namespace nodeward::policy::internal
