#include "agent/proxy/upstream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/io/tls_connection.h"
#include "bpf/nodeward_maps.h"

namespace nodeward::proxy {

void WithCredentials(
    ProxyContext& context, Worker& worker, const SpiffeId& identity, bool server,
    absl::Time deadline,
    absl::AnyInvocable<void(absl::StatusOr<std::shared_ptr<const crypto::TlsContext>>)> done) {
  MeshCredentials* credentials = context.credentials();
  auto get = [credentials, identity, server] {
    return server ? credentials->ServerContext(identity) : credentials->ClientContext(identity);
  };
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> now = get();
  if (now.ok() || absl::Now() >= deadline) {
    done(std::move(now));
    return;
  }
  // The pod was just enrolled and its first certificate is on its way: whichever comes first,
  // the certificate or the deadline, answers.
  struct Wait {
    absl::AnyInvocable<void(absl::StatusOr<std::shared_ptr<const crypto::TlsContext>>)> done;
    absl::Status last;
    io::EventLoop::OpId timer = 0;
  };
  auto wait = std::make_shared<Wait>();
  wait->done = std::move(done);
  wait->last = now.status();
  io::EventLoop& loop = worker.loop();
  wait->timer = loop.Timer(deadline - absl::Now(), [wait](io::Completion& completion) {
    wait->timer = 0;
    if (!wait->done || completion.result == -ECANCELED) return;
    std::exchange(wait->done, nullptr)(wait->last);
  });
  credentials->WhenReady(identity, [poster = worker.poster, wait, get, &loop] {
    poster->Post([wait, get, &loop] {
      if (!wait->done) return;
      absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> ready = get();
      if (wait->timer != 0) loop.Cancel(wait->timer);
      std::exchange(wait->done, nullptr)(std::move(ready));
    });
  });
}

Upstreams::Done RelayOnceOpen(std::shared_ptr<Flow> flow, std::shared_ptr<io::Stream> source_side,
                              bool destination_may_refuse) {
  return [flow = std::move(flow), source_side = std::move(source_side),
          destination_may_refuse](absl::StatusOr<std::shared_ptr<io::Stream>> upstream) {
    if (!upstream.ok()) {
      source_side->Reset(upstream.status());
      flow->Finish(Result::kError, upstream.status().message());
      return;
    }
    if (source_side->closed()) {
      (*upstream)->Close();
      flow->Finish(Result::kError, "the client closed before the upstream was up");
      return;
    }
    RelayFlow(flow, source_side, *std::move(upstream), destination_may_refuse);
  };
}

absl::StatusOr<SocketAddress> DecidedAddress(const policy::OutboundDecision& decision) {
  if (decision.port == 0 || decision.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", decision.port, " is out of range"));
  }
  return SocketAddress{decision.address, static_cast<uint16_t>(decision.port), 0};
}

UpstreamChoice ChooseUpstream(ProxyContext& context, const policy::OutboundDecision& decision,
                              const SpiffeId& source, AccessRecord& record) {
  absl::StatusOr<SocketAddress> address = DecidedAddress(decision);
  if (!address.ok()) {
    return {std::nullopt, RefusalReason::kInvalidDestination,
            absl::StrCat("destination: ", address.status().message())};
  }
  switch (decision.action) {
    case policy::OutboundAction::kPlaintext:
      record.mode = Mode::kPlaintext;
      return {UpstreamTarget{.kind = UpstreamTarget::Kind::kTcp, .address = *address}};

    case policy::OutboundAction::kTlsOrigination: {
      record.mode = Mode::kTlsOrigination;
      absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> tls =
          context.origination().Get(*decision.origination);
      if (!tls.ok()) {
        return {std::nullopt, RefusalReason::kTlsOrigination,
                absl::StrCat("TLS origination: ", tls.status().message())};
      }
      return {UpstreamTarget{
          .kind = UpstreamTarget::Kind::kTlsOrigination, .address = *address, .tls = *tls}};
    }

    case policy::OutboundAction::kHbone: {
      absl::StatusOr<SpiffeId> peer = SpiffeId::Parse(decision.expected_peer_identity);
      if (!peer.ok()) {
        return {std::nullopt, RefusalReason::kIdentity,
                absl::StrCat("expected peer identity: ", peer.status().message())};
      }
      // A DestinationRule's subjectAltNames: any of them may answer (names that are not
      // SPIFFE IDs can never be a mesh server's, and policy warned about them).
      std::vector<SpiffeId> also_accepted;
      for (const std::string& name : decision.expected_peer_identities) {
        absl::StatusOr<SpiffeId> id = SpiffeId::Parse(name);
        if (id.ok() && *id != *peer) also_accepted.push_back(*id);
      }
      record.destination_principal = peer->ToString();
      record.mutual_tls = true;
      record.mode = Mode::kHboneMtls;
      return {UpstreamTarget{.kind = UpstreamTarget::Kind::kHbone,
                             .address = *address,
                             .source = source,
                             .peer = *peer,
                             .also_accepted = std::move(also_accepted)}};
    }

    case policy::OutboundAction::kRefuse:
    case policy::OutboundAction::kSameNode:
      break;
  }
  return {
      std::nullopt, RefusalReason::kInvalidDestination,
      absl::StrCat("no upstream for a ", policy::OutboundActionName(decision.action), " decision")};
}

std::string DeliveredFrom(const capture::CapturedPod& pod, const SocketAddress& application,
                          const std::optional<SocketAddress>& client) {
  if (std::optional<IpAddress> kept = pod.KeptSource(application, client)) {
    return kept->ToString();
  }
  return absl::StrCat(application.ip.ToString(), " (the pod's own: client address not kept)");
}

void Upstreams::ConnectFrom(Worker& worker, const capture::SocketOrigin& origin,
                            const SocketAddress& address, io::Connection::ConnectCallback done) {
  absl::StatusOr<int> fd = origin.CreateAgentSocket(address.ip.family);
  if (!fd.ok()) {
    done(fd.status());
    return;
  }
  io::Connection::Options connection;
  connection.idle_timeout = context_.options().idle_timeout;
  connection.set_nodelay = false;  // CreateAgentSocket did
  io::Connection::ConnectSocket(worker.loop(), *fd, address, context_.options().connect_timeout,
                                connection, std::move(done));
}

void Upstreams::Deliver(Worker& worker, const capture::CapturedPod& pod,
                        const SocketAddress& application,
                        const std::optional<SocketAddress>& client, Done done) {
  absl::StatusOr<std::unique_ptr<capture::Delivery>> delivery =
      pod.OpenDelivery(application, client);
  if (!delivery.ok()) {
    done(delivery.status());
    return;
  }
  const int fd = (*delivery)->TakeFd();
  io::Connection::Options connection;
  connection.idle_timeout = context_.options().idle_timeout;
  connection.set_nodelay = false;  // CreateAgentSocket did
  // The announcement must outlive the handshake: the application's SYN-ACK is what it lets in.
  std::shared_ptr<capture::Delivery> held = *std::move(delivery);
  io::Connection::ConnectSocket(
      worker.loop(), fd, application, context_.options().connect_timeout, connection,
      [held = std::move(held),
       done = std::move(done)](absl::StatusOr<std::shared_ptr<io::Connection>> result) mutable {
        held.reset();
        if (!result.ok()) {
          done(result.status());
          return;
        }
        done(std::shared_ptr<io::Stream>(*std::move(result)));
      });
}

void Upstreams::OpenHbone(Worker& worker, std::shared_ptr<const capture::SocketOrigin> from,
                          const SpiffeId& source, const SpiffeId& peer,
                          std::vector<SpiffeId> also_accepted, const SocketAddress& address,
                          absl::Time deadline, Done done) {
  const SocketAddress tunnel_address{address.ip, NW_PORT_TUNNEL, address.scope_id};
  TunnelKey key{from->netns_cookie(), source, peer, tunnel_address, std::move(also_accepted)};
  const std::string authority = address.ToString();
  // Only a new tunnel fetches credentials and dials; a pooled one just opens a stream.
  TunnelPool::Dial dial = [this, &worker, from, key, deadline](HboneTunnel::ClosedHandler on_closed,
                                                               TunnelPool::Waiter dialled) mutable {
    WithCredentials(
        context_, worker, key.source, /*server=*/false, deadline,
        [this, &worker, from, key, on_closed = std::move(on_closed), dialled = std::move(dialled)](
            absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context) mutable {
          if (!context.ok()) {
            dialled(context.status());
            return;
          }
          ConnectFrom(worker, *from, key.address,
                      [this, from, key, context = *std::move(context),
                       on_closed = std::move(on_closed), dialled = std::move(dialled)](
                          absl::StatusOr<std::shared_ptr<io::Connection>> wire) mutable {
                        if (!wire.ok()) {
                          dialled(wire.status());
                          return;
                        }
                        crypto::TlsEngine::ClientOptions client;
                        client.expected_peer = key.destination;
                        client.also_accepted = key.also_accepted;
                        absl::StatusOr<std::shared_ptr<HboneTunnel>> tunnel = HboneTunnel::Start(
                            HboneTunnel::Role::kClient, *wire,
                            crypto::TlsEngine::Client(context, client), context_.options().tunnel,
                            nullptr, std::move(on_closed));
                        if (tunnel.ok()) {
                          (*tunnel)->set_description({from->display_name(), key.source.ToString(),
                                                      key.address.ToString()});
                        }
                        dialled(std::move(tunnel));
                      });
        });
  };
  worker.pool.Get(
      key, std::move(dial),
      [peer, authority, done = std::move(done)](TunnelPool::TunnelOrError tunnel) mutable {
        if (!tunnel.ok()) {
          done(absl::Status(tunnel.status().code(), absl::StrCat("tunnel to ", peer.ToString(),
                                                                 ": ", tunnel.status().message())));
          return;
        }
        absl::StatusOr<std::shared_ptr<HboneStream>> stream = (*tunnel)->OpenStream(authority);
        if (!stream.ok()) {
          done(stream.status());
          return;
        }
        done(std::shared_ptr<io::Stream>(*std::move(stream)));
      });
}

void Upstreams::Open(Worker& worker, std::shared_ptr<const capture::SocketOrigin> from,
                     UpstreamTarget target, absl::Time deadline, Done done) {
  switch (target.kind) {
    case UpstreamTarget::Kind::kTcp:
    case UpstreamTarget::Kind::kTlsOrigination: {
      std::shared_ptr<const crypto::TlsContext> tls = std::move(target.tls);
      ConnectFrom(worker, *from, target.address,
                  [tls = std::move(tls), done = std::move(done)](
                      absl::StatusOr<std::shared_ptr<io::Connection>> connection) mutable {
                    if (!connection.ok()) {
                      done(connection.status());
                      return;
                    }
                    if (tls == nullptr) {
                      done(std::shared_ptr<io::Stream>(*std::move(connection)));
                      return;
                    }
                    done(std::shared_ptr<io::Stream>(io::TlsConnection::Create(
                        *std::move(connection), crypto::TlsEngine::Client(tls))));
                  });
      return;
    }
    case UpstreamTarget::Kind::kHbone:
      OpenHbone(worker, std::move(from), *target.source, *target.peer,
                std::move(target.also_accepted), target.address, deadline, std::move(done));
      return;
    case UpstreamTarget::Kind::kLocalPod:
      Deliver(worker, *target.local_pod, target.address, target.client, std::move(done));
      return;
  }
}

}  // namespace nodeward::proxy
