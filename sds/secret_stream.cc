#include "sds/secret_stream.h"

#include <utility>
#include <variant>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/status.pb.h"
#include "sds/log.h"

namespace nodeward::sds {
namespace {

// Responses not answered yet that a stream remembers; a client that never answers costs no
// more than this.
constexpr std::size_t kMaxUnanswered = 256;
// Distinct names refused before subscription that a stream remembers, not to log them again.
constexpr std::size_t kMaxRejectedRemembered = 1024;

}  // namespace

const char* ResourceErrorName(ResourceError error) {
  switch (error) {
    case ResourceError::kInvalidName:
      return "invalid_name";
    case ResourceError::kRefused:
      return "refused";
    case ResourceError::kUnknownCaller:
      return "unknown_caller";
    case ResourceError::kOutsideScope:
      return "outside_scope";
    case ResourceError::kTooManyNames:
      return "too_many_names";
  }
  return "unknown";
}

ResolvedName ResolveName(absl::string_view name, const SdsCaller& caller,
                         IdentityAuthorizer& authorizer) {
  ResolvedName out;
  absl::StatusOr<ResourceName> parsed = ParseResourceName(name);
  if (!parsed.ok()) {
    out.error = NameError{ResourceError::kInvalidName, parsed.status()};
    return out;
  }
  if (std::holds_alternative<RootCaResource>(*parsed)) {
    out.bundle = true;
    return out;
  }
  if (std::holds_alternative<DefaultResource>(*parsed)) {
    if (!caller.workload.has_value()) {
      out.error = NameError{
          ResourceError::kUnknownCaller,
          absl::PermissionDeniedError(absl::StrCat(
              "\"default\" is the caller's own workload certificate, and the caller (",
              caller.Describe(),
              ") is not known to run in a pod of this node: ", caller.unattributed_reason))};
      return out;
    }
    out.identity = *caller.workload;
  } else {
    out.identity = std::get<SpiffeId>(*std::move(parsed));
    if (caller.scope == CallerScope::kWorkload && out.identity != caller.workload) {
      out.error =
          NameError{ResourceError::kOutsideScope,
                    absl::PermissionDeniedError(absl::StrCat(
                        "a caller on the workload socket holds only its own identity (",
                        caller.workload.has_value() ? caller.workload->ToString() : "unknown",
                        "), not ", out.identity->ToString()))};
      return out;
    }
  }
  if (absl::Status allowed = authorizer.Authorize(*out.identity); !allowed.ok()) {
    out.error = NameError{ResourceError::kRefused, std::move(allowed)};
  }
  return out;
}

SecretStream::SecretStream(Variant variant, IdentityManager* manager,
                           IdentityAuthorizer* authorizer, SdsCaller caller, SdsCounters* counters,
                           WorkloadResolver* resolver)
    : variant_(variant),
      manager_(manager),
      authorizer_(authorizer),
      caller_(std::move(caller)),
      counters_(counters),
      resolver_(resolver) {}

SecretStream::~SecretStream() {
  for (auto& [name, subscription] : subscriptions_) Release(subscription);
}

void SecretStream::Replace(const std::vector<std::string>& names) {
  absl::flat_hash_set<absl::string_view> wanted(names.begin(), names.end());
  std::vector<std::string> gone;
  for (const auto& [name, subscription] : subscriptions_) {
    if (!wanted.contains(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) Remove(name);
  for (const std::string& name : names) {
    if (!subscriptions_.contains(name)) Add(name);
  }
}

void SecretStream::Subscribe(const std::vector<std::string>& names,
                             const std::vector<std::pair<std::string, std::string>>& known) {
  for (const std::string& name : names) {
    auto it = subscriptions_.find(name);
    if (it == subscriptions_.end()) {
      Add(name);
      continue;
    }
    // Asked again: sent again, even unchanged (the client may have dropped it meanwhile).
    it->second.sent_version.clear();
    it->second.absence_sent = false;
    Enqueue(name);
  }
  for (const auto& [name, version] : known) {
    if (auto it = subscriptions_.find(name); it != subscriptions_.end()) {
      it->second.sent_version = version;
    }
  }
}

void SecretStream::Unsubscribe(const std::vector<std::string>& names) {
  for (const std::string& name : names) Remove(name);
}

void SecretStream::Add(const std::string& name) {
  if (name.size() > kMaxResourceNameBytes || subscriptions_.size() >= kMaxNames) {
    const bool too_long = name.size() > kMaxResourceNameBytes;
    if (rejected_.size() < kMaxRejectedRemembered && rejected_.insert(absl::HashOf(name)).second) {
      const ResourceError kind =
          too_long ? ResourceError::kInvalidName : ResourceError::kTooManyNames;
      counters_->Count(kind);
      LogWarning("SDS: not serving \"", Echo(name), "\" to ", caller_.Describe(), client_, ": ",
                 too_long ? absl::StrCat("longer than ", kMaxResourceNameBytes, " bytes")
                          : absl::StrCat("a stream holds at most ", kMaxNames, " names"));
    }
    return;
  }
  auto [it, inserted] = subscriptions_.emplace(name, Subscription{});
  Subscription& subscription = it->second;
  subscription.resolved = ResolveName(name, caller_, *authorizer_);
  if (subscription.resolved.error.has_value()) {
    NameError error = *subscription.resolved.error;
    subscription.resolved.error.reset();
    Fail(name, subscription, std::move(error));
  } else {
    Retain(subscription);
  }
  Enqueue(name);
}

void SecretStream::Remove(const std::string& name) {
  auto it = subscriptions_.find(name);
  if (it == subscriptions_.end()) return;
  Release(it->second);
  subscriptions_.erase(it);
  pending_set_.erase(name);
}

void SecretStream::Enqueue(const std::string& name) {
  if (!pending_set_.insert(name).second) return;
  if (name == kRootCaResourceName) {
    pending_.push_front(name);
  } else {
    pending_.push_back(name);
  }
}

void SecretStream::Fail(const std::string& name, Subscription& subscription, NameError error) {
  Release(subscription);
  const bool news =
      !subscription.resolved.error.has_value() || subscription.resolved.error->kind != error.kind;
  if (news) {
    counters_->Count(error.kind);
    LogWarning("SDS: not serving \"", Echo(name), "\" to ", caller_.Describe(), client_, ": ",
               error.status.message());
  }
  subscription.resolved.error = std::move(error);
}

void SecretStream::Retain(Subscription& subscription) {
  if (subscription.retained || !subscription.resolved.identity.has_value()) return;
  manager_->Retain(*subscription.resolved.identity);
  subscription.retained = true;
}

void SecretStream::Release(Subscription& subscription) {
  if (!subscription.retained) return;
  manager_->Release(*subscription.resolved.identity);
  subscription.retained = false;
}

void SecretStream::Acknowledge(absl::string_view nonce, const google::rpc::Status* error) {
  if (nonce.empty()) return;
  auto it = unanswered_.find(nonce);
  if (it == unanswered_.end()) return;  // stale, or from an earlier stream
  auto [name, version] = std::move(it->second);
  unanswered_.erase(it);
  if (error == nullptr || error->code() == 0) return;
  counters_->nacks.fetch_add(1, std::memory_order_relaxed);
  if (auto found = subscriptions_.find(name); found != subscriptions_.end()) {
    found->second.nacked_version = version;
  }
  LogWarning("SDS: NACK from ", caller_.Describe(), client_, " for ", Echo(name), " version ",
             version, ": code ", error->code(), " ", Echo(error->message()),
             "; not sending this version again");
}

void SecretStream::CertificateChanged(const SpiffeId& identity) {
  for (const auto& [name, subscription] : subscriptions_) {
    if (!subscription.resolved.error.has_value() && subscription.resolved.identity == identity) {
      Enqueue(name);
    }
  }
}

void SecretStream::BundleChanged() {
  if (subscriptions_.contains(kRootCaResourceName)) Enqueue(std::string(kRootCaResourceName));
}

void SecretStream::Recheck() {
  bool unattributed = false;
  for (const auto& [name, subscription] : subscriptions_) {
    const std::optional<NameError>& error = subscription.resolved.error;
    if (error.has_value() && error->kind == ResourceError::kUnknownCaller) unattributed = true;
  }
  if (unattributed && resolver_ != nullptr && !caller_.workload.has_value()) {
    absl::StatusOr<WorkloadResolver::Workload> workload = resolver_->WorkloadOf(caller_.peer);
    if (workload.ok()) {
      caller_.workload = workload->identity;
      caller_.pod = workload->pod;
    } else {
      caller_.unattributed_reason = std::string(workload.status().message());
    }
  }
  for (auto& [name, subscription] : subscriptions_) {
    const std::optional<NameError>& error = subscription.resolved.error;
    if (!error.has_value() ||
        (error->kind != ResourceError::kRefused && error->kind != ResourceError::kUnknownCaller)) {
      continue;
    }
    ResolvedName resolved = ResolveName(name, caller_, *authorizer_);
    if (resolved.error.has_value()) continue;
    subscription.resolved = std::move(resolved);
    subscription.absence_sent = false;
    Retain(subscription);
    LogInfo("SDS: now serving \"", Echo(name), "\" to ", caller_.Describe(), client_);
    Enqueue(name);
  }
}

std::optional<SecretUpdate> SecretStream::Current(const std::string& name,
                                                  Subscription& subscription) {
  SecretUpdate update{name, {}, std::nullopt};
  if (subscription.resolved.bundle) {
    std::shared_ptr<const TrustBundleSnapshot> bundle = manager_->Bundle();
    if (bundle == nullptr) return std::nullopt;
    update.version = bundle->version;
    if (update.version == subscription.sent_version ||
        update.version == subscription.nacked_version) {
      return std::nullopt;
    }
    update.secret = MakeValidationContextSecret(bundle->roots_pem);
    return update;
  }
  const SpiffeId& identity = *subscription.resolved.identity;
  std::shared_ptr<const IssuedIdentity> issued = manager_->Current(identity);
  if (issued == nullptr) return std::nullopt;
  if (issued->version == subscription.sent_version ||
      issued->version == subscription.nacked_version) {
    return std::nullopt;
  }
  // Checked again before every push: an identity withdrawn from this node gets no new
  // certificate, and the one the client holds runs out.
  if (absl::Status allowed = authorizer_->Authorize(identity); !allowed.ok()) {
    Fail(name, subscription, NameError{ResourceError::kRefused, std::move(allowed)});
    if (variant_ == Variant::kDelta) Enqueue(name);
    return std::nullopt;
  }
  update.version = issued->version;
  update.secret = MakeTlsCertificateSecret(name, issued->credentials.cert_chain_pem,
                                           issued->credentials.private_key_pem);
  return update;
}

std::optional<SecretUpdate> SecretStream::Next(const std::string& nonce) {
  while (!pending_.empty()) {
    std::string name = std::move(pending_.front());
    pending_.pop_front();
    pending_set_.erase(name);
    auto it = subscriptions_.find(name);
    if (it == subscriptions_.end()) continue;
    Subscription& subscription = it->second;
    std::optional<SecretUpdate> update;
    if (subscription.resolved.error.has_value()) {
      if (variant_ != Variant::kDelta || subscription.absence_sent) continue;
      subscription.absence_sent = true;
      subscription.sent_version.clear();
      return SecretUpdate{name, {}, std::nullopt};
    }
    if (!subscription.resolved.bundle) {
      auto root = subscriptions_.find(kRootCaResourceName);
      if (root != subscriptions_.end() && !root->second.resolved.error.has_value()) {
        update = Current(root->first, root->second);
        // The certificate waits for the bundle it needs to go first.
        if (update.has_value()) Enqueue(name);
      }
    }
    if (!update.has_value()) update = Current(name, subscription);
    if (!update.has_value()) continue;
    Subscription& sent = subscriptions_.find(update->name)->second;
    sent.sent_version = update->version;
    if (unanswered_.size() >= kMaxUnanswered) unanswered_.erase(unanswered_.begin());
    unanswered_[nonce] = {update->name, update->version};
    return update;
  }
  return std::nullopt;
}

}  // namespace nodeward::sds
