#include "agent/proxy/workers.h"

#include <thread>

namespace nodeward::proxy {

absl::StatusOr<std::vector<std::unique_ptr<Worker>>> StartWorkers(
    int count, const io::EventLoop::Options& loop) {
  if (count <= 0) count = static_cast<int>(std::thread::hardware_concurrency());
  if (count <= 0) count = 1;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>();
    absl::StatusOr<std::unique_ptr<io::LoopThread>> thread = io::LoopThread::Start(loop);
    if (!thread.ok()) return thread.status();
    worker->thread = *std::move(thread);
    worker->poster = std::make_shared<LoopPoster>(worker->thread.get());
    workers.push_back(std::move(worker));
  }
  return workers;
}

std::vector<LiveConnection> GatherConnections(const std::vector<std::unique_ptr<Worker>>& workers,
                                              absl::Duration timeout) {
  return GatherFromWorkers<LiveConnection>(
      workers,
      [](Worker& worker, std::vector<LiveConnection>& out) {
        const absl::Time now = absl::Now();
        for (Flow* flow : worker.flows) out.push_back({flow->Live(), now - flow->start()});
      },
      timeout);
}

void CutWorkers(const std::vector<std::unique_ptr<Worker>>& workers, const absl::Status& reason) {
  GatherFromWorkers<int>(
      workers,
      [reason](Worker& worker, std::vector<int>&) {
        std::vector<Flow*> flows(worker.flows.begin(), worker.flows.end());
        for (Flow* flow : flows) {
          if (worker.flows.contains(flow)) flow->Cut(reason);
        }
        std::vector<std::shared_ptr<HboneTunnel>> tunnels;
        worker.pool.ForEach([&](const TunnelKey&, const HboneTunnel& tunnel) {
          tunnels.push_back(std::const_pointer_cast<HboneTunnel>(tunnel.shared_from_this()));
        });
        for (const std::weak_ptr<HboneTunnel>& weak : worker.server_tunnels) {
          if (auto tunnel = weak.lock()) tunnels.push_back(tunnel);
        }
        for (const auto& tunnel : tunnels) tunnel->Close(reason);
      },
      absl::Seconds(2));
}

}  // namespace nodeward::proxy
