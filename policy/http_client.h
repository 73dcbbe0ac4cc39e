// A minimal HTTP/1.1 client for the Kubernetes API: one request per connection, responses
// framed by Content-Length, chunked transfer coding or end of stream, bodies read
// incrementally so a watch can be consumed event by event. The byte stream underneath is
// supplied by the caller (TLS over TCP in production).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nodeward::policy::http {

// A connected byte stream.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual absl::Status WriteAll(absl::string_view data) = 0;
  // Up to `size` bytes into `buffer`; 0 at end of stream.
  virtual absl::StatusOr<size_t> Read(char* buffer, size_t size) = 0;
};

// Incremental decoder of the chunked transfer coding (RFC 9112 section 7.1). Chunk extensions
// and trailers are skipped.
class ChunkedDecoder {
 public:
  // Decodes what it can of `in` into `out`; the caller feeds bytes in any split. Malformed
  // framing is an error, after which the decoder stays failed.
  absl::Status Feed(absl::string_view in, std::string& out);
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State {
    kSize,
    kExtension,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailer,
    kDone,
    kFailed
  };
  State state_ = State::kSize;
  uint64_t remaining_ = 0;
  int size_digits_ = 0;
  std::string trailer_line_;
};

struct ResponseHead {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::optional<uint64_t> content_length;
  bool chunked = false;
  const std::string* Header(absl::string_view name) const;
};

// Parses a status line and headers from the start of `buffer`. Returns nullopt while the
// head is incomplete, else the head and the bytes it took. Heads over 64 KiB are an error.
absl::StatusOr<std::optional<std::pair<ResponseHead, size_t>>> ParseResponseHead(
    absl::string_view buffer);

struct Request {
  std::string method = "GET";
  std::string host;    // Host header
  std::string target;  // path and query
  std::vector<std::pair<std::string, std::string>> headers;
  // Sent after the head, framed by Content-Length, when not empty.
  std::string body;
};

// Sends `request` and reads the response incrementally.
class Exchange {
 public:
  explicit Exchange(Stream& stream) : stream_(stream) {}

  // Writes the request and reads the response head.
  absl::StatusOr<ResponseHead> Start(const Request& request);
  // Appends the next piece of decoded body to `out`. Returns false once the body is complete
  // (nothing appended).
  absl::StatusOr<bool> ReadBody(std::string& out);
  // Reads the rest of the body, failing when it exceeds `limit` bytes.
  absl::StatusOr<std::string> ReadAll(size_t limit);

 private:
  absl::StatusOr<size_t> Fill();

  Stream& stream_;
  ResponseHead head_;
  std::string buffer_;  // received, not yet consumed
  ChunkedDecoder chunked_;
  uint64_t body_read_ = 0;
  bool eof_ = false;
  bool finished_ = false;
};

}  // namespace nodeward::policy::http
