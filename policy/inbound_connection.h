// What the data plane knows of an inbound connection when it asks policy about it. Every field
// the data plane cannot supply may stay empty: AuthorizationPolicy conditions on an unknown
// attribute then fail closed (they match nothing for ALLOW and everything for DENY).
#pragma once

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"

namespace nodeward::policy {

enum class InboundTransport { kMtls, kPlaintext };

struct InboundConnection {
  InboundTransport transport = InboundTransport::kPlaintext;
  // kMtls: the client's SPIFFE ID as the handshake verified it. Ignored for plaintext, which
  // has no principal (so it matches no principals and every notPrincipals).
  absl::string_view peer_identity;
  // The client's address: the TCP peer of the connection (for HBONE, of the tunnel, which the
  // client's agent opens from inside the client pod). Empty when unknown.
  absl::string_view source_ip;
  // The address the client asked for, one of the destination pod's. Empty when unknown.
  absl::string_view destination_ip;
  uint32_t port = 0;  // the destination pod's (target) port
  // The server name of the client's own TLS ClientHello, for `connection.sni`: nullopt when the
  // data plane did not look, "" for TLS without SNI or no TLS at all.
  std::optional<absl::string_view> sni;
};

}  // namespace nodeward::policy
