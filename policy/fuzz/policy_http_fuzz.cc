// Feeds arbitrary bytes, split at a fuzzed size, as an HTTP response from the API server: the
// head parser and the body framings must fail cleanly, never crash or loop.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "policy/http_client.h"

namespace {

class FuzzStream : public nodeward::policy::http::Stream {
 public:
  FuzzStream(std::string data, size_t piece) : data_(std::move(data)), piece_(piece) {}
  absl::Status WriteAll(absl::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    size_t n = std::min({size, piece_, data_.size() - offset_});
    data_.copy(buffer, n, offset_);
    offset_ += n;
    return n;
  }

 private:
  std::string data_;
  size_t piece_;
  size_t offset_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t piece = 1 + data[0] % 64;
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  FuzzStream stream(text, piece);
  nodeward::policy::http::Exchange exchange(stream);
  if (!exchange.Start({}).ok()) return 0;
  exchange.ReadAll(1 << 20).IgnoreError();  // only termination and memory safety matter here
  nodeward::policy::http::ChunkedDecoder decoder;
  std::string out;
  decoder.Feed(text, out).IgnoreError();
  return 0;
}
