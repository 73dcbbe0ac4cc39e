// What the data plane knows of an inbound connection when it asks policy about it. Every field
// the data plane cannot supply may stay unset: AuthorizationPolicy conditions on an unknown
// attribute then fail closed (they match nothing for ALLOW and everything for DENY).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/net_address.h"
#include "common/spiffe_id.h"

namespace nodeward::policy {

enum class InboundTransport { kMtls, kPlaintext };

// Owns what it names (a SPIFFE ID and an SNI are short), so the data plane keeps it beside a
// live connection and decides it again when the policy changes.
struct InboundConnection {
  InboundTransport transport = InboundTransport::kPlaintext;
  // kMtls: the client's SPIFFE ID as the handshake verified it; unset when unknown. Ignored for
  // plaintext, which has no principal (so it matches no principals and every notPrincipals).
  std::optional<SpiffeId> peer_identity;
  // The client's address: the TCP peer of the connection (for HBONE, of the tunnel, which the
  // client's agent opens from inside the client pod).
  std::optional<IpAddress> source_ip;
  // The address the client asked for, one of the destination pod's.
  std::optional<IpAddress> destination_ip;
  uint32_t port = 0;  // the destination pod's (target) port
  // The server name of the client's own TLS ClientHello, for `connection.sni`: unset when the
  // data plane did not look, "" for TLS without SNI or no TLS at all.
  std::optional<std::string> sni;
};

}  // namespace nodeward::policy
