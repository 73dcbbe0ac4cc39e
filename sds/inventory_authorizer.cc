#include "sds/inventory_authorizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "sds/log.h"

namespace nodeward::sds {

absl::flat_hash_set<SpiffeId> IdentitiesScheduledOn(const policy::Snapshot& snapshot,
                                                    absl::string_view node_name,
                                                    absl::string_view trust_domain) {
  absl::flat_hash_set<SpiffeId> identities;
  for (const policy::Pod& pod : snapshot.resources().pods) {
    if (pod.node_name != node_name || pod.phase == "Succeeded" || pod.phase == "Failed") continue;
    absl::StatusOr<SpiffeId> id =
        SpiffeId::Make(std::string_view(trust_domain.data(), trust_domain.size()), pod.meta.ns,
                       pod.service_account);
    if (id.ok()) identities.insert(*std::move(id));
  }
  return identities;
}

InventoryAuthorizer::InventoryAuthorizer(policy::ConfigSource* source, std::string node_name,
                                         std::string trust_domain, IdentityAuthorizer* fallback)
    : source_(source),
      node_name_(std::move(node_name)),
      trust_domain_(std::move(trust_domain)),
      fallback_(fallback) {
  subscription_ = source_->Subscribe([this](std::shared_ptr<const policy::Snapshot> snapshot) {
    if (snapshot != nullptr) Update(*snapshot);
  });
}

InventoryAuthorizer::~InventoryAuthorizer() { source_->Unsubscribe(subscription_); }

void InventoryAuthorizer::Update(const policy::Snapshot& snapshot) {
  absl::flat_hash_set<SpiffeId> allowed =
      IdentitiesScheduledOn(snapshot, node_name_, trust_domain_);
  const std::size_t count = allowed.size();
  {
    absl::MutexLock lock(&mu_);
    allowed_ = std::move(allowed);
    generation_ = snapshot.generation();
    loaded_ = true;
  }
  LogInfo("inventory generation ", snapshot.generation(), ": ", count,
          " identities scheduled on node ", node_name_);
}

absl::Status InventoryAuthorizer::Authorize(const SpiffeId& identity) {
  std::string refusal;
  {
    absl::MutexLock lock(&mu_);
    if (allowed_.contains(identity)) return absl::OkStatus();
    refusal = loaded_
                  ? absl::StrCat("identity ", identity.ToString(), " has no pod scheduled on node ",
                                 node_name_, " (inventory generation ", generation_, ")")
                  : absl::StrCat("identity ", identity.ToString(),
                                 " refused: the workload inventory has not loaded yet");
  }
  if (fallback_ != nullptr && fallback_->Authorize(identity).ok()) return absl::OkStatus();
  return absl::PermissionDeniedError(refusal);
}

}  // namespace nodeward::sds
