#include "agent/admin/http_endpoints.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/proxy/traffic_metrics.h"

namespace nodeward::admin {
namespace {

constexpr std::size_t kMaxRequestBytes = 8192;

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 503:
      return "Service Unavailable";
    default:
      return "Bad Request";
  }
}

void WriteAll(int fd, const std::string& data) {
  std::size_t offset = 0;
  while (offset < data.size()) {
    ssize_t n = send(fd, data.data() + offset, data.size() - offset, MSG_NOSIGNAL);
    if (n <= 0) return;
    offset += static_cast<std::size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& host,
                                                                  std::uint16_t port,
                                                                  Handler handler) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", host));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("listen on ", host, ":", port, ": ", std::strerror(error)));
  }
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<HttpEndpoint> endpoint(
      new HttpEndpoint(fd, wake, ntohs(address.sin_port), std::move(handler)));
  endpoint->thread_ = std::thread([raw = endpoint.get()] { raw->Serve(); });
  return endpoint;
}

HttpEndpoint::HttpEndpoint(int listen_fd, int wake_fd, std::uint16_t port, Handler handler)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port), handler_(std::move(handler)) {}

HttpEndpoint::~HttpEndpoint() {
  std::uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(wake_fd_);
}

void HttpEndpoint::Serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Answer(fd);
    close(fd);
  }
}

void HttpEndpoint::Answer(int fd) {
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buffer[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    request.append(buffer, static_cast<std::size_t>(n));
  }
  const std::string line = request.substr(0, request.find("\r\n"));
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  HttpResponse response;
  if (parts.size() != 3 || !parts[2].starts_with("HTTP/1.")) {
    response = {400, "text/plain; charset=utf-8", "malformed request\n"};
  } else if (parts[0] != "GET" && parts[0] != "HEAD") {
    response = {405, "text/plain; charset=utf-8", "only GET\n"};
  } else {
    response = handler_(parts[1].substr(0, parts[1].find('?')));
  }
  std::string head =
      absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status),
                   "\r\nContent-Type: ", response.content_type,
                   "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n\r\n");
  WriteAll(fd, parts.size() == 3 && parts[0] == "HEAD" ? head : head + response.body);
}

std::string RenderMetrics(const AgentView& view) {
  std::string out;
  if (view.data_plane != nullptr) {
    view.data_plane->metrics().Render(out);
    proxy::AppendMetricHeader(out, "nodeward_connections_active", "gauge",
                              "Application connections being carried now");
    absl::StrAppend(&out, "nodeward_connections_active ", view.data_plane->live_connections(),
                    "\n");
    proxy::AppendMetricHeader(out, "nodeward_tunnels_pooled", "gauge",
                              "Outbound HBONE tunnels in the pools");
    absl::StrAppend(&out, "nodeward_tunnels_pooled ", view.data_plane->pooled_tunnels(), "\n");
    proxy::AppendMetricHeader(out, "nodeward_handshakes_pending", "gauge",
                              "HBONE connections still in their TLS handshake");
    absl::StrAppend(&out, "nodeward_handshakes_pending ", view.data_plane->pending_handshakes(),
                    "\n");
    proxy::AppendMetricHeader(out, "nodeward_loop_pending_operations", "gauge",
                              "io_uring operations in flight per worker loop (saturation)");
    std::vector<std::size_t> pending = view.data_plane->LoopPendingOperations(absl::Seconds(1));
    for (std::size_t i = 0; i < pending.size(); ++i) {
      absl::StrAppend(&out, "nodeward_loop_pending_operations{loop=\"", i, "\"} ", pending[i],
                      "\n");
    }
  }
  if (view.enroller != nullptr) {
    proxy::AppendMetricHeader(out, "nodeward_enrollment_failures_total", "counter",
                              "Failed attempts to enroll a pod, by how it was being enrolled");
    for (const auto& [origin, count] : view.enroller->FailureCounts()) {
      absl::StrAppend(&out, "nodeward_enrollment_failures_total",
                      proxy::PrometheusLabels({{"origin", origin}}), " ", count, "\n");
    }
    proxy::AppendMetricHeader(out, "nodeward_pods_not_enrolled", "gauge",
                              "Pods of this node that should be enrolled and are not");
    absl::StrAppend(&out, "nodeward_pods_not_enrolled ", view.enroller->Gaps().size(), "\n");
  }
  if (view.certificates != nullptr) {
    proxy::AppendMetricHeader(out, "nodeward_certificate_expiry_timestamp_seconds", "gauge",
                              "When each identity's current certificate expires (Unix time)");
    for (const sds::IdentityStatus& status : view.certificates->Status()) {
      if (status.not_after == absl::InfinitePast()) continue;
      absl::StrAppend(&out, "nodeward_certificate_expiry_timestamp_seconds",
                      proxy::PrometheusLabels({{"identity", status.identity.ToString()}}), " ",
                      absl::ToUnixSeconds(status.not_after), "\n");
    }
    proxy::AppendMetricHeader(out, "nodeward_certificate_errors", "gauge",
                              "Identities whose last SDS update failed or was refused");
    int errors = 0;
    for (const sds::IdentityStatus& status : view.certificates->Status()) {
      if (!status.last_error.empty()) ++errors;
    }
    absl::StrAppend(&out, "nodeward_certificate_errors ", errors, "\n");
    proxy::AppendMetricHeader(out, "nodeward_sds_rejected_secrets_total", "counter",
                              "Pushed secrets that failed validation and were NACKed");
    absl::StrAppend(&out, "nodeward_sds_rejected_secrets_total ",
                    view.certificates->rejected_secrets(), "\n");
    proxy::AppendMetricHeader(out, "nodeward_sds_connected", "gauge",
                              "1 while the SDS stream to nodeward-sds is up");
    absl::StrAppend(&out, "nodeward_sds_connected ", view.certificates->sds_connected() ? 1 : 0,
                    "\n");
  }
  if (view.enrollment != nullptr) {
    proxy::AppendMetricHeader(out, "nodeward_enrolled_pods", "gauge", "Pods enrolled here");
    absl::StrAppend(&out, "nodeward_enrolled_pods ", view.enrollment->List().size(), "\n");
  }
  if (view.config != nullptr) {
    const policy::SourceStatus status = view.config->Status();
    proxy::AppendMetricHeader(out, "nodeward_config_last_load_ok", "gauge",
                              "1 when the last configuration load succeeded");
    absl::StrAppend(&out, "nodeward_config_last_load_ok ", status.last_error.ok() ? 1 : 0, "\n");
    if (auto snapshot = view.config->Current()) {
      proxy::AppendMetricHeader(out, "nodeward_config_generation", "gauge",
                                "Generation of the configuration in use");
      absl::StrAppend(&out, "nodeward_config_generation ", snapshot->generation(), "\n");
    }
  }
  return out;
}

Readiness CheckReadiness(const AgentView& view) {
  Readiness readiness;
  bool ready = true;
  if (view.dataplane == nullptr || !view.dataplane->Snapshot().ok()) {
    ready = false;
    absl::StrAppend(&readiness.detail, "bpf: not loaded\n");
  } else {
    absl::StrAppend(&readiness.detail, "bpf: ok\n");
  }
  if (view.certificates != nullptr) {
    const bool connected = view.certificates->sds_connected();
    ready = ready && connected;
    absl::StrAppend(&readiness.detail,
                    "sds: ", connected ? "ok" : absl::StrCat("not connected to ", view.sds_socket),
                    "\n");
  }
  if (view.config != nullptr) {
    const bool loaded = view.config->Current() != nullptr;
    ready = ready && loaded;
    absl::StrAppend(&readiness.detail, "config: ", loaded ? "ok" : "not loaded", "\n");
  }
  if (view.enroller != nullptr) {
    // Ready once this node's pods have been looked at: a rolling update moves on only after the
    // new agent has taken the running pods back.
    const bool synced = view.enroller->LastReconcile() != absl::InfinitePast();
    ready = ready && synced;
    absl::StrAppend(&readiness.detail, "pods: ", synced ? "ok" : "not reconciled yet", "\n");
  }
  readiness.ready = ready;
  return readiness;
}

absl::StatusOr<std::vector<std::unique_ptr<HttpEndpoint>>> StartProbeEndpoints(
    const ProbeEndpoints& endpoints) {
  std::vector<std::unique_ptr<HttpEndpoint>> started;
  if (endpoints.metrics_port != 0) {
    absl::StatusOr<std::unique_ptr<HttpEndpoint>> metrics = HttpEndpoint::Start(
        endpoints.metrics_host, endpoints.metrics_port,
        [render = endpoints.metrics](const std::string& path) {
          if (path != "/metrics" && path != "/stats/prometheus") {
            return HttpResponse{404, "text/plain; charset=utf-8", "try /metrics\n"};
          }
          return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", render()};
        });
    if (!metrics.ok()) {
      return absl::Status(metrics.status().code(),
                          absl::StrCat("metrics: ", metrics.status().message()));
    }
    started.push_back(*std::move(metrics));
  }
  if (endpoints.readiness_port != 0) {
    absl::StatusOr<std::unique_ptr<HttpEndpoint>> readiness = HttpEndpoint::Start(
        endpoints.readiness_host, endpoints.readiness_port,
        [ready = endpoints.ready](const std::string& path) {
          if (path == "/healthz/live") {
            return HttpResponse{200, "text/plain; charset=utf-8", "live\n"};
          }
          if (path != "/healthz/ready") {
            return HttpResponse{404, "text/plain; charset=utf-8", "try /healthz/ready\n"};
          }
          Readiness now = ready();
          return HttpResponse{now.ready ? 200 : 503, "text/plain; charset=utf-8", now.detail};
        });
    if (!readiness.ok()) {
      return absl::Status(readiness.status().code(),
                          absl::StrCat("readiness: ", readiness.status().message()));
    }
    started.push_back(*std::move(readiness));
  }
  return started;
}

}  // namespace nodeward::admin
