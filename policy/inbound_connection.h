// What the data plane knows of an inbound connection when it asks policy about it. Every field
// the data plane cannot supply may stay empty: AuthorizationPolicy conditions on an unknown
// attribute then fail closed (they match nothing for ALLOW and everything for DENY).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

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

// An InboundConnection that owns what it names: kept beside a live connection to decide it
// again when the policy changes (an InboundConnection only views the caller's strings).
struct OwnedInboundConnection {
  InboundTransport transport = InboundTransport::kPlaintext;
  std::string peer_identity;
  std::string source_ip;
  std::string destination_ip;
  uint32_t port = 0;
  std::optional<std::string> sni;

  static OwnedInboundConnection From(const InboundConnection& connection) {
    OwnedInboundConnection owned;
    owned.transport = connection.transport;
    owned.peer_identity = std::string(connection.peer_identity);
    owned.source_ip = std::string(connection.source_ip);
    owned.destination_ip = std::string(connection.destination_ip);
    owned.port = connection.port;
    if (connection.sni.has_value()) owned.sni = std::string(*connection.sni);
    return owned;
  }
  // Valid while this object lives and is not changed.
  InboundConnection View() const {
    InboundConnection view;
    view.transport = transport;
    view.peer_identity = peer_identity;
    view.source_ip = source_ip;
    view.destination_ip = destination_ip;
    view.port = port;
    if (sni.has_value()) view.sni = *sni;
    return view;
  }
};

}  // namespace nodeward::policy
