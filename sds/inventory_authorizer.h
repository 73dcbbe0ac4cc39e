// Authorisation from the cluster's workload inventory, the same configuration source the agent
// decides with: a node may hold the identity of a service account only while a pod of that
// service account is scheduled on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/spiffe_id.h"
#include "policy/snapshot.h"
#include "policy/source.h"
#include "sds/authorizer.h"

namespace nodeward::sds {

// The identities of the pods scheduled on `node_name` that may still run (not Succeeded or
// Failed), in `trust_domain`. Pods whose namespace or service account make no valid SPIFFE ID
// are left out.
absl::flat_hash_set<SpiffeId> IdentitiesScheduledOn(const policy::Snapshot& snapshot,
                                                    absl::string_view node_name,
                                                    absl::string_view trust_domain);

class InventoryAuthorizer : public IdentityAuthorizer {
 public:
  // `source` must outlive this. `fallback` (may be null) is asked when the inventory refuses:
  // an allow-list for identities that have no pod on the node.
  InventoryAuthorizer(policy::ConfigSource* source, std::string node_name, std::string trust_domain,
                      IdentityAuthorizer* fallback);
  ~InventoryAuthorizer() override;
  InventoryAuthorizer(const InventoryAuthorizer&) = delete;
  InventoryAuthorizer& operator=(const InventoryAuthorizer&) = delete;

  absl::Status Authorize(const SpiffeId& identity) override;

 private:
  void Update(const policy::Snapshot& snapshot);

  policy::ConfigSource* const source_;
  const std::string node_name_;
  const std::string trust_domain_;
  IdentityAuthorizer* const fallback_;
  absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<SpiffeId> allowed_ ABSL_GUARDED_BY(mu_);
  std::uint64_t subscription_ = 0;
};

}  // namespace nodeward::sds
