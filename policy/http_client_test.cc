#include "policy/http_client.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::policy::http {
namespace {

using ::testing::HasSubstr;

// Serves a fixed response in pieces of `piece` bytes and records what was written.
class MemoryStream : public Stream {
 public:
  MemoryStream(std::string response, size_t piece)
      : response_(std::move(response)), piece_(piece) {}
  absl::Status WriteAll(absl::string_view data) override {
    written_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    size_t n = std::min({size, piece_, response_.size() - offset_});
    response_.copy(buffer, n, offset_);
    offset_ += n;
    return n;
  }
  const std::string& written() const { return written_; }

 private:
  std::string response_;
  size_t piece_;
  size_t offset_ = 0;
  std::string written_;
};

std::string DecodeWhole(absl::string_view in, size_t piece, absl::Status* status, bool* done) {
  ChunkedDecoder decoder;
  std::string out;
  *status = absl::OkStatus();
  for (size_t i = 0; i < in.size() && status->ok(); i += piece) {
    *status = decoder.Feed(in.substr(i, piece), out);
  }
  *done = decoder.done();
  return out;
}

TEST(ChunkedDecoderTest, DecodesInAnySplit) {
  constexpr absl::string_view kBody =
      "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n";
  for (size_t piece : {1u, 2u, 3u, 7u, 100u}) {
    absl::Status status;
    bool done = false;
    EXPECT_EQ(DecodeWhole(kBody, piece, &status, &done), "hello 0123456789") << piece;
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(done);
  }
}

TEST(ChunkedDecoderTest, RejectsMalformedFraming) {
  for (absl::string_view bad :
       {absl::string_view("zz\r\n"), absl::string_view("5\r\nhelloXX"),
        absl::string_view("5\nhello"), absl::string_view("1234567890abcdef0\r\n"),
        absl::string_view("0\r\n\r\nmore"), absl::string_view("\r\n")}) {
    absl::Status status;
    bool done = false;
    DecodeWhole(bad, 1, &status, &done);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << bad;
  }
}

TEST(ResponseHeadTest, ParsesStatusAndHeaders) {
  constexpr absl::string_view kText =
      "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
      "\r\nbody";
  auto parsed = ParseResponseHead(kText);
  ASSERT_TRUE(parsed.ok());
  ASSERT_TRUE(parsed->has_value());
  const ResponseHead& head = (*parsed)->first;
  EXPECT_EQ(head.status, 410);
  EXPECT_EQ(head.reason, "Gone");
  EXPECT_TRUE(head.chunked);
  ASSERT_NE(head.Header("content-type"), nullptr);
  EXPECT_EQ(*head.Header("content-type"), "application/json");
  EXPECT_EQ((*parsed)->second, kText.find("body"));

  auto partial = ParseResponseHead("HTTP/1.1 200 OK\r\nContent-Le");
  ASSERT_TRUE(partial.ok());
  EXPECT_FALSE(partial->has_value());

  EXPECT_FALSE(ParseResponseHead("SMTP ready\r\n\r\n").ok());
  EXPECT_FALSE(ParseResponseHead("HTTP/1.1 200 OK\r\nno colon\r\n\r\n").ok());
  EXPECT_FALSE(ParseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").ok());
  EXPECT_FALSE(ParseResponseHead(std::string(70 * 1024, 'a')).ok());
}

TEST(ExchangeTest, SendsRequestAndReadsEachFraming) {
  struct Case {
    std::string response;
    std::string body;
  };
  for (const Case& c : std::vector<Case>{
           {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloIGNORED", "hello"},
           {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "abcde"},
           {"HTTP/1.0 200 OK\r\n\r\nuntil the end", "until the end"}}) {
    for (size_t piece : {1u, 5u, 4096u}) {
      MemoryStream stream(c.response, piece);
      Exchange exchange(stream);
      Request request;
      request.host = "api:6443";
      request.target = "/api/v1/pods?watch=1";
      request.headers.emplace_back("Authorization", "Bearer t");
      absl::StatusOr<ResponseHead> head = exchange.Start(request);
      ASSERT_TRUE(head.ok()) << head.status();
      EXPECT_EQ(head->status, 200);
      absl::StatusOr<std::string> body = exchange.ReadAll(1024);
      ASSERT_TRUE(body.ok()) << body.status();
      EXPECT_EQ(*body, c.body);
      EXPECT_EQ(stream.written(),
                "GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: api:6443\r\nAuthorization: Bearer "
                "t\r\nConnection: close\r\n\r\n");
    }
  }
}

TEST(ExchangeTest, SendsABodyFramedByContentLength) {
  MemoryStream stream("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}", 4096);
  Exchange exchange(stream);
  Request request;
  request.method = "POST";
  request.host = "api:6443";
  request.target = "/apis/authentication.k8s.io/v1/tokenreviews";
  request.headers.emplace_back("Content-Type", "application/json");
  request.body = R"({"spec":{"token":"t"}})";
  absl::StatusOr<ResponseHead> head = exchange.Start(request);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 201);
  EXPECT_EQ(stream.written(),
            "POST /apis/authentication.k8s.io/v1/tokenreviews HTTP/1.1\r\nHost: api:6443\r\n"
            "Content-Type: application/json\r\nContent-Length: 22\r\nConnection: "
            "close\r\n\r\n{\"spec\":{\"token\":\"t\"}}");
}

TEST(ExchangeTest, TruncatedAndOversizedBodiesFail) {
  {
    MemoryStream stream("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100);
    Exchange exchange(stream);
    ASSERT_TRUE(exchange.Start({}).ok());
    EXPECT_EQ(exchange.ReadAll(100).status().code(), absl::StatusCode::kDataLoss);
  }
  {
    MemoryStream stream("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 100);
    Exchange exchange(stream);
    ASSERT_TRUE(exchange.Start({}).ok());
    EXPECT_THAT(std::string(exchange.ReadAll(100).status().message()),
                HasSubstr("closed inside a chunked body"));
  }
  {
    MemoryStream stream("HTTP/1.1 200 OK\r\n\r\n" + std::string(5000, 'x'), 100);
    Exchange exchange(stream);
    ASSERT_TRUE(exchange.Start({}).ok());
    EXPECT_EQ(exchange.ReadAll(1000).status().code(), absl::StatusCode::kResourceExhausted);
  }
  {
    MemoryStream stream("HTTP/1.1 200", 100);
    Exchange exchange(stream);
    EXPECT_EQ(exchange.Start({}).status().code(), absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace nodeward::policy::http
