// The admin API (agent/admin/admin.proto) over what the agent holds: enrolled pods, the
// certificate cache, the policy snapshot, live connections and tunnels, the BPF maps.
// Read-only except SetLogLevel and Drain.
#pragma once

#include <string>
#include <vector>

#include "agent/admin/admin.grpc.pb.h"
#include "agent/capture/enrollment_manager.h"
#include "agent/capture/node_enroller.h"
#include "agent/proxy/data_plane.h"
#include "bpf/capture_dataplane.h"
#include "policy/source.h"
#include "sds/certificate_cache.h"

namespace nodeward::admin {

// What the service reads. Pointers may be null where the agent runs without that part
// (passthrough mode has no policy or certificates).
struct AgentView {
  std::string node_name;
  std::string trust_domain;
  capture::EnrollmentManager* enrollment = nullptr;
  capture::NodeEnroller* enroller = nullptr;  // null when the agent follows no pods itself
  absl::Time started = absl::Now();
  bpf::CaptureDataplane* dataplane = nullptr;
  std::string bpf_pin_path;
  std::vector<std::string> bpf_attached;  // programs and links, described
  policy::ConfigSource* config = nullptr;
  std::string config_description;
  sds::CertificateCache* certificates = nullptr;
  std::string sds_socket;
  proxy::DataPlane* data_plane = nullptr;
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(AgentView view) : view_(std::move(view)) {}

  grpc::Status ListWorkloads(grpc::ServerContext*, const v1::ListWorkloadsRequest*,
                             v1::ListWorkloadsResponse* response) override;
  grpc::Status ListCertificates(grpc::ServerContext*, const v1::ListCertificatesRequest*,
                                v1::ListCertificatesResponse* response) override;
  grpc::Status ExplainPolicy(grpc::ServerContext*, const v1::ExplainPolicyRequest* request,
                             v1::ExplainPolicyResponse* response) override;
  grpc::Status ListConnections(grpc::ServerContext*, const v1::ListConnectionsRequest*,
                               v1::ListConnectionsResponse* response) override;
  grpc::Status ListTunnels(grpc::ServerContext*, const v1::ListTunnelsRequest*,
                           v1::ListTunnelsResponse* response) override;
  grpc::Status DumpBpf(grpc::ServerContext*, const v1::DumpBpfRequest*,
                       v1::DumpBpfResponse* response) override;
  grpc::Status DumpConfig(grpc::ServerContext*, const v1::DumpConfigRequest*,
                          v1::DumpConfigResponse* response) override;
  grpc::Status SetLogLevel(grpc::ServerContext*, const v1::SetLogLevelRequest* request,
                           v1::SetLogLevelResponse* response) override;
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                     v1::DrainResponse* response) override;

 private:
  const AgentView view_;
};

// RFC 3339 in UTC; empty for the infinite past/future ("never").
std::string Rfc3339(absl::Time time);

// What the admin API says of an outbound decision (the agent's and the gateway's upstream).
void FillOutboundExplanation(const policy::Snapshot& snapshot,
                             const policy::OutboundDecision& decision,
                             v1::ExplainPolicyResponse* response);
void FillTrace(const policy::Trace& trace, v1::PolicyTrace* out);
// SetLogLevel's and Drain's common parts: the level applied (or why not), the grace asked.
grpc::Status ApplyLogLevel(const v1::SetLogLevelRequest& request,
                           v1::SetLogLevelResponse* response);
absl::Duration DrainGrace(const v1::DrainRequest& request);
// One live connection, and all of them oldest first, for ListConnections.
void FillConnection(const proxy::AccessRecord& record, absl::Duration age, v1::Connection* out);
void FillConnections(const std::vector<proxy::LiveConnection>& connections,
                     v1::ListConnectionsResponse* response);

}  // namespace nodeward::admin
