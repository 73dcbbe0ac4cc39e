// Over 600 lines on purpose: nghttp2's callbacks, the per-stream buffers they fill and the
// client/server halves of CONNECT all reach into one Session's state; nghttp2's C callback
// style makes a split cost indirection without making either half readable alone.
#include "agent/hbone/session.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace nodeward::hbone {

struct Session::Stream {
  explicit Stream(StreamId id) : id(id) {}
  StreamId id;

  // Received and not yet read; `receive_offset` marks what was read.
  std::string receive_buffer;
  std::size_t receive_offset = 0;
  bool receive_eof = false;
  bool readable_queued = false;

  // Written and not yet framed.
  std::string send_buffer;
  std::size_t send_offset = 0;
  bool send_eof_requested = false;
  bool data_deferred = false;
  bool writable_wanted = false;

  bool established = false;  // 2xx sent (server) or received (client)
  bool responded = false;    // server: the CONNECT was answered
  bool closed = false;       // nghttp2 closed the stream
  bool refused = false;      // server: answered with an error status

  // Server: the request as received.
  std::string method;
  std::string authority;
  bool has_protocol = false;
  std::vector<Header> headers;
  // Client: the response as received.
  int http_status = 0;
  std::string reason;

  std::size_t pending_send() const { return send_buffer.size() - send_offset; }
  std::size_t pending_receive() const { return receive_buffer.size() - receive_offset; }
};

namespace {

nghttp2_nv MakeNv(absl::string_view name, absl::string_view value) {
  nghttp2_nv nv;
  nv.name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data()));
  nv.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
  nv.namelen = name.size();
  nv.valuelen = value.size();
  nv.flags = NGHTTP2_NV_FLAG_NONE;
  return nv;
}

std::string SanitizeHeaderValue(absl::string_view value) {
  std::string clean;
  clean.reserve(std::min<std::size_t>(value.size(), 512));
  for (char c : value.substr(0, 512)) {
    clean.push_back(absl::ascii_isprint(static_cast<unsigned char>(c)) ? c : ' ');
  }
  return clean;
}

bool ValidHeaderName(absl::string_view name) {
  if (name.empty() || name.front() == ':') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(static_cast<unsigned char>(c)) ||
           absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

absl::Status StreamClosedStatus(std::uint32_t error_code) {
  if (error_code == NGHTTP2_NO_ERROR) return absl::OkStatus();
  const std::string text =
      absl::StrCat("stream reset: ", nghttp2_http2_strerror(error_code), " (", error_code, ")");
  if (error_code == NGHTTP2_REFUSED_STREAM) return absl::UnavailableError(text);
  if (error_code == NGHTTP2_CANCEL) return absl::CancelledError(text);
  return absl::AbortedError(text);
}

}  // namespace

absl::Status StatusFromHttp(int http_status, absl::string_view reason) {
  const std::string text =
      absl::StrCat("CONNECT refused with HTTP ", http_status, reason.empty() ? "" : ": ", reason);
  switch (http_status) {
    case 400:
      return absl::InvalidArgumentError(text);
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 429:
      return absl::ResourceExhaustedError(text);
    case 502:
    case 503:
      return absl::UnavailableError(text);
    case 504:
      return absl::DeadlineExceededError(text);
    default:
      return absl::UnknownError(text);
  }
}

absl::StatusOr<std::pair<std::string, std::uint16_t>> ParseAuthority(absl::string_view authority) {
  absl::string_view host;
  absl::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == absl::string_view::npos || close + 1 >= authority.size() ||
        authority[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad authority \"", authority, "\""));
    }
    host = authority.substr(1, close - 1);
    port_text = authority.substr(close + 2);
  } else {
    const auto colon = authority.rfind(':');
    if (colon == absl::string_view::npos || authority.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("authority \"", authority, "\" is not host:port"));
    }
    host = authority.substr(0, colon);
    port_text = authority.substr(colon + 1);
  }
  std::uint32_t port = 0;
  if (host.empty() || !absl::SimpleAtoi(port_text, &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad host or port in \"", authority, "\""));
  }
  return std::make_pair(std::string(host), static_cast<std::uint16_t>(port));
}

// Whether to drop the consumed front of a stream buffer. Only once it is at least as large as
// what remains: compacting a 4 MiB buffer every 64 KiB consumed moved each byte dozens of times,
// this way the bytes moved stay below the bytes consumed.
namespace {
bool ShouldCompact(std::size_t consumed, std::size_t size) {
  return consumed >= (64u << 10) && consumed >= size - consumed;
}
}  // namespace

// The nghttp2 callbacks, with access to Session internals.
struct Nghttp2Callbacks {
  static Session& Self(void* user_data) { return *static_cast<Session*>(user_data); }

  static ssize_t ReadData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
    Session& self = Self(user_data);
    Session::Stream* stream = self.Find(stream_id);
    if (stream == nullptr) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    const std::size_t available = stream->pending_send();
    if (!stream->established || (available == 0 && !stream->send_eof_requested)) {
      stream->data_deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    const std::size_t n = std::min(available, length);
    // SendData writes the frame straight from send_buffer into the output being collected:
    // one copy of the payload instead of two (into nghttp2's frame buffer, then out of it).
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == available && stream->send_eof_requested) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int SendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd, size_t length,
                      nghttp2_data_source*, void* user_data) {
    Session& self = Self(user_data);
    Session::Stream* stream = self.Find(frame->hd.stream_id);
    std::vector<std::uint8_t>* out = self.collect_target_;
    if (stream == nullptr || out == nullptr || stream->pending_send() < length) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    constexpr std::size_t kFrameHeaderBytes = 9;
    const std::size_t padding = frame->data.padlen;  // counts the Pad Length byte itself
    out->insert(out->end(), framehd, framehd + kFrameHeaderBytes);
    if (padding > 0) out->push_back(static_cast<std::uint8_t>(padding - 1));
    const auto* data = reinterpret_cast<const std::uint8_t*>(stream->send_buffer.data());
    out->insert(out->end(), data + stream->send_offset, data + stream->send_offset + length);
    if (padding > 1) out->insert(out->end(), padding - 1, 0);
    self.collected_in_callbacks_ += kFrameHeaderBytes + length + padding;

    stream->send_offset += length;
    if (stream->send_offset == stream->send_buffer.size()) {
      stream->send_buffer.clear();
      stream->send_offset = 0;
    } else if (ShouldCompact(stream->send_offset, stream->send_buffer.size())) {
      stream->send_buffer.erase(0, stream->send_offset);
      stream->send_offset = 0;
    }
    if (stream->writable_wanted && stream->pending_send() <= self.options_.stream_send_buffer / 2) {
      stream->writable_wanted = false;
      self.events_.push_back({Session::EventType::kWritable, frame->hd.stream_id, {}});
    }
    return 0;
  }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    Session& self = Self(user_data);
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      self.Track(frame->hd.stream_id);
    }
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data) {
    Session& self = Self(user_data);
    Session::Stream* stream = self.Find(frame->hd.stream_id);
    if (stream == nullptr || frame->hd.type != NGHTTP2_HEADERS) return 0;
    const absl::string_view key(reinterpret_cast<const char*>(name), namelen);
    const absl::string_view val(reinterpret_cast<const char*>(value), valuelen);
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      if (key == ":method") {
        stream->method = std::string(val);
      } else if (key == ":authority") {
        stream->authority = std::string(val);
      } else if (key == ":protocol") {
        stream->has_protocol = true;
      } else if (!key.empty() && key.front() != ':' && stream->headers.size() < 64) {
        stream->headers.emplace_back(std::string(key), std::string(val));
      }
    } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
      if (key == ":status") {
        int code = 0;
        if (absl::SimpleAtoi(val, &code)) stream->http_status = code;
      } else if (key == kReasonHeader) {
        stream->reason = SanitizeHeaderValue(val);
      }
    }
    return 0;
  }

  static void MarkEof(Session& self, Session::Stream& stream) {
    if (stream.receive_eof) return;
    stream.receive_eof = true;
    if (!stream.readable_queued) {
      stream.readable_queued = true;
      self.events_.push_back({Session::EventType::kReadable, stream.id, {}});
    }
  }

  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    Session& self = Self(user_data);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      self.goaway_received_ = true;
      absl::Status status;
      if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        status = absl::UnavailableError(
            absl::StrCat("peer sent GOAWAY: ", nghttp2_http2_strerror(frame->goaway.error_code)));
      }
      self.events_.push_back(
          {Session::EventType::kGoaway, frame->goaway.last_stream_id, std::move(status)});
      return 0;
    }
    Session::Stream* stream = self.Find(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        self.events_.push_back({Session::EventType::kConnect, stream->id, {}});
      } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        absl::Status status;
        if (stream->http_status >= 200 && stream->http_status < 300) {
          stream->established = true;
          if (stream->data_deferred) {
            stream->data_deferred = false;
            nghttp2_session_resume_data(session, stream->id);
          }
        } else {
          status = StatusFromHttp(stream->http_status, stream->reason);
        }
        self.events_.push_back({Session::EventType::kResponse, stream->id, std::move(status)});
      }
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      MarkEof(self, *stream);
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user_data) {
    Session& self = Self(user_data);
    Session::Stream* stream = self.Find(stream_id);
    if (stream == nullptr || stream->closed || stream->receive_eof) {
      // Nobody will read it; give the connection window back right away.
      nghttp2_session_consume_connection(session, len);
      return 0;
    }
    stream->receive_buffer.append(reinterpret_cast<const char*>(data), len);
    self.buffered_receive_bytes_ += len;
    if (!stream->readable_queued) {
      stream->readable_queued = true;
      self.events_.push_back({Session::EventType::kReadable, stream_id, {}});
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    Session& self = Self(user_data);
    Session::Stream* stream = self.Find(stream_id);
    if (stream == nullptr) return 0;
    stream->closed = true;
    self.events_.push_back(
        {Session::EventType::kClosed, stream_id, StreamClosedStatus(error_code)});
    return 0;
  }

  static int OnError(nghttp2_session*, int lib_error_code, const char* message, size_t length,
                     void* user_data) {
    Session& self = Self(user_data);
    self.last_error_.assign(message, length);
    // These codes make nghttp2 tear the whole connection down (it queues a GOAWAY).
    switch (lib_error_code) {
      case NGHTTP2_ERR_PROTO:
      case NGHTTP2_ERR_FRAME_SIZE_ERROR:
      case NGHTTP2_ERR_FLOW_CONTROL:
      case NGHTTP2_ERR_SETTINGS_EXPECTED:
      case NGHTTP2_ERR_HEADER_COMP:
      case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
        self.connection_failed_ = true;
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    Session& self = Self(user_data);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
        self.status_.ok()) {
      self.status_ = absl::DataLossError(absl::StrCat(
          "HTTP/2 connection error (", nghttp2_http2_strerror(frame->goaway.error_code), ")",
          self.last_error_.empty() ? "" : ": ", self.last_error_));
    }
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      Session::Stream* stream = self.Find(frame->hd.stream_id);
      // A refusal went out; now tell the client to stop sending on that stream. Submitted only
      // after the response so the refusal cannot be overtaken by the reset.
      if (stream != nullptr && stream->refused && !stream->closed) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream->id, NGHTTP2_NO_ERROR);
      }
    }
    return 0;
  }
};

Session::Session(const SessionOptions& options, Callbacks callbacks)
    : options_(options), callbacks_(std::move(callbacks)) {}

Session::~Session() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

absl::Status Session::Init(bool server) {
  nghttp2_session_callbacks* callbacks = nullptr;
  if (nghttp2_session_callbacks_new(&callbacks) != 0) {
    return absl::ResourceExhaustedError("nghttp2_session_callbacks_new");
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks,
                                                          &Nghttp2Callbacks::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, &Nghttp2Callbacks::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &Nghttp2Callbacks::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks,
                                                            &Nghttp2Callbacks::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         &Nghttp2Callbacks::OnStreamClose);
  nghttp2_session_callbacks_set_error_callback2(callbacks, &Nghttp2Callbacks::OnError);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &Nghttp2Callbacks::OnFrameSend);
  nghttp2_session_callbacks_set_send_data_callback(callbacks, &Nghttp2Callbacks::SendData);

  nghttp2_option* option = nullptr;
  if (nghttp2_option_new(&option) != 0) {
    nghttp2_session_callbacks_del(callbacks);
    return absl::ResourceExhaustedError("nghttp2_option_new");
  }
  // Windows are credited only as the application reads (see Read()), which is what bounds
  // the memory a slow consumer can make us hold.
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_max_settings(option, 64);
  const int rc = server ? nghttp2_session_server_new2(&session_, callbacks, this, option)
                        : nghttp2_session_client_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (rc != 0) {
    session_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("nghttp2 session: ", nghttp2_strerror(rc)));
  }

  std::vector<nghttp2_settings_entry> settings = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options_.stream_window},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  if (server) settings.pop_back();  // ENABLE_PUSH is a client setting
  int settings_rc =
      nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  if (settings_rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP/2 settings: ", nghttp2_strerror(settings_rc)));
  }
  if (options_.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
    int window_rc = nghttp2_session_set_local_window_size(
        session_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(options_.connection_window));
    if (window_rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP/2 connection window: ", nghttp2_strerror(window_rc)));
    }
  }
  return absl::OkStatus();
}

Session::Stream* Session::Find(StreamId id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

const Session::Stream* Session::Find(StreamId id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

Session::Stream& Session::Track(StreamId id) {
  auto& slot = streams_[id];
  if (slot == nullptr) slot = std::make_unique<Stream>(id);
  return *slot;
}

void Session::Forget(StreamId id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  const std::size_t unread = it->second->pending_receive();
  if (unread > 0) {
    buffered_receive_bytes_ -= unread;
    nghttp2_session_consume_connection(session_, unread);
  }
  streams_.erase(it);
}

absl::Status Session::Receive(absl::Span<const std::uint8_t> bytes) {
  if (!status_.ok()) return status_;
  const ssize_t rc = nghttp2_session_mem_recv(session_, bytes.data(), bytes.size());
  if (rc < 0) {
    status_ = absl::DataLossError(absl::StrCat("HTTP/2: ", nghttp2_strerror(static_cast<int>(rc)),
                                               last_error_.empty() ? "" : ": ", last_error_));
  } else if (connection_failed_) {
    // nghttp2 gave up on the connection and queued a GOAWAY with the error.
    status_ = absl::DataLossError(absl::StrCat("HTTP/2 connection error: ", last_error_));
  }
  Dispatch();
  return status_;
}

absl::StatusOr<std::size_t> Session::CollectOutput(std::vector<std::uint8_t>& out,
                                                   std::size_t max_bytes) {
  std::size_t collected = 0;
  if (session_ == nullptr) return absl::FailedPreconditionError("no session");
  // DATA frames are appended by SendData during mem_send, in order with what it returns.
  collect_target_ = &out;
  while (collected < max_bytes) {
    collected_in_callbacks_ = 0;
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    collected += collected_in_callbacks_;
    if (n < 0) {
      collect_target_ = nullptr;
      status_ =
          absl::InternalError(absl::StrCat("HTTP/2 send: ", nghttp2_strerror(static_cast<int>(n))));
      return status_;
    }
    if (n == 0) break;
    out.insert(out.end(), data, data + n);
    collected += static_cast<std::size_t>(n);
  }
  collect_target_ = nullptr;
  Dispatch();
  // After a connection error `out` still gets the GOAWAY; the error tells the caller to close
  // once it is sent.
  if (!status_.ok()) return status_;
  return collected;
}

bool Session::WantsOutput() const { return nghttp2_session_want_write(session_) != 0; }

absl::StatusOr<std::size_t> Session::Write(StreamId id, absl::Span<const std::uint8_t> bytes) {
  Stream* stream = Find(id);
  if (stream == nullptr || stream->closed) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " is not open"));
  }
  if (stream->send_eof_requested) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " was closed for writing"));
  }
  const std::size_t room = options_.stream_send_buffer > stream->pending_send()
                               ? options_.stream_send_buffer - stream->pending_send()
                               : 0;
  const std::size_t taken = std::min(room, bytes.size());
  stream->send_buffer.append(reinterpret_cast<const char*>(bytes.data()), taken);
  if (taken < bytes.size()) stream->writable_wanted = true;
  if (taken > 0 && stream->data_deferred && stream->established) {
    stream->data_deferred = false;
    nghttp2_session_resume_data(session_, id);
  }
  return taken;
}

absl::StatusOr<std::size_t> Session::Read(StreamId id, absl::Span<std::uint8_t> out) {
  Stream* stream = Find(id);
  if (stream == nullptr) return absl::NotFoundError(absl::StrCat("no stream ", id));
  stream->readable_queued = false;
  const std::size_t n = std::min(out.size(), stream->pending_receive());
  std::memcpy(out.data(), stream->receive_buffer.data() + stream->receive_offset, n);
  stream->receive_offset += n;
  if (stream->receive_offset == stream->receive_buffer.size()) {
    stream->receive_buffer.clear();
    stream->receive_offset = 0;
  } else if (ShouldCompact(stream->receive_offset, stream->receive_buffer.size())) {
    stream->receive_buffer.erase(0, stream->receive_offset);
    stream->receive_offset = 0;
  }
  buffered_receive_bytes_ -= n;
  // Crediting the window only now is the backpressure toward the peer.
  if (n > 0) {
    if (stream->closed) {
      nghttp2_session_consume_connection(session_, n);
    } else {
      nghttp2_session_consume(session_, id, n);
    }
  }
  if (stream->closed && stream->pending_receive() == 0) Forget(id);
  return n;
}

bool Session::ReadEof(StreamId id) const {
  const Stream* stream = Find(id);
  // A forgotten stream has been read to its end.
  if (stream == nullptr) return true;
  return stream->pending_receive() == 0 && (stream->receive_eof || stream->closed);
}

std::size_t Session::Readable(StreamId id) const {
  const Stream* stream = Find(id);
  return stream == nullptr ? 0 : stream->pending_receive();
}

absl::Status Session::CloseWrite(StreamId id) {
  Stream* stream = Find(id);
  if (stream == nullptr || stream->closed) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " is not open"));
  }
  if (stream->send_eof_requested) return absl::OkStatus();
  stream->send_eof_requested = true;
  if (stream->data_deferred && stream->established) {
    stream->data_deferred = false;
    nghttp2_session_resume_data(session_, id);
  }
  return absl::OkStatus();
}

absl::Status Session::Reset(StreamId id, std::uint32_t error_code) {
  Stream* stream = Find(id);
  if (stream == nullptr || stream->closed) return absl::OkStatus();
  const int rc = nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, error_code);
  if (rc != 0) return absl::InternalError(absl::StrCat("RST_STREAM: ", nghttp2_strerror(rc)));
  return absl::OkStatus();
}

absl::Status Session::Drain(absl::string_view reason) {
  if (drain_requested_) return absl::OkStatus();
  drain_requested_ = true;
  const int rc = nghttp2_submit_goaway(
      session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
      NGHTTP2_NO_ERROR, reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
  if (rc != 0) return absl::InternalError(absl::StrCat("GOAWAY: ", nghttp2_strerror(rc)));
  return absl::OkStatus();
}

bool Session::Finished() const {
  return nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0;
}

void Session::Dispatch() {
  if (dispatching_) return;
  dispatching_ = true;
  while (!events_.empty()) {
    std::vector<Event> events = std::move(events_);
    events_.clear();
    for (Event& event : events) {
      switch (event.type) {
        case EventType::kResponse:
          if (callbacks_.on_response) callbacks_.on_response(event.stream, event.status);
          break;
        case EventType::kConnect: {
          Stream* stream = Find(event.stream);
          if (stream == nullptr || stream->closed) break;
          auto* server = static_cast<ServerSession*>(this);
          if (stream->method != "CONNECT" || stream->has_protocol) {
            (void)server->Refuse(event.stream, 405, "only CONNECT is supported");
            break;
          }
          if (absl::StatusOr<std::pair<std::string, std::uint16_t>> target =
                  ParseAuthority(stream->authority);
              !target.ok()) {
            (void)server->Refuse(event.stream, 400, target.status().message());
            break;
          }
          if (!callbacks_.on_connect) {
            (void)server->Refuse(event.stream, 503, "no handler for CONNECT");
            break;
          }
          callbacks_.on_connect(event.stream, stream->authority, stream->headers);
          break;
        }
        case EventType::kReadable:
          if (callbacks_.on_readable) callbacks_.on_readable(event.stream);
          break;
        case EventType::kWritable:
          if (callbacks_.on_writable) callbacks_.on_writable(event.stream);
          break;
        case EventType::kClosed: {
          if (callbacks_.on_stream_closed) callbacks_.on_stream_closed(event.stream, event.status);
          Stream* stream = Find(event.stream);
          if (stream != nullptr && stream->pending_receive() == 0) Forget(event.stream);
          break;
        }
        case EventType::kGoaway:
          if (callbacks_.on_goaway) callbacks_.on_goaway(event.stream, event.status);
          break;
      }
    }
  }
  dispatching_ = false;
}

absl::StatusOr<std::unique_ptr<ClientSession>> ClientSession::Create(const SessionOptions& options,
                                                                     Callbacks callbacks) {
  std::unique_ptr<ClientSession> session(new ClientSession(options, std::move(callbacks)));
  if (absl::Status status = session->Init(/*server=*/false); !status.ok()) return status;
  return session;
}

absl::StatusOr<StreamId> ClientSession::OpenStream(absl::string_view authority,
                                                   const std::vector<Header>& extra_headers) {
  if (!status_.ok()) return status_;
  if (goaway_received_ || drain_requested_ || !nghttp2_session_check_request_allowed(session_)) {
    return absl::UnavailableError("the connection is draining (GOAWAY): open a new one");
  }
  if (absl::StatusOr<std::pair<std::string, std::uint16_t>> target = ParseAuthority(authority);
      !target.ok()) {
    return target.status();
  }
  std::vector<nghttp2_nv> headers = {MakeNv(":method", "CONNECT"), MakeNv(":authority", authority)};
  for (const auto& [name, value] : extra_headers) {
    if (!ValidHeaderName(name)) {
      return absl::InvalidArgumentError(absl::StrCat("bad header name \"", name, "\""));
    }
    headers.push_back(MakeNv(name, value));
  }
  nghttp2_data_provider provider{};
  provider.read_callback = &Nghttp2Callbacks::ReadData;
  const int32_t id =
      nghttp2_submit_request(session_, nullptr, headers.data(), headers.size(), &provider, nullptr);
  if (id < 0) {
    if (id == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED || id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      return absl::UnavailableError(
          absl::StrCat("no new streams on this connection: ", nghttp2_strerror(id)));
    }
    return absl::InternalError(absl::StrCat("CONNECT: ", nghttp2_strerror(id)));
  }
  Track(id);
  return id;
}

absl::StatusOr<std::unique_ptr<ServerSession>> ServerSession::Create(const SessionOptions& options,
                                                                     Callbacks callbacks) {
  std::unique_ptr<ServerSession> session(new ServerSession(options, std::move(callbacks)));
  if (absl::Status status = session->Init(/*server=*/true); !status.ok()) return status;
  return session;
}

absl::Status ServerSession::Accept(StreamId id) {
  Stream* stream = Find(id);
  if (stream == nullptr || stream->closed) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " is not open"));
  }
  if (stream->responded) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " was already answered"));
  }
  nghttp2_nv status = MakeNv(":status", "200");
  nghttp2_data_provider provider{};
  provider.read_callback = &Nghttp2Callbacks::ReadData;
  const int rc = nghttp2_submit_response(session_, id, &status, 1, &provider);
  if (rc != 0) return absl::InternalError(absl::StrCat("CONNECT 200: ", nghttp2_strerror(rc)));
  stream->responded = true;
  stream->established = true;
  return absl::OkStatus();
}

absl::Status ServerSession::Refuse(StreamId id, int http_status, absl::string_view reason) {
  Stream* stream = Find(id);
  if (stream == nullptr || stream->closed) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " is not open"));
  }
  if (stream->responded) {
    return absl::FailedPreconditionError(absl::StrCat("stream ", id, " was already answered"));
  }
  if (http_status < 300 || http_status > 599) {
    return absl::InvalidArgumentError(
        absl::StrCat("refusal needs an error status, got ", http_status));
  }
  const std::string status_text = absl::StrCat(http_status);
  const std::string reason_text = SanitizeHeaderValue(reason);
  std::vector<nghttp2_nv> headers = {MakeNv(":status", status_text)};
  if (!reason_text.empty()) headers.push_back(MakeNv(kReasonHeader, reason_text));
  const int rc = nghttp2_submit_response(session_, id, headers.data(), headers.size(), nullptr);
  if (rc != 0) return absl::InternalError(absl::StrCat("CONNECT refusal: ", nghttp2_strerror(rc)));
  stream->responded = true;
  stream->refused = true;
  return absl::OkStatus();
}

}  // namespace nodeward::hbone
