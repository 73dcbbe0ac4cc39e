// The first flight of a TLS client, read without terminating TLS: what a gateway needs to route
// a connection by SNI (PASSTHROUGH) or to pick the certificate and server before the handshake,
// as Envoy's tls_inspector listener filter does. Sans-IO: the caller feeds bytes as they arrive
// and, once the hello is parsed, forwards exactly the bytes it fed, unchanged.
//
// What is checked is what routing relies on (RFC 8446 section 4.1.2 and RFC 6066 section 3): the
// record framing, the handshake message framing, every length of the ClientHello, the SNI as a
// DNS host name, ALPN and supported_versions. Everything else (cipher suites, key shares,
// signatures) is the TLS stack's to judge, after routing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace nodeward::gateway {

enum class ClientHelloError {
  kNone,
  kNotTls,      // the first bytes are not a TLS handshake record (plaintext, HTTP, SSLv2)
  kMalformed,   // lengths that do not add up, a bad record, another message than ClientHello
  kTruncated,   // the peer ended the stream before the ClientHello was complete
  kTooLarge,    // the ClientHello needs more bytes than the reader will buffer
  kInvalidSni,  // the server_name is not a DNS host name (RFC 6066: no IP, no trailing dot)
  kSniTooLong,  // the server_name is longer than a DNS name can be (253 bytes)
};
// "not_tls", "malformed", "truncated", "too_large", "invalid_sni", "sni_too_long" (and
// "none"): the label metrics and access logs use.
absl::string_view ClientHelloErrorName(ClientHelloError error);

struct ClientHello {
  uint16_t legacy_version = 0;  // ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)
  bool has_sni = false;
  std::string sni;  // as sent (DNS names are case-insensitive: compare lowercased)
  std::vector<std::string> alpn;
  // supported_versions, in the client's order, GREASE values removed; empty when the client
  // sent no such extension (then it speaks at most legacy_version).
  std::vector<uint16_t> supported_versions;
  // Bytes of the stream, from its start, that carried the ClientHello: its records.
  std::size_t wire_length = 0;

  // The highest version the client offers.
  uint16_t MaxVersion() const;
};

// Longest host name accepted in server_name: the longest a DNS name can be written.
inline constexpr std::size_t kMaxSniLength = 253;

// Parses one complete ClientHello handshake message body (after its 4-byte header). Pure; the
// error names the field. `error` receives the typed reason when it is not null.
absl::Status ParseClientHelloBody(absl::Span<const uint8_t> body, ClientHello& out,
                                  ClientHelloError* error = nullptr);

// Whether `name` is a host name a client may send as SNI: 1 to 253 bytes of dot-separated
// labels of 1 to 63 letters, digits, '-' or '_' (Istio's AUTO_PASSTHROUGH names carry '_'), no
// trailing dot, not an IPv4 literal.
bool IsValidSniHostName(absl::string_view name);

class ClientHelloReader {
 public:
  struct Options {
    // The most bytes buffered before giving up with kTooLarge. Real ClientHellos are 200 bytes
    // to 2 KiB (a post-quantum key share adds about 1.2 KiB); 16 KiB leaves room for large ones
    // while bounding what each pending connection can make the gateway hold. Envoy's
    // tls_inspector has the same knob (max_client_hello_size), at most 64 KiB.
    std::size_t max_buffered_bytes = 16 * 1024;
  };
  enum class State { kNeedMore, kParsed, kFailed };

  ClientHelloReader() : ClientHelloReader(Options{}) {}
  explicit ClientHelloReader(Options options) : options_(options) {}

  // Appends bytes as they arrive and answers once it can. After kParsed or kFailed, further
  // bytes are still kept (so the caller forwards one buffer) unless that would pass the bound.
  State Feed(absl::Span<const uint8_t> bytes);
  // The stream ended: a ClientHello still incomplete is kTruncated.
  State FeedEof();

  State state() const { return state_; }
  // Valid once state() is kParsed.
  const ClientHello& hello() const { return hello_; }
  ClientHelloError error() const { return error_; }
  // Why it failed, naming the field, when state() is kFailed.
  const absl::Status& status() const { return status_; }
  // At least this many more bytes are needed before the answer can change (0 once decided).
  std::size_t MinMoreBytes() const;

  // Every byte fed so far, unchanged: what a passthrough forwards to the destination, or what
  // a terminating server's TLS engine is fed.
  absl::Span<const uint8_t> buffered() const { return buffer_; }
  std::vector<uint8_t> TakeBuffered() { return std::move(buffer_); }

 private:
  State Fail(ClientHelloError error, absl::Status status);
  State Advance();

  Options options_;
  State state_ = State::kNeedMore;
  ClientHelloError error_ = ClientHelloError::kNone;
  absl::Status status_;
  ClientHello hello_;
  std::vector<uint8_t> buffer_;
  // Where the next record header starts in buffer_, and the handshake bytes gathered from the
  // records read so far (the ClientHello may span several records).
  std::size_t next_record_ = 0;
  std::vector<uint8_t> handshake_;
  std::size_t needed_ = 1;  // bytes of buffer_ the next step needs in total
};

}  // namespace nodeward::gateway
