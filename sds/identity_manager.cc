#include "sds/identity_manager.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/keys.h"
#include "sds/log.h"

namespace nodeward::sds {
namespace {

enum class DueAction { kIssue, kWait, kErased };

}  // namespace

IdentityManager::IdentityManager(std::shared_ptr<CertificateSigner> signer,
                                 IdentityManagerOptions options)
    : signer_(std::move(signer)), options_(std::move(options)) {
  if (std::optional<std::string> roots = signer_->KnownRoots(); roots.has_value()) {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> bundle =
        UpdateRootsLocked(*roots, absl::Now());
    if (!bundle.ok()) LogError("CA roots unusable: ", bundle.status().message());
  }
  int threads = std::max(1, options_.issuing_threads);
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

IdentityManager::~IdentityManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_available_.SignalAll();
  }
  for (std::thread& worker : workers_) worker.join();
}

void IdentityManager::AddObserver(Observer* observer) {
  absl::MutexLock lock(&observers_mu_);
  observers_.push_back(observer);
}

void IdentityManager::RemoveObserver(Observer* observer) {
  absl::MutexLock lock(&observers_mu_);
  observers_.erase(std::remove(observers_.begin(), observers_.end(), observer), observers_.end());
}

void IdentityManager::Publish(const Publication& publication) {
  if (publication.bundle == nullptr && publication.certificate == nullptr &&
      !publication.failure.has_value()) {
    return;
  }
  absl::MutexLock lock(&observers_mu_);
  for (Observer* observer : observers_) {
    if (publication.bundle != nullptr) observer->OnTrustBundle(publication.bundle);
    if (publication.certificate != nullptr) observer->OnCertificate(publication.certificate);
    if (publication.failure.has_value()) {
      observer->OnIssueFailed(publication.failure->first, publication.failure->second);
    }
  }
}

void IdentityManager::ScheduleLocked(Entry& entry, absl::Time when) {
  if (entry.in_flight) return;  // the worker reschedules it when the attempt ends
  std::string key = entry.identity.ToString();
  if (entry.scheduled.has_value()) schedule_.erase({*entry.scheduled, key});
  schedule_.insert({when, std::move(key)});
  entry.scheduled = when;
  work_available_.SignalAll();
}

void IdentityManager::Retain(const SpiffeId& identity) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Entry>& slot = entries_[identity.ToString()];
  if (slot == nullptr) slot = std::make_unique<Entry>(identity, options_.retry);
  Entry& entry = *slot;
  ++entry.refs;
  entry.idle_deadline = absl::InfiniteFuture();
  if (entry.refs == 1) ScheduleLocked(entry, absl::Now());
}

void IdentityManager::Release(const SpiffeId& identity) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(identity.ToString());
  if (it == entries_.end() || it->second->refs == 0) return;
  Entry& entry = *it->second;
  if (--entry.refs == 0) {
    entry.idle_deadline = absl::Now() + options_.idle_grace;
    ScheduleLocked(entry, absl::Now());
  }
}

std::shared_ptr<const IssuedIdentity> IdentityManager::Current(const SpiffeId& identity) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(identity.ToString());
  if (it == entries_.end() || it->second->current == nullptr) return nullptr;
  if (absl::Now() >= it->second->current->leaf.not_after) return nullptr;
  return it->second->current;
}

std::shared_ptr<const TrustBundleSnapshot> IdentityManager::Bundle() const {
  absl::MutexLock lock(&mu_);
  return bundle_;
}

absl::StatusOr<std::shared_ptr<const IssuedIdentity>> IdentityManager::WaitForCertificate(
    const SpiffeId& identity, absl::Time deadline) {
  const std::string key = identity.ToString();
  absl::MutexLock lock(&mu_);
  auto settled = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (stopping_) return true;
    auto it = entries_.find(key);
    if (it == entries_.end()) return true;
    const Entry& entry = *it->second;
    return (entry.current != nullptr && absl::Now() < entry.current->leaf.not_after) ||
           entry.failed_attempts > 0;
  };
  mu_.AwaitWithDeadline(absl::Condition(&settled), deadline);
  if (stopping_) return absl::UnavailableError("shutting down");
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(key, " is not being managed"));
  }
  const Entry& entry = *it->second;
  if (entry.current != nullptr && absl::Now() < entry.current->leaf.not_after) {
    return entry.current;
  }
  if (!entry.last_error.ok()) {
    return absl::Status(entry.last_error.code(),
                        absl::StrCat("issuing ", key, ": ", entry.last_error.message()));
  }
  return absl::DeadlineExceededError(absl::StrCat("no certificate for ", key, " yet"));
}

absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> IdentityManager::WaitForBundle(
    absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto known = [this]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || bundle_ != nullptr; };
  mu_.AwaitWithDeadline(absl::Condition(&known), deadline);
  if (bundle_ == nullptr) {
    return absl::DeadlineExceededError("the CA's roots are not known yet");
  }
  return bundle_;
}

absl::Status IdentityManager::ReloadSigner() {
  absl::StatusOr<bool> changed = signer_->Reload();
  if (!changed.ok()) return changed.status();
  if (!*changed) return absl::OkStatus();
  return OnSignerChanged();
}

absl::Status IdentityManager::OnSignerChanged() {
  std::optional<std::string> roots = signer_->KnownRoots();
  Publication publication;
  {
    absl::MutexLock lock(&mu_);
    if (roots.has_value()) {
      absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> bundle =
          UpdateRootsLocked(*roots, absl::Now());
      if (!bundle.ok()) return bundle.status();
      publication.bundle = *bundle;
    }
    // Same root but a new signing key (an intermediate change) still calls for new leaves.
    if (publication.bundle == nullptr) RequestReissueOfAllLocked(absl::Now());
  }
  LogInfo("CA changed: ", publication.bundle != nullptr ? "new trust bundle published, " : "",
          "re-issuing every identity");
  Publish(publication);
  return absl::OkStatus();
}

void IdentityManager::RequestReissueOfAllLocked(absl::Time now) {
  for (auto& [key, entry] : entries_) {
    entry->reissue_requested = true;
    absl::Duration delay = options_.reissue_spread * absl::Uniform(random_, 0.0, 1.0);
    ScheduleLocked(*entry, now + delay);
  }
}

absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> IdentityManager::UpdateRootsLocked(
    const std::string& roots_pem, absl::Time now) {
  absl::StatusOr<std::vector<std::string>> split = crypto::SplitPemCertificates(roots_pem);
  if (!split.ok()) return split.status();
  RootSet fresh;
  for (std::string& pem : *split) {
    absl::StatusOr<crypto::CertificateInfo> info = crypto::InspectCertificate(pem);
    if (!info.ok()) return info.status();
    fresh.fingerprint_and_pem.emplace_back(info->sha256_fingerprint_hex, std::move(pem));
  }
  std::sort(fresh.fingerprint_and_pem.begin(), fresh.fingerprint_and_pem.end());
  auto fingerprints = [](const RootSet& set) {
    std::vector<std::string> out;
    for (const auto& [fingerprint, pem] : set.fingerprint_and_pem) out.push_back(fingerprint);
    return out;
  };
  if (fingerprints(fresh) == fingerprints(current_roots_)) return nullptr;
  // A signing that started before a root rotation may finish after it: never go back.
  if (std::all_of(fresh.fingerprint_and_pem.begin(), fresh.fingerprint_and_pem.end(),
                  [&](const auto& root) { return retired_roots_.contains(root.first); })) {
    return absl::FailedPreconditionError("signed under a root that has since been replaced");
  }

  // Leaves issued under the roots being replaced must be re-issued; roots known before any
  // leaf was issued under them (an upstream CA's, from --ca-root-file) need nothing.
  const bool leaves_under_old_roots = !current_roots_.fingerprint_and_pem.empty() &&
                                      current_roots_last_leaf_expiry_ != absl::InfinitePast();
  const std::vector<std::string> fresh_fingerprints = fingerprints(fresh);
  for (auto& [fingerprint, pem] : current_roots_.fingerprint_and_pem) {
    if (std::find(fresh_fingerprints.begin(), fresh_fingerprints.end(), fingerprint) !=
        fresh_fingerprints.end()) {
      continue;
    }
    if (current_roots_last_leaf_expiry_ > now) {
      retired_roots_[fingerprint] = RetiredRoot{pem, current_roots_last_leaf_expiry_};
      LogInfo("root ", fingerprint.substr(0, 16), " replaced; still trusted until ",
              absl::FormatTime(current_roots_last_leaf_expiry_));
    }
  }
  for (const std::string& fingerprint : fresh_fingerprints) retired_roots_.erase(fingerprint);
  current_roots_ = std::move(fresh);
  current_roots_last_leaf_expiry_ = absl::InfinitePast();
  if (leaves_under_old_roots) RequestReissueOfAllLocked(now);
  return RebuildBundleLocked(now);
}

std::shared_ptr<const TrustBundleSnapshot> IdentityManager::RebuildBundleLocked(absl::Time now) {
  absl::erase_if(retired_roots_, [&](const auto& item) { return item.second.until <= now; });
  std::vector<std::string> version_parts;
  std::string pem;
  std::size_t count = 0;
  for (const auto& [fingerprint, root_pem] : current_roots_.fingerprint_and_pem) {
    version_parts.push_back(fingerprint.substr(0, 16));
    absl::StrAppend(&pem, root_pem);
    ++count;
  }
  std::vector<std::pair<std::string, std::string>> retired;
  for (const auto& [fingerprint, root] : retired_roots_)
    retired.emplace_back(fingerprint, root.pem);
  std::sort(retired.begin(), retired.end());
  for (const auto& [fingerprint, root_pem] : retired) {
    version_parts.push_back(fingerprint.substr(0, 16));
    absl::StrAppend(&pem, root_pem);
    ++count;
  }
  std::string version = absl::StrJoin(version_parts, "+");
  if (bundle_ != nullptr && bundle_->version == version) return nullptr;
  auto snapshot = std::make_shared<TrustBundleSnapshot>();
  snapshot->version = std::move(version);
  snapshot->roots_pem = std::move(pem);
  snapshot->root_count = count;
  bundle_ = snapshot;
  return snapshot;
}

absl::StatusOr<std::shared_ptr<const IssuedIdentity>> IdentityManager::Issue(
    const SpiffeId& identity, std::string* roots_pem) {
  absl::StatusOr<crypto::PrivateKey> key = crypto::PrivateKey::GenerateP256();
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> csr = crypto::MakeCsr(*key, identity);
  if (!csr.ok()) return csr.status();
  const absl::Time issued_at = absl::Now();
  absl::StatusOr<SignedChain> signed_chain = signer_->Sign(*csr, identity, options_.lifetime);
  if (!signed_chain.ok()) return signed_chain.status();
  // Checked here as the client will check it: a CA that returns something unusable is an
  // issuance failure to retry, not a certificate to hand out.
  absl::StatusOr<crypto::TrustBundle> bundle =
      crypto::TrustBundle::FromPem(signed_chain->roots_pem);
  if (!bundle.ok()) {
    return absl::InternalError(
        absl::StrCat("CA returned unusable roots: ", bundle.status().message()));
  }
  absl::StatusOr<crypto::CertificateInfo> leaf = crypto::ValidateWorkloadCertificate(
      signed_chain->chain_pem, *key, *bundle, identity, absl::Now());
  if (!leaf.ok()) {
    return absl::InternalError(
        absl::StrCat("CA returned an unusable certificate: ", leaf.status().message()));
  }
  absl::StatusOr<std::string> key_pem = key->ToPem();
  if (!key_pem.ok()) return key_pem.status();

  thread_local absl::BitGen random;
  absl::Duration remaining = leaf->not_after - issued_at;
  auto issued = std::make_shared<IssuedIdentity>(IssuedIdentity{
      .identity = identity,
      .version = leaf->serial_hex,
      .credentials = {signed_chain->chain_pem, *std::move(key_pem)},
      .leaf = *leaf,
      .issued_at = issued_at,
      .refresh_at = issued_at + Jittered(remaining * options_.rotation_fraction,
                                         options_.rotation_jitter, random),
  });
  *roots_pem = std::move(signed_chain->roots_pem);
  return issued;
}

void IdentityManager::WorkerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    absl::Time wake = absl::InfiniteFuture();
    bool roots_expired = false;
    for (const auto& [fingerprint, root] : retired_roots_) {
      if (root.until <= now) roots_expired = true;
      wake = std::min(wake, root.until);
    }
    if (roots_expired) {
      Publication publication{RebuildBundleLocked(now), nullptr, std::nullopt};
      mu_.Unlock();
      LogInfo("a replaced root expired from the trust bundle");
      Publish(publication);
      mu_.Lock();
      continue;
    }
    if (schedule_.empty() || schedule_.begin()->first > now) {
      if (!schedule_.empty()) wake = std::min(wake, schedule_.begin()->first);
      work_available_.WaitWithDeadline(&mu_, wake);
      continue;
    }

    const std::string key = schedule_.begin()->second;
    schedule_.erase(schedule_.begin());
    auto it = entries_.find(key);
    if (it == entries_.end()) continue;
    Entry& entry = *it->second;
    entry.scheduled.reset();

    // Decide what this due entry needs.
    DueAction action = DueAction::kIssue;
    if (entry.refs == 0) {
      if (now >= entry.idle_deadline) {
        entries_.erase(it);
        action = DueAction::kErased;
      } else {
        ScheduleLocked(entry, entry.idle_deadline);
        action = DueAction::kWait;
      }
    } else if (entry.current != nullptr && !entry.reissue_requested &&
               now < entry.current->refresh_at) {
      ScheduleLocked(entry, entry.current->refresh_at);
      action = DueAction::kWait;
    }
    if (action != DueAction::kIssue) continue;

    entry.in_flight = true;
    entry.reissue_requested = false;
    const SpiffeId identity = entry.identity;
    mu_.Unlock();
    std::string roots_pem;
    absl::StatusOr<std::shared_ptr<const IssuedIdentity>> issued = Issue(identity, &roots_pem);
    mu_.Lock();

    // Entries in flight are never erased, so `entry` is still valid.
    entry.in_flight = false;
    Publication publication;
    absl::Time finished = absl::Now();
    if (issued.ok()) {
      absl::StatusOr<std::shared_ptr<const TrustBundleSnapshot>> bundle =
          UpdateRootsLocked(roots_pem, finished);
      if (!bundle.ok()) {
        issued = absl::InternalError(
            absl::StrCat("CA returned unusable roots: ", bundle.status().message()));
      } else {
        publication.bundle = *bundle;
      }
    }
    if (issued.ok()) {
      // A root change seen in this very response already covers this identity.
      entry.reissue_requested = false;
      entry.current = *issued;
      entry.failed_attempts = 0;
      entry.last_error = absl::OkStatus();
      entry.backoff.Reset();
      current_roots_last_leaf_expiry_ =
          std::max(current_roots_last_leaf_expiry_, (*issued)->leaf.not_after);
      ++issued_count_;
      publication.certificate = *issued;
      ScheduleLocked(entry, finished);
    } else {
      ++entry.failed_attempts;
      entry.last_error = issued.status();
      absl::Duration delay = entry.backoff.Next();
      LogWarning("issuing ", identity.ToString(), " failed (attempt ", entry.failed_attempts,
                 ", retrying in ", absl::FormatDuration(delay), "): ", issued.status().message());
      ScheduleLocked(entry, finished + delay);
      publication.failure.emplace(identity, issued.status());
    }
    mu_.Unlock();
    Publish(publication);
    mu_.Lock();
  }
}

std::vector<ManagedIdentityStatus> IdentityManager::Status() const {
  absl::MutexLock lock(&mu_);
  std::vector<ManagedIdentityStatus> out;
  out.reserve(entries_.size());
  for (const auto& [key, entry] : entries_) {
    ManagedIdentityStatus status{entry->identity, entry->refs, {}, {}, {}, {}, {}};
    if (entry->current != nullptr) {
      status.serial_hex = entry->current->leaf.serial_hex;
      status.not_before = entry->current->leaf.not_before;
      status.not_after = entry->current->leaf.not_after;
    }
    status.next_action = entry->scheduled.value_or(absl::InfiniteFuture());
    if (!entry->last_error.ok()) status.last_error = std::string(entry->last_error.message());
    out.push_back(std::move(status));
  }
  return out;
}

std::int64_t IdentityManager::issued_count() const {
  absl::MutexLock lock(&mu_);
  return issued_count_;
}

}  // namespace nodeward::sds
