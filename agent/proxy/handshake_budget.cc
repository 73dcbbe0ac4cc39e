#include "agent/proxy/handshake_budget.h"

#include <utility>

namespace nodeward::proxy {

absl::string_view HandshakeBudget::RefusalName(Refusal refusal) {
  switch (refusal) {
    case Refusal::kAgentLimit:
      return "pending_limit";
    case Refusal::kSourceLimit:
      return "pending_per_source_limit";
  }
  return "pending_limit";
}

HandshakeBudget::Ticket& HandshakeBudget::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Release();
    shared_ = std::move(other.shared_);
    source_ = std::move(other.source_);
    deadline_ = other.deadline_;
    other.shared_ = nullptr;
  }
  return *this;
}

void HandshakeBudget::Ticket::Release() {
  std::shared_ptr<Shared> shared = std::exchange(shared_, nullptr);
  if (shared == nullptr) return;
  absl::MutexLock lock(&shared->mutex);
  --shared->pending;
  if (source_.has_value()) {
    auto it = shared->by_source.find(*source_);
    if (it != shared->by_source.end() && --it->second == 0) shared->by_source.erase(it);
  }
}

HandshakeBudget::HandshakeBudget(Options options)
    : options_(options), shared_(std::make_shared<Ticket::Shared>()) {}

std::optional<HandshakeBudget::Ticket> HandshakeBudget::TryAdmit(absl::Time now, Refusal* why) {
  return Admit(std::nullopt, now, why);
}

std::optional<HandshakeBudget::Ticket> HandshakeBudget::TryAdmit(const IpAddress& source,
                                                                 absl::Time now, Refusal* why) {
  return Admit(source, now, why);
}

std::optional<HandshakeBudget::Ticket> HandshakeBudget::Admit(
    const std::optional<IpAddress>& source, absl::Time now, Refusal* why) {
  absl::MutexLock lock(&shared_->mutex);
  if (shared_->pending >= options_.max_pending) {
    if (why != nullptr) *why = Refusal::kAgentLimit;
    return std::nullopt;
  }
  if (source.has_value()) {
    std::size_t& from_source = shared_->by_source[*source];
    if (options_.max_pending_per_source != 0 && from_source >= options_.max_pending_per_source) {
      if (why != nullptr) *why = Refusal::kSourceLimit;
      return std::nullopt;
    }
    ++from_source;
  }
  ++shared_->pending;
  return Ticket(shared_, source, now + options_.timeout);
}

std::size_t HandshakeBudget::pending() const {
  absl::MutexLock lock(&shared_->mutex);
  return shared_->pending;
}

std::size_t HandshakeBudget::pending_from(const IpAddress& source) const {
  absl::MutexLock lock(&shared_->mutex);
  auto it = shared_->by_source.find(source);
  return it == shared_->by_source.end() ? 0 : it->second;
}

}  // namespace nodeward::proxy
