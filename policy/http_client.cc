#include "policy/http_client.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace nodeward::policy::http {
namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxTrailerLine = 8 * 1024;
// 15 hex digits keep a chunk size well inside uint64_t.
constexpr int kMaxSizeDigits = 15;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::Status ChunkedDecoder::Feed(absl::string_view in, std::string& out) {
  auto fail = [this](absl::string_view why) {
    state_ = State::kFailed;
    return absl::DataLossError(absl::StrCat("malformed chunked body: ", why));
  };
  size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    switch (state_) {
      case State::kSize: {
        int digit = HexValue(c);
        if (digit >= 0) {
          if (++size_digits_ > kMaxSizeDigits) return fail("chunk size too large");
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(digit);
          ++i;
        } else if (size_digits_ == 0) {
          return fail("expected a chunk size");
        } else if (c == ';' || c == ' ' || c == '\t') {
          state_ = State::kExtension;
          ++i;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
          ++i;
        } else {
          return fail("bad character in chunk size");
        }
        break;
      }
      case State::kExtension:
        if (c == '\r') state_ = State::kSizeLf;
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') return fail("expected LF after chunk size");
        ++i;
        size_digits_ = 0;
        state_ = remaining_ == 0 ? State::kTrailer : State::kData;
        break;
      case State::kData: {
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
        out.append(in.data() + i, take);
        i += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return fail("expected CRLF after chunk data");
        state_ = State::kDataLf;
        ++i;
        break;
      case State::kDataLf:
        if (c != '\n') return fail("expected CRLF after chunk data");
        state_ = State::kSize;
        ++i;
        break;
      case State::kTrailer:
        // Trailer fields end with an empty line.
        ++i;
        if (c == '\n') {
          bool empty = trailer_line_.empty() || trailer_line_ == "\r";
          trailer_line_.clear();
          if (empty) state_ = State::kDone;
        } else {
          trailer_line_.push_back(c);
          if (trailer_line_.size() > kMaxTrailerLine) return fail("trailer too long");
        }
        break;
      case State::kDone:
        return fail("data after the last chunk");
      case State::kFailed:
        return fail("earlier error");
    }
  }
  return absl::OkStatus();
}

const std::string* ResponseHead::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

absl::StatusOr<std::optional<std::pair<ResponseHead, size_t>>> ParseResponseHead(
    absl::string_view buffer) {
  size_t end = buffer.find("\r\n\r\n");
  if (end == absl::string_view::npos) {
    if (buffer.size() > kMaxHeadBytes) {
      return absl::DataLossError("HTTP response head larger than 64 KiB");
    }
    return std::nullopt;
  }
  if (end > kMaxHeadBytes) return absl::DataLossError("HTTP response head larger than 64 KiB");
  std::vector<absl::string_view> lines = absl::StrSplit(buffer.substr(0, end), "\r\n");
  ResponseHead head;
  // "HTTP/1.1 200 OK"
  absl::string_view status_line = lines[0];
  std::vector<absl::string_view> parts = absl::StrSplit(status_line, absl::MaxSplits(' ', 2));
  if (parts.size() < 2 || !absl::StartsWith(parts[0], "HTTP/1.") ||
      !absl::SimpleAtoi(parts[1], &head.status) || head.status < 100 || head.status > 999) {
    return absl::DataLossError(absl::StrCat("bad HTTP status line \"",
                                            absl::CHexEscape(status_line.substr(0, 100)), "\""));
  }
  if (parts.size() == 3) head.reason = std::string(parts[2]);
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::DataLossError("bad HTTP header line");
    }
    std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    std::string value(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    if (name == "content-length") {
      uint64_t length = 0;
      if (!absl::SimpleAtoi(value, &length)) return absl::DataLossError("bad Content-Length");
      head.content_length = length;
    } else if (name == "transfer-encoding") {
      std::string coding = absl::AsciiStrToLower(value);
      if (coding == "chunked") {
        head.chunked = true;
      } else if (coding != "identity") {
        return absl::UnimplementedError(absl::StrCat("unsupported Transfer-Encoding ", value));
      }
    }
    head.headers.emplace_back(std::move(name), std::move(value));
  }
  return std::make_optional(std::make_pair(std::move(head), end + 4));
}

absl::StatusOr<size_t> Exchange::Fill() {
  char chunk[16 * 1024];
  absl::StatusOr<size_t> n = stream_.Read(chunk, sizeof(chunk));
  if (!n.ok()) return n.status();
  if (*n == 0) eof_ = true;
  buffer_.append(chunk, *n);
  return *n;
}

absl::StatusOr<ResponseHead> Exchange::Start(const Request& request) {
  std::string text = absl::StrCat(request.method, " ", request.target,
                                  " HTTP/1.1\r\nHost: ", request.host, "\r\n");
  for (const auto& [name, value] : request.headers)
    absl::StrAppend(&text, name, ": ", value, "\r\n");
  if (!request.body.empty())
    absl::StrAppend(&text, "Content-Length: ", request.body.size(), "\r\n");
  // One request per connection keeps the framing simple; watches are long-lived anyway.
  absl::StrAppend(&text, "Connection: close\r\n\r\n", request.body);
  if (absl::Status status = stream_.WriteAll(text); !status.ok()) return status;
  while (true) {
    absl::StatusOr<std::optional<std::pair<ResponseHead, size_t>>> parsed =
        ParseResponseHead(buffer_);
    if (!parsed.ok()) return parsed.status();
    if (parsed->has_value()) {
      head_ = std::move((*parsed)->first);
      buffer_.erase(0, (*parsed)->second);
      return head_;
    }
    if (eof_) return absl::UnavailableError("connection closed before the HTTP response head");
    if (absl::StatusOr<size_t> n = Fill(); !n.ok()) return n.status();
  }
}

absl::StatusOr<bool> Exchange::ReadBody(std::string& out) {
  if (finished_) return false;
  while (true) {
    if (head_.chunked) {
      if (!buffer_.empty()) {
        size_t before = out.size();
        absl::Status status = chunked_.Feed(buffer_, out);
        buffer_.clear();
        if (!status.ok()) return status;
        if (out.size() > before) return true;
      }
      if (chunked_.done()) {
        finished_ = true;
        return false;
      }
      if (eof_) return absl::DataLossError("connection closed inside a chunked body");
    } else if (head_.content_length.has_value()) {
      uint64_t left = *head_.content_length - body_read_;
      if (left == 0) {
        finished_ = true;
        return false;
      }
      if (!buffer_.empty()) {
        size_t take = static_cast<size_t>(std::min<uint64_t>(left, buffer_.size()));
        out.append(buffer_, 0, take);
        buffer_.erase(0, take);
        body_read_ += take;
        return true;
      }
      if (eof_) return absl::DataLossError("connection closed before Content-Length was read");
    } else {
      // Delimited by the end of the connection.
      if (!buffer_.empty()) {
        out.append(buffer_);
        buffer_.clear();
        return true;
      }
      if (eof_) {
        finished_ = true;
        return false;
      }
    }
    if (absl::StatusOr<size_t> n = Fill(); !n.ok()) return n.status();
  }
}

absl::StatusOr<std::string> Exchange::ReadAll(size_t limit) {
  std::string body;
  while (true) {
    absl::StatusOr<bool> more = ReadBody(body);
    if (!more.ok()) return more.status();
    if (!*more) return body;
    if (body.size() > limit) {
      return absl::ResourceExhaustedError(absl::StrCat("response body over ", limit, " bytes"));
    }
  }
}

}  // namespace nodeward::policy::http
