// Feeds arbitrary bytes to the ClientHello reader, whole and in pieces whose sizes come from the
// input itself. Whatever the bytes, the reader must not crash, must give the same answer however
// the bytes are split, and must never ask to hold more than its bound.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "agent/gateway/client_hello.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using nodeward::gateway::ClientHelloReader;
  if (size < 1) return 0;
  // The first byte picks the split pattern; the rest is the stream.
  const std::size_t step = 1 + data[0] % 17;
  const auto stream = absl::MakeConstSpan(data + 1, size - 1);
  const ClientHelloReader::Options options{.max_buffered_bytes = 4096};

  ClientHelloReader whole(options);
  whole.Feed(stream);
  whole.FeedEof();

  ClientHelloReader pieces(options);
  for (std::size_t at = 0; at < stream.size(); at += step) {
    const auto state = pieces.Feed(stream.subspan(at, step));
    if (state == ClientHelloReader::State::kNeedMore && pieces.MinMoreBytes() == 0) std::abort();
  }
  pieces.FeedEof();

  if (whole.state() != pieces.state() || whole.error() != pieces.error()) std::abort();
  if (whole.state() == ClientHelloReader::State::kParsed) {
    const auto& a = whole.hello();
    const auto& b = pieces.hello();
    if (a.sni != b.sni || a.alpn != b.alpn || a.wire_length != b.wire_length ||
        a.supported_versions != b.supported_versions) {
      std::abort();
    }
    if (a.wire_length > options.max_buffered_bytes || a.wire_length > stream.size()) std::abort();
    if (a.has_sni && !nodeward::gateway::IsValidSniHostName(a.sni)) std::abort();
  }
  return 0;
}
