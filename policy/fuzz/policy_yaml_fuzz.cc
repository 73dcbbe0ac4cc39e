// Feeds arbitrary bytes to the YAML loader and, when they parse, to the snapshot builder and a
// few decisions: none of it may crash on untrusted configuration.
#include <cstddef>
#include <cstdint>
#include <string>

#include "policy/decisions.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nodeward::policy;
  using nodeward::IpAddress;
  using nodeward::SpiffeId;
  ResourceSet set;
  std::string text(reinterpret_cast<const char*>(data), size);
  if (!AppendYamlResources(text, "fuzz.yaml", set).ok()) return 0;
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(set, {});
  if (!snapshot.ok()) return 0;
  const Snapshot& view = **snapshot;
  for (const Pod& pod : view.resources().pods) {
    ResolveEnrollment(view, pod);
    for (const ContainerPort& port : pod.ports) {
      DecideInbound(view, pod, port.container_port, InboundTransport::kPlaintext);
      // As each other pod would arrive: mTLS with its identity from its address, and with an
      // SNI; AuthorizationPolicies see every attribute.
      for (const Pod& client : view.resources().pods) {
        InboundConnection connection;
        connection.transport = InboundTransport::kMtls;
        if (absl::StatusOr<SpiffeId> id = WorkloadIdentity(view, client); id.ok()) {
          connection.peer_identity = *std::move(id);
        }
        if (!client.ips.empty()) connection.source_ip = client.ips.front();
        if (!pod.ips.empty()) connection.destination_ip = pod.ips.front();
        connection.port = port.container_port;
        connection.sni = client.meta.name;
        DecideInbound(view, pod, connection);
      }
    }
    for (const Service& service : view.resources().services) {
      for (const IpAddress& ip : service.cluster_ips) {
        for (const ServicePort& port : service.ports) DecideOutbound(view, pod, ip, port.port, 7);
      }
    }
    for (const Pod& other : view.resources().pods) {
      for (const IpAddress& ip : other.ips) DecideOutbound(view, pod, ip, 80);
    }
  }
  return 0;
}
