// The agent's two plain-HTTP endpoints on the node's loopback: Prometheus metrics (15020,
// /metrics) and readiness (15021, /healthz/ready). GET only, one request per connection, served
// from a thread of their own so a slow scraper never touches the data plane.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/admin/admin_service.h"

namespace nodeward::admin {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpEndpoint {
 public:
  using Handler = std::function<HttpResponse(const std::string& path)>;
  // Listens on host:port (port 0 picks one; see port()).
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& host,
                                                             std::uint16_t port, Handler handler);
  ~HttpEndpoint();
  std::uint16_t port() const { return port_; }

 private:
  HttpEndpoint(int listen_fd, int wake_fd, std::uint16_t port, Handler handler);
  void Serve();
  void Answer(int fd);

  const int listen_fd_;
  const int wake_fd_;
  const std::uint16_t port_;
  Handler handler_;
  std::thread thread_;
};

// Whether a binary is ready to serve, and why not.
struct Readiness {
  bool ready = false;
  std::string detail;  // one line per part
};

// The usual pair: Prometheus text on metrics_host:metrics_port (/metrics, /stats/prometheus)
// and /healthz/ready (503 with the reasons until `ready` says so) and /healthz/live (200 while
// it answers at all: a missing SDS or configuration makes it unready, never restarted) on
// readiness_host:readiness_port. A port of 0 leaves that endpoint out.
struct ProbeEndpoints {
  std::string metrics_host;
  std::uint16_t metrics_port = 0;
  std::function<std::string()> metrics;
  std::string readiness_host;
  std::uint16_t readiness_port = 0;
  std::function<Readiness()> ready;
};
absl::StatusOr<std::vector<std::unique_ptr<HttpEndpoint>>> StartProbeEndpoints(
    const ProbeEndpoints& endpoints);

// Everything the agent exports to Prometheus, as text.
std::string RenderMetrics(const AgentView& view);

// The agent is ready when the capture programs, the SDS stream and the configuration are all
// live.
Readiness CheckReadiness(const AgentView& view);

}  // namespace nodeward::admin
