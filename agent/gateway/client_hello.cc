#include "agent/gateway/client_hello.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace nodeward::gateway {
namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kClientHelloMessage = 1;
constexpr std::size_t kRecordHeader = 5;
constexpr std::size_t kHandshakeHeader = 4;
// RFC 8446 section 5.1: a record's plaintext fragment is at most 2^14 bytes.
constexpr std::size_t kMaxRecordPayload = 16384;
constexpr uint16_t kServerNameExtension = 0;
constexpr uint16_t kAlpnExtension = 16;
constexpr uint16_t kSupportedVersionsExtension = 43;
constexpr uint8_t kHostNameType = 0;

// RFC 8701: GREASE values are 0x?A?A with both bytes equal.
bool IsGrease(uint16_t value) {
  return (value & 0x0f0f) == 0x0a0a && (value >> 8) == (value & 0xff);
}

// Reads big-endian fields from a span; every read checks the bytes are there.
class Cursor {
 public:
  explicit Cursor(absl::Span<const uint8_t> data) : data_(data) {}

  std::size_t remaining() const { return data_.size(); }
  bool empty() const { return data_.empty(); }

  bool U8(uint8_t& out) {
    if (data_.empty()) return false;
    out = data_[0];
    data_.remove_prefix(1);
    return true;
  }
  bool U16(uint16_t& out) {
    if (data_.size() < 2) return false;
    out = static_cast<uint16_t>(data_[0] << 8 | data_[1]);
    data_.remove_prefix(2);
    return true;
  }
  bool Bytes(std::size_t n, absl::Span<const uint8_t>& out) {
    if (data_.size() < n) return false;
    out = data_.subspan(0, n);
    data_.remove_prefix(n);
    return true;
  }
  // A vector with a `width`-byte length prefix (1 or 2).
  bool Prefixed(int width, absl::Span<const uint8_t>& out) {
    std::size_t length = 0;
    if (width == 1) {
      uint8_t n = 0;
      if (!U8(n)) return false;
      length = n;
    } else {
      uint16_t n = 0;
      if (!U16(n)) return false;
      length = n;
    }
    return Bytes(length, out);
  }

 private:
  absl::Span<const uint8_t> data_;
};

absl::string_view Text(absl::Span<const uint8_t> bytes) {
  return absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

struct BodyError {
  ClientHelloError error;
  absl::Status status;
};

BodyError Malformed(absl::string_view field, absl::string_view problem) {
  return {ClientHelloError::kMalformed,
          absl::InvalidArgumentError(absl::StrCat("ClientHello ", field, ": ", problem))};
}

std::optional<BodyError> ParseServerName(absl::Span<const uint8_t> data, ClientHello& out) {
  Cursor cursor(data);
  absl::Span<const uint8_t> list;
  if (!cursor.Prefixed(2, list) || !cursor.empty() || list.empty()) {
    return Malformed("server_name", "the name list does not fill the extension");
  }
  Cursor names(list);
  while (!names.empty()) {
    uint8_t type = 0;
    absl::Span<const uint8_t> name;
    if (!names.U8(type) || !names.Prefixed(2, name)) {
      return Malformed("server_name", "a name runs past the list");
    }
    if (type != kHostNameType) continue;  // RFC 6066: other name types are for the future
    if (out.has_sni) return Malformed("server_name", "more than one host_name");
    if (name.size() > kMaxSniLength) {
      return BodyError{ClientHelloError::kSniTooLong,
                       absl::InvalidArgumentError(absl::StrCat(
                           "ClientHello server_name: ", name.size(), " bytes, longer than the ",
                           kMaxSniLength, " a DNS name can have"))};
    }
    if (!IsValidSniHostName(Text(name))) {
      return BodyError{ClientHelloError::kInvalidSni,
                       absl::InvalidArgumentError(absl::StrCat("ClientHello server_name: \"",
                                                               absl::CHexEscape(Text(name)),
                                                               "\" is not a DNS host name"))};
    }
    out.has_sni = true;
    out.sni = std::string(Text(name));
  }
  return std::nullopt;
}

std::optional<BodyError> ParseAlpn(absl::Span<const uint8_t> data, ClientHello& out) {
  Cursor cursor(data);
  absl::Span<const uint8_t> list;
  if (!cursor.Prefixed(2, list) || !cursor.empty() || list.empty()) {
    return Malformed("application_layer_protocol_negotiation",
                     "the protocol list does not fill the extension");
  }
  Cursor protocols(list);
  while (!protocols.empty()) {
    absl::Span<const uint8_t> name;
    if (!protocols.Prefixed(1, name) || name.empty()) {
      return Malformed("application_layer_protocol_negotiation",
                       "an empty protocol name, or one past the list");
    }
    out.alpn.emplace_back(Text(name));
  }
  return std::nullopt;
}

std::optional<BodyError> ParseSupportedVersions(absl::Span<const uint8_t> data, ClientHello& out) {
  Cursor cursor(data);
  absl::Span<const uint8_t> list;
  if (!cursor.Prefixed(1, list) || !cursor.empty() || list.size() < 2 || list.size() % 2 != 0) {
    return Malformed("supported_versions", "not a list of 2-byte versions filling the extension");
  }
  Cursor versions(list);
  uint16_t version = 0;
  while (versions.U16(version)) {
    if (!IsGrease(version)) out.supported_versions.push_back(version);
  }
  return std::nullopt;
}

std::optional<BodyError> ParseBody(absl::Span<const uint8_t> body, ClientHello& out) {
  Cursor cursor(body);
  absl::Span<const uint8_t> skipped;
  if (!cursor.U16(out.legacy_version)) return Malformed("legacy_version", "missing");
  if (out.legacy_version >> 8 != 3) {
    return Malformed("legacy_version",
                     absl::StrCat("0x", absl::Hex(out.legacy_version), " is not a TLS version"));
  }
  if (!cursor.Bytes(32, skipped)) return Malformed("random", "shorter than 32 bytes");
  if (!cursor.Prefixed(1, skipped) || skipped.size() > 32) {
    return Malformed("legacy_session_id", "longer than 32 bytes or past the message");
  }
  if (!cursor.Prefixed(2, skipped) || skipped.size() < 2 || skipped.size() % 2 != 0) {
    return Malformed("cipher_suites", "not a non-empty list of 2-byte suites");
  }
  if (!cursor.Prefixed(1, skipped) || skipped.empty()) {
    return Malformed("legacy_compression_methods", "empty or past the message");
  }
  // Clients from before RFC 3546 send no extensions at all.
  if (cursor.empty()) return std::nullopt;
  absl::Span<const uint8_t> extensions;
  if (!cursor.Prefixed(2, extensions) || !cursor.empty()) {
    return Malformed("extensions", "the list does not end where the message does");
  }
  Cursor list(extensions);
  std::vector<uint16_t> seen;
  while (!list.empty()) {
    uint16_t type = 0;
    absl::Span<const uint8_t> data;
    if (!list.U16(type) || !list.Prefixed(2, data)) {
      return Malformed("extensions", "an extension runs past the list");
    }
    // RFC 8446 section 4.2: never more than one extension of a type.
    if (std::find(seen.begin(), seen.end(), type) != seen.end()) {
      return Malformed("extensions", absl::StrCat("extension ", type, " appears twice"));
    }
    seen.push_back(type);
    std::optional<BodyError> error;
    switch (type) {
      case kServerNameExtension:
        error = ParseServerName(data, out);
        break;
      case kAlpnExtension:
        error = ParseAlpn(data, out);
        break;
      case kSupportedVersionsExtension:
        error = ParseSupportedVersions(data, out);
        break;
      default:
        break;
    }
    if (error.has_value()) return error;
  }
  return std::nullopt;
}

}  // namespace

absl::string_view ClientHelloErrorName(ClientHelloError error) {
  switch (error) {
    case ClientHelloError::kNone:
      return "none";
    case ClientHelloError::kNotTls:
      return "not_tls";
    case ClientHelloError::kMalformed:
      return "malformed";
    case ClientHelloError::kTruncated:
      return "truncated";
    case ClientHelloError::kTooLarge:
      return "too_large";
    case ClientHelloError::kInvalidSni:
      return "invalid_sni";
    case ClientHelloError::kSniTooLong:
      return "sni_too_long";
  }
  return "unknown";
}

uint16_t ClientHello::MaxVersion() const {
  if (supported_versions.empty()) return legacy_version;
  return *std::max_element(supported_versions.begin(), supported_versions.end());
}

bool IsValidSniHostName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxSniLength) return false;
  bool all_numeric = true;
  int labels = 0;
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    ++labels;
    if (label.empty() || label.size() > 63) return false;
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return false;
    }
    all_numeric &= std::all_of(label.begin(), label.end(), absl::ascii_isdigit);
  }
  // RFC 6066: "Literal IPv4 and IPv6 addresses are not permitted"; IPv6 fails on ':' above.
  return !(all_numeric && labels == 4);
}

absl::Status ParseClientHelloBody(absl::Span<const uint8_t> body, ClientHello& out,
                                  ClientHelloError* error) {
  std::optional<BodyError> failure = ParseBody(body, out);
  if (error != nullptr) *error = failure.has_value() ? failure->error : ClientHelloError::kNone;
  return failure.has_value() ? failure->status : absl::OkStatus();
}

ClientHelloReader::State ClientHelloReader::Fail(ClientHelloError error, absl::Status status) {
  state_ = State::kFailed;
  error_ = error;
  status_ = std::move(status);
  handshake_.clear();
  handshake_.shrink_to_fit();
  return state_;
}

ClientHelloReader::State ClientHelloReader::Feed(absl::Span<const uint8_t> bytes) {
  if (state_ == State::kFailed) return state_;
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
  if (state_ == State::kParsed) return state_;
  return Advance();
}

ClientHelloReader::State ClientHelloReader::FeedEof() {
  if (state_ != State::kNeedMore) return state_;
  return Fail(ClientHelloError::kTruncated,
              absl::UnavailableError(absl::StrCat("the stream ended after ", buffer_.size(),
                                                  " bytes, before the ClientHello was complete")));
}

std::size_t ClientHelloReader::MinMoreBytes() const {
  if (state_ != State::kNeedMore) return 0;
  return needed_ > buffer_.size() ? needed_ - buffer_.size() : 1;
}

ClientHelloReader::State ClientHelloReader::Advance() {
  while (true) {
    // Say "not TLS" from the first byte: a plaintext client may wait for the server forever.
    if (next_record_ == 0 && !buffer_.empty()) {
      if (buffer_[0] != kHandshakeRecord) {
        return Fail(ClientHelloError::kNotTls,
                    absl::InvalidArgumentError(
                        absl::StrCat("the first byte 0x", absl::Hex(buffer_[0], absl::kZeroPad2),
                                     " does not start a TLS handshake record")));
      }
      if (buffer_.size() >= 2 && buffer_[1] != 3) {
        return Fail(ClientHelloError::kNotTls,
                    absl::InvalidArgumentError(
                        absl::StrCat("record version major ", buffer_[1], " is not TLS's (3)")));
      }
    }
    if (buffer_.size() < next_record_ + kRecordHeader) {
      needed_ = next_record_ + kRecordHeader;
      return state_;
    }
    const uint8_t* header = buffer_.data() + next_record_;
    const std::size_t length = static_cast<std::size_t>(header[3] << 8 | header[4]);
    if (header[0] != kHandshakeRecord || header[1] != 3) {
      return Fail(ClientHelloError::kMalformed,
                  absl::InvalidArgumentError(
                      absl::StrCat("a record of type ", header[0], " (version ", header[1], ".",
                                   header[2], ") came before the ClientHello was complete")));
    }
    // RFC 8446 section 5.1: no zero-length handshake fragments, none over 2^14 bytes.
    if (length == 0 || length > kMaxRecordPayload) {
      return Fail(ClientHelloError::kMalformed,
                  absl::InvalidArgumentError(absl::StrCat("a handshake record of ", length,
                                                          " bytes (1 to 16384 allowed)")));
    }
    const std::size_t record_end = next_record_ + kRecordHeader + length;
    if (record_end > options_.max_buffered_bytes) {
      return Fail(ClientHelloError::kTooLarge,
                  absl::ResourceExhaustedError(
                      absl::StrCat("the ClientHello needs more than ", options_.max_buffered_bytes,
                                   " bytes (a record ends at byte ", record_end, ")")));
    }
    if (buffer_.size() < record_end) {
      needed_ = record_end;
      return state_;
    }
    const auto fragment =
        absl::MakeConstSpan(buffer_).subspan(next_record_ + kRecordHeader, length);
    handshake_.insert(handshake_.end(), fragment.begin(), fragment.end());
    next_record_ = record_end;
    if (handshake_.size() < kHandshakeHeader) continue;
    if (handshake_[0] != kClientHelloMessage) {
      return Fail(ClientHelloError::kMalformed,
                  absl::InvalidArgumentError(absl::StrCat("the first handshake message is of type ",
                                                          handshake_[0], ", not ClientHello (1)")));
    }
    const std::size_t body_length =
        static_cast<std::size_t>(handshake_[1]) << 16 | handshake_[2] << 8 | handshake_[3];
    const std::size_t message_length = kHandshakeHeader + body_length;
    if (handshake_.size() < message_length) {
      // Each further record brings at most 2^14 bytes after a 5-byte header.
      const std::size_t missing = message_length - handshake_.size();
      const std::size_t at_least = next_record_ + kRecordHeader + missing;
      if (at_least > options_.max_buffered_bytes) {
        return Fail(ClientHelloError::kTooLarge,
                    absl::ResourceExhaustedError(absl::StrCat(
                        "a ClientHello of ", message_length, " bytes needs more than the ",
                        options_.max_buffered_bytes, " bytes buffered at most")));
      }
      continue;
    }
    ClientHello hello;
    ClientHelloError error = ClientHelloError::kNone;
    absl::Status status = ParseClientHelloBody(
        absl::MakeConstSpan(handshake_).subspan(kHandshakeHeader, body_length), hello, &error);
    if (!status.ok()) return Fail(error, std::move(status));
    hello.wire_length = next_record_;
    hello_ = std::move(hello);
    state_ = State::kParsed;
    needed_ = 0;
    handshake_.clear();
    handshake_.shrink_to_fit();
    return state_;
  }
}

}  // namespace nodeward::gateway
