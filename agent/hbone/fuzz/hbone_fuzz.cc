// Feeds arbitrary bytes to a server session after a valid client preface, the way a peer's
// bytes arrive from the tunnel. The session must fail cleanly, never crash or leak.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "agent/hbone/session.h"

namespace {

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using nodeward::hbone::ServerSession;
  using nodeward::hbone::Session;
  using nodeward::hbone::StreamId;

  ServerSession* server_ptr = nullptr;
  Session::Callbacks callbacks;
  // Alternate decisions so both answers and the stream paths behind them get exercised.
  callbacks.on_connect = [&server_ptr](StreamId id, const std::string& authority,
                                       const std::vector<nodeward::hbone::Header>&) {
    if (authority.size() % 2 == 0) {
      (void)server_ptr->Accept(id);
      const std::uint8_t reply[] = {'o', 'k'};
      (void)server_ptr->Write(id, reply);
    } else {
      (void)server_ptr->Refuse(id, 403, authority);
    }
  };
  callbacks.on_readable = [&server_ptr](StreamId id) {
    std::uint8_t buffer[4096];
    while (server_ptr->Read(id, buffer).value_or(0) > 0) {
    }
  };
  auto server = ServerSession::Create({}, std::move(callbacks));
  if (!server.ok()) return 0;
  server_ptr = server->get();

  std::vector<std::uint8_t> input(kPreface, kPreface + sizeof(kPreface) - 1);
  input.insert(input.end(), data, data + size);
  // Feed in two pieces to cover frames split across reads.
  const std::size_t split = input.size() / 2;
  std::vector<std::uint8_t> output;
  if ((*server)->Receive(absl::MakeConstSpan(input).subspan(0, split)).ok()) {
    (void)(*server)->CollectOutput(output);
    (void)(*server)->Receive(absl::MakeConstSpan(input).subspan(split));
  }
  (void)(*server)->CollectOutput(output);
  return 0;
}
