#include "agent/hbone/session.h"

#include <nghttp2/nghttp2.h>

#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::hbone {
namespace {

using ::testing::HasSubstr;

std::vector<std::uint8_t> RandomBytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> bytes(size);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(generator());
  return bytes;
}

// What one side of a stream has sent and received, driven by session callbacks.
struct StreamEnd {
  std::vector<std::uint8_t> to_send;
  std::size_t sent = 0;
  bool close_after_send = true;
  bool write_closed = false;
  std::vector<std::uint8_t> received;
  bool eof = false;
  bool read_enabled = true;
  std::optional<absl::Status> response;
  std::optional<absl::Status> closed;
};

// One application per session: writes what its streams must send, reads what arrives.
class App {
 public:
  Session* session = nullptr;
  std::map<StreamId, StreamEnd> streams;
  std::vector<std::uint8_t> server_payload;  // what the server sends on accepted streams
  std::function<void(StreamId, const std::string&)> decide;
  std::vector<std::string> authorities;
  std::optional<StreamId> goaway_last_stream;

  Session::Callbacks Callbacks() {
    Session::Callbacks callbacks;
    callbacks.on_response = [this](StreamId id, const absl::Status& status) {
      streams[id].response = status;
      Flush(id);
    };
    callbacks.on_connect = [this](StreamId id, const std::string& authority,
                                  const std::vector<Header>&) {
      authorities.push_back(authority);
      if (decide) {
        decide(id, authority);
        return;
      }
      ASSERT_TRUE(static_cast<ServerSession*>(session)->Accept(id).ok());
      streams[id].to_send = server_payload;
      Flush(id);
    };
    callbacks.on_readable = [this](StreamId id) { Drain(id); };
    callbacks.on_writable = [this](StreamId id) { Flush(id); };
    callbacks.on_stream_closed = [this](StreamId id, const absl::Status& status) {
      streams[id].closed = status;
      Drain(id);
    };
    callbacks.on_goaway = [this](StreamId last, const absl::Status&) { goaway_last_stream = last; };
    return callbacks;
  }

  void Flush(StreamId id) {
    StreamEnd& end = streams[id];
    if (end.write_closed || end.closed.has_value()) return;
    while (end.sent < end.to_send.size()) {
      auto written = session->Write(
          id, absl::MakeConstSpan(end.to_send).subspan(end.sent, end.to_send.size() - end.sent));
      ASSERT_TRUE(written.ok()) << written.status();
      if (*written == 0) return;
      end.sent += *written;
    }
    if (end.close_after_send) {
      ASSERT_TRUE(session->CloseWrite(id).ok());
      end.write_closed = true;
    }
  }

  void Drain(StreamId id) {
    StreamEnd& end = streams[id];
    if (!end.read_enabled) return;
    std::uint8_t buffer[32768];
    for (;;) {
      auto read = session->Read(id, absl::MakeSpan(buffer));
      if (!read.ok() || *read == 0) break;
      end.received.insert(end.received.end(), buffer, buffer + *read);
    }
    if (session->ReadEof(id)) end.eof = true;
  }
};

// Moves bytes between two sessions until neither has anything to say.
absl::Status Pump(Session& client, Session& server, int max_rounds = 100000) {
  std::vector<std::uint8_t> buffer;
  for (int round = 0; round < max_rounds; ++round) {
    buffer.clear();
    auto from_client = client.CollectOutput(buffer);
    if (!from_client.ok()) return from_client.status();
    if (!buffer.empty()) {
      if (absl::Status status = server.Receive(buffer); !status.ok()) return status;
    }
    buffer.clear();
    auto from_server = server.CollectOutput(buffer);
    if (!from_server.ok()) return from_server.status();
    if (!buffer.empty()) {
      if (absl::Status status = client.Receive(buffer); !status.ok()) return status;
    }
    if (*from_client == 0 && *from_server == 0) return absl::OkStatus();
  }
  return absl::DeadlineExceededError("sessions kept talking");
}

class HboneTest : public ::testing::Test {
 protected:
  void Start(SessionOptions client_options = {}, SessionOptions server_options = {}) {
    auto client = ClientSession::Create(client_options, client_app_.Callbacks());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    client_app_.session = client_.get();
    auto server = ServerSession::Create(server_options, server_app_.Callbacks());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_app_.session = server_.get();
  }

  StreamId Open(absl::string_view authority, std::vector<std::uint8_t> payload) {
    auto id = client_->OpenStream(authority, {{"baggage", "k8s.namespace.name=default"}});
    EXPECT_TRUE(id.ok()) << id.status();
    client_app_.streams[*id].to_send = std::move(payload);
    client_app_.Flush(*id);
    return *id;
  }

  App client_app_;
  App server_app_;
  std::unique_ptr<ClientSession> client_;
  std::unique_ptr<ServerSession> server_;
};

TEST_F(HboneTest, ManyStreamsCarryDataBothWaysIntact) {
  Start();
  server_app_.server_payload = RandomBytes(300 << 10, 99);
  constexpr int kStreams = 40;
  std::map<StreamId, std::vector<std::uint8_t>> sent;
  for (int i = 0; i < kStreams; ++i) {
    auto payload = RandomBytes((200 << 10) + i * 1000, i);
    const StreamId id = Open(absl::StrCat("10.0.0.", i + 1, ":8080"), payload);
    sent[id] = std::move(payload);
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  ASSERT_EQ(server_app_.authorities.size(), static_cast<std::size_t>(kStreams));
  EXPECT_EQ(server_app_.authorities[0], "10.0.0.1:8080");
  for (const auto& [id, payload] : sent) {
    const StreamEnd& client_end = client_app_.streams[id];
    const StreamEnd& server_end = server_app_.streams[id];
    ASSERT_TRUE(client_end.response.has_value());
    EXPECT_TRUE(client_end.response->ok()) << *client_end.response;
    EXPECT_TRUE(server_end.eof);
    EXPECT_TRUE(client_end.eof);
    EXPECT_TRUE(server_end.received == payload) << "stream " << id;
    EXPECT_TRUE(client_end.received == server_app_.server_payload) << "stream " << id;
    ASSERT_TRUE(client_end.closed.has_value());
    EXPECT_TRUE(client_end.closed->ok()) << *client_end.closed;
  }
  EXPECT_EQ(client_->open_streams(), 0u);
  EXPECT_EQ(server_->open_streams(), 0u);
}

TEST_F(HboneTest, HalfCloseLetsTheServerAnswerAfterTheClientFinished) {
  Start();
  server_app_.decide = [this](StreamId id, const std::string&) {
    ASSERT_TRUE(server_->Accept(id).ok());
    server_app_.streams[id].close_after_send = false;
  };
  const StreamId id = Open("10.0.0.2:80", {'G', 'E', 'T'});
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  StreamEnd& server_end = server_app_.streams[id];
  EXPECT_TRUE(server_end.eof);
  EXPECT_EQ(std::string(server_end.received.begin(), server_end.received.end()), "GET");
  // The client's side is closed, but the stream is still open for the server's answer.
  EXPECT_FALSE(client_app_.streams[id].closed.has_value());
  server_end.to_send = {'2', '0', '0'};
  server_end.close_after_send = true;
  server_app_.Flush(id);
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  const StreamEnd& client_end = client_app_.streams[id];
  EXPECT_EQ(std::string(client_end.received.begin(), client_end.received.end()), "200");
  EXPECT_TRUE(client_end.eof);
  ASSERT_TRUE(client_end.closed.has_value());
  EXPECT_TRUE(client_end.closed->ok());
}

TEST_F(HboneTest, RefusedStreamReportsStatusAndReason) {
  Start();
  server_app_.decide = [this](StreamId id, const std::string& authority) {
    ASSERT_TRUE(server_->Refuse(id, 403, "denied by AuthorizationPolicy ns/deny-all").ok());
  };
  const StreamId id = Open("10.0.0.3:443", RandomBytes(1000, 1));
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  const StreamEnd& client_end = client_app_.streams[id];
  ASSERT_TRUE(client_end.response.has_value());
  EXPECT_EQ(client_end.response->code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(client_end.response->message(), HasSubstr("403"));
  EXPECT_THAT(client_end.response->message(), HasSubstr("denied by AuthorizationPolicy"));
  EXPECT_TRUE(client_end.closed.has_value());
  // Nothing the client wrote reached the server application.
  EXPECT_TRUE(server_app_.streams[id].received.empty());
  EXPECT_EQ(client_->open_streams(), 0u);
}

TEST_F(HboneTest, StatusCodesMapToStatuses) {
  EXPECT_EQ(StatusFromHttp(401, "").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StatusFromHttp(503, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromHttp(418, "x").code(), absl::StatusCode::kUnknown);
}

TEST_F(HboneTest, AuthorityMustBeHostAndPort) {
  Start();
  EXPECT_EQ(client_->OpenStream("10.0.0.1").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->OpenStream("10.0.0.1:0").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->OpenStream("10.0.0.1:70000").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->OpenStream("10.0.0.1:80", {{"Bad Name", "x"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto v6 = ParseAuthority("[fd00::1]:15008");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "fd00::1");
  EXPECT_EQ(v6->second, 15008);
}

TEST_F(HboneTest, ResetIsSeenByThePeer) {
  Start();
  server_app_.decide = [this](StreamId id, const std::string&) {
    ASSERT_TRUE(server_->Accept(id).ok());
    server_app_.streams[id].close_after_send = false;
  };
  StreamId id = *client_->OpenStream("10.0.0.4:9000");
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  ASSERT_TRUE(client_->Reset(id, NGHTTP2_CANCEL).ok());
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  ASSERT_TRUE(server_app_.streams[id].closed.has_value());
  EXPECT_EQ(server_app_.streams[id].closed->code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(server_->open_streams(), 0u);
  EXPECT_FALSE(client_->Write(id, RandomBytes(10, 1)).ok());
}

TEST_F(HboneTest, GoawayDrainsOpenStreamsAndRefusesNewOnes) {
  Start();
  server_app_.decide = [this](StreamId id, const std::string&) {
    ASSERT_TRUE(server_->Accept(id).ok());
    server_app_.streams[id].close_after_send = false;
  };
  std::vector<StreamId> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(*client_->OpenStream("10.0.0.5:80"));
    client_app_.streams[ids.back()].close_after_send = false;
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  ASSERT_TRUE(server_->Drain("agent shutting down").ok());
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  ASSERT_TRUE(client_app_.goaway_last_stream.has_value());
  EXPECT_EQ(*client_app_.goaway_last_stream, ids.back());
  EXPECT_EQ(client_->OpenStream("10.0.0.5:80").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(server_->Finished());

  // Streams opened before the GOAWAY still finish their exchange.
  for (StreamId id : ids) {
    client_app_.streams[id].to_send = RandomBytes(5000, id);
    client_app_.streams[id].close_after_send = true;
    client_app_.Flush(id);
    server_app_.streams[id].to_send = RandomBytes(7000, id + 100);
    server_app_.streams[id].close_after_send = true;
    server_app_.Flush(id);
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  for (StreamId id : ids) {
    EXPECT_TRUE(server_app_.streams[id].received == RandomBytes(5000, id));
    EXPECT_TRUE(client_app_.streams[id].received == RandomBytes(7000, id + 100));
  }
  EXPECT_TRUE(server_->Finished());
}

TEST_F(HboneTest, SlowConsumerBoundsBufferingByTheWindows) {
  SessionOptions options;
  options.stream_window = 1 << 20;
  options.connection_window = 4 << 20;
  options.stream_send_buffer = 128 << 10;
  Start(options, options);
  const std::vector<std::uint8_t> payload = RandomBytes(16 << 20, 5);
  const StreamId id = Open("10.0.0.6:5432", payload);
  server_app_.decide = [this](StreamId id, const std::string&) {
    ASSERT_TRUE(server_->Accept(id).ok());
    server_app_.streams[id].read_enabled = false;  // the application is not reading
  };
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  // The server holds at most one stream window; the client stopped taking writes.
  EXPECT_LE(server_->buffered_receive_bytes(), options.stream_window);
  EXPECT_GE(server_->buffered_receive_bytes(), options.stream_window / 2);
  EXPECT_LT(client_app_.streams[id].sent, payload.size());
  EXPECT_LE(client_app_.streams[id].sent, options.stream_window + options.stream_send_buffer);

  // Now read slowly; everything arrives intact, never over the window.
  server_app_.streams[id].read_enabled = true;
  std::size_t peak = 0;
  for (int round = 0; round < 10000 && !server_app_.streams[id].eof; ++round) {
    server_app_.Drain(id);
    ASSERT_TRUE(Pump(*client_, *server_, 1).ok() || true);
    client_app_.Flush(id);
    peak = std::max(peak, server_->buffered_receive_bytes());
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  server_app_.Drain(id);
  EXPECT_LE(peak, options.stream_window);
  EXPECT_TRUE(server_app_.streams[id].eof);
  EXPECT_TRUE(server_app_.streams[id].received == payload);
}

TEST_F(HboneTest, MaxConcurrentStreamsHoldsBackExtraStreams) {
  SessionOptions server_options;
  server_options.max_concurrent_streams = 2;
  Start({}, server_options);
  server_app_.decide = [this](StreamId id, const std::string&) {
    ASSERT_TRUE(server_->Accept(id).ok());
    server_app_.streams[id].close_after_send = false;
  };
  // Let the SETTINGS reach the client first, as on a real connection.
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  std::vector<StreamId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(*client_->OpenStream("10.0.0.7:80"));
    client_app_.streams[ids.back()].close_after_send = false;
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  EXPECT_EQ(server_app_.authorities.size(), 2u);
  // Finishing the first two lets the rest through.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client_->CloseWrite(ids[i]).ok());
    ASSERT_TRUE(server_->CloseWrite(ids[i]).ok());
  }
  ASSERT_TRUE(Pump(*client_, *server_).ok());
  EXPECT_EQ(server_app_.authorities.size(), 4u);
}

TEST_F(HboneTest, GarbageInputFailsCleanly) {
  Start();
  const std::vector<std::uint8_t> garbage = RandomBytes(4096, 77);
  absl::Status status = server_->Receive(garbage);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  // Later input is refused with the same error rather than processed.
  EXPECT_EQ(server_->Receive(garbage).code(), absl::StatusCode::kDataLoss);

  // A valid preface followed by a malformed frame: a GOAWAY goes out with the error.
  Start();
  std::vector<std::uint8_t> preface;
  ASSERT_TRUE(client_->CollectOutput(preface).ok());
  ASSERT_TRUE(server_->Receive(preface).ok());
  // A DATA frame on stream 0 is a connection error.
  const std::vector<std::uint8_t> bad_frame = {0, 0, 4, 0x0, 0x0, 0, 0, 0, 0, 1, 2, 3, 4};
  // The error surfaces from Receive or, at the latest, from the CollectOutput that serializes
  // the GOAWAY; either way in the same turn.
  const absl::Status received = server_->Receive(bad_frame);
  std::vector<std::uint8_t> reply;
  const absl::Status collected = server_->CollectOutput(reply).status();
  EXPECT_FALSE(received.ok() && collected.ok());
  EXPECT_EQ(server_->status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(server_->Receive(preface).ok());
  // The reply ends with a GOAWAY frame (type 0x7).
  bool saw_goaway = false;
  for (std::size_t offset = 0; offset + 9 <= reply.size();) {
    const std::size_t length = (reply[offset] << 16) | (reply[offset + 1] << 8) | reply[offset + 2];
    if (reply[offset + 3] == 0x7) saw_goaway = true;
    offset += 9 + length;
  }
  EXPECT_TRUE(saw_goaway);
}

}  // namespace
}  // namespace nodeward::hbone
