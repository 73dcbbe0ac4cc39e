#include "agent/proxy/tunnel_pool.h"

#include <atomic>

#include "absl/strings/str_cat.h"

namespace nodeward::proxy {

std::string TunnelKey::ToString() const {
  return absl::StrCat("netns ", source_netns_cookie, " ", source.ToString(), " -> ",
                      destination.ToString(), " at ", address.ToString());
}

TunnelPool::TunnelPool() = default;

TunnelPool::~TunnelPool() = default;

void TunnelPool::Get(const TunnelKey& key, Dial dial, Waiter waiter) {
  if (auto pooled = tunnels_.find(key); pooled != tunnels_.end()) {
    for (const std::shared_ptr<HboneTunnel>& tunnel : pooled->second) {
      if (tunnel->AcceptsNewStreams()) {
        waiter(tunnel);
        return;
      }
    }
  }
  // Every pooled tunnel is full or going away: wait for a new one, dialled once per key.
  if (!dial && !dialling_.contains(key)) {
    waiter(absl::UnavailableError("every tunnel is full and there is no way to dial another"));
    return;
  }
  auto [pending, first] = dialling_.try_emplace(key);
  pending->second.push_back({std::move(dial), std::move(waiter)});
  if (!first) return;
  ++dials_;
  Dial start = std::move(pending->second.back().dial);
  std::weak_ptr<bool> alive = alive_;
  start(
      [this, alive, key](const absl::Status&) {
        if (!alive.expired()) ForgetClosed(key);
      },
      [this, alive, key](TunnelOrError tunnel) {
        if (!alive.expired()) Dialled(key, std::move(tunnel));
      });
}

void TunnelPool::Dialled(const TunnelKey& key, TunnelOrError tunnel) {
  std::vector<Pending> waiters;
  if (auto it = dialling_.find(key); it != dialling_.end()) {
    waiters = std::move(it->second);
    dialling_.erase(it);
  }
  if (!tunnel.ok()) {
    for (Pending& pending : waiters) pending.waiter(tunnel.status());
    return;
  }
  if (!(*tunnel)->closed()) {
    tunnels_[key].push_back(*tunnel);
    pooled_->fetch_add(1);
  }
  // In order; those beyond the new tunnel's stream limit queue for the next one.
  for (std::size_t i = 0; i < waiters.size(); ++i) {
    Pending& pending = waiters[i];
    if (!pending.dial) {
      // The first waiter's dial was the one used: a later dial, if one is needed, comes from
      // those behind it.
      for (std::size_t j = i + 1; j < waiters.size() && !pending.dial; ++j) {
        if (waiters[j].dial) pending.dial = std::move(waiters[j].dial);
      }
    }
    Get(key, std::move(pending.dial), std::move(pending.waiter));
  }
}

void TunnelPool::ForgetClosed(const TunnelKey& key) {
  auto it = tunnels_.find(key);
  if (it == tunnels_.end()) return;
  std::erase_if(it->second, [](const std::shared_ptr<HboneTunnel>& t) { return t->closed(); });
  if (it->second.empty()) tunnels_.erase(it);
  std::size_t count = 0;
  for (const auto& [unused, list] : tunnels_) count += list.size();
  pooled_->store(count);
}

void TunnelPool::ForEach(
    absl::FunctionRef<void(const TunnelKey&, const HboneTunnel&)> visit) const {
  for (const auto& [key, list] : tunnels_) {
    for (const std::shared_ptr<HboneTunnel>& tunnel : list) {
      if (!tunnel->closed()) visit(key, *tunnel);
    }
  }
}

void TunnelPool::DrainAll(absl::string_view reason) {
  std::vector<std::shared_ptr<HboneTunnel>> all;
  for (const auto& [key, list] : tunnels_) all.insert(all.end(), list.begin(), list.end());
  for (const std::shared_ptr<HboneTunnel>& tunnel : all) tunnel->Drain(reason);
}

}  // namespace nodeward::proxy
