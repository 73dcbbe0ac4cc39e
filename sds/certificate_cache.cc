#include "sds/certificate_cache.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "crypto/keys.h"
#include "sds/log.h"

namespace nodeward::sds {
namespace {

constexpr absl::Duration kProbeTimeout = absl::Seconds(5);
// Long enough for the server to say no, short enough not to hold up the other probes: an
// identity being issued answers DEADLINE_EXCEEDED, which is not a refusal.
constexpr absl::Duration kUnansweredProbeTimeout = absl::Seconds(1);

// What a server says of a name it will not serve.
bool IsRefusal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kPermissionDenied ||
         status.code() == absl::StatusCode::kInvalidArgument;
}

}  // namespace

const char* StateName(IdentityStatus::State state) {
  switch (state) {
    case IdentityStatus::State::kQueued:
      return "queued";
    case IdentityStatus::State::kRequested:
      return "requested";
    case IdentityStatus::State::kReady:
      return "ready";
    case IdentityStatus::State::kExpired:
      return "expired";
    case IdentityStatus::State::kRefused:
      return "refused";
  }
  return "unknown";
}

CertificateCache::CertificateCache(CertificateCacheOptions options)
    : options_(std::move(options)), client_(options_.sds, this) {}

CertificateCache::~CertificateCache() { Stop(); }

void CertificateCache::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (timer_.joinable()) return;
    stopping_ = false;
  }
  UpdateSubscription();
  client_.Start();
  timer_ = std::thread([this] { TimerLoop(); });
}

void CertificateCache::Stop() {
  client_.Stop();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (timer_.joinable()) timer_.join();
}

void CertificateCache::Acquire(const SpiffeId& identity) {
  {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Entry>& slot = entries_[identity];
    if (slot == nullptr) {
      slot = std::make_unique<Entry>(identity);
      slot->queue_order = next_queue_order_++;
    }
    ++slot->references;
    slot->release_at = absl::InfiniteFuture();
    ++wakeups_;
  }
  UpdateSubscription();
}

void CertificateCache::Release(const SpiffeId& identity) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(identity);
  if (it == entries_.end() || it->second->references == 0) return;
  if (--it->second->references == 0) {
    it->second->release_at = absl::Now() + options_.release_grace;
    ++wakeups_;
  }
}

void CertificateCache::UpdateSubscription() {
  absl::MutexLock serialise(&subscription_mu_);
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    int outstanding = 0;
    std::vector<Entry*> waiting;
    for (auto& [identity, entry] : entries_) {
      bool wanted = entry->references > 0 || entry->release_at > now;
      bool refused = entry->refused_until > now;
      if (!wanted || refused) {
        entry->subscribed = false;
        continue;
      }
      if (entry->current.has_value()) {
        entry->subscribed = true;
      } else if (entry->subscribed) {
        ++outstanding;
      } else {
        waiting.push_back(entry.get());
      }
    }
    std::sort(waiting.begin(), waiting.end(),
              [](const Entry* a, const Entry* b) { return a->queue_order < b->queue_order; });
    for (Entry* entry : waiting) {
      if (outstanding >= options_.max_outstanding_requests) break;
      entry->subscribed = true;
      entry->next_probe = now + options_.unanswered_probe_after;
      entry->probe_interval = options_.unanswered_probe_after;
      ++outstanding;
      ++wakeups_;  // the timer watches it from now on
    }
    names.push_back(std::string(kRootCaResourceName));
    for (const auto& [identity, entry] : entries_) {
      if (entry->subscribed) names.push_back(identity.ToString());
    }
  }
  std::sort(names.begin(), names.end());
  client_.SetResourceNames(std::move(names));
}

absl::Status CertificateCache::OnSecret(const ReceivedSecret& secret) {
  if (const auto* bundle = std::get_if<ReceivedBundle>(&secret)) return AcceptBundle(*bundle);
  return AcceptCertificate(std::get<ReceivedCertificate>(secret));
}

absl::Status CertificateCache::AcceptBundle(const ReceivedBundle& received) {
  absl::StatusOr<crypto::TrustBundle> bundle =
      crypto::TrustBundle::FromPem(received.trusted_ca_pem);
  {
    absl::MutexLock lock(&mu_);
    if (!bundle.ok()) {
      ++rejected_;
      return absl::InvalidArgumentError(absl::StrCat(
          "ROOTCA rejected, keeping the previous bundle: ", bundle.status().message()));
    }
    if (received.trusted_ca_pem == bundle_pem_) return absl::OkStatus();
    bundle_ = *std::move(bundle);
    bundle_pem_ = received.trusted_ca_pem;
    LogInfo("trust bundle updated: ", bundle_->size(), " root(s)");
  }
  Notify({CertificateChange{CertificateChange::Kind::kTrustBundle, std::nullopt}});
  return absl::OkStatus();
}

absl::Status CertificateCache::AcceptCertificate(const ReceivedCertificate& received) {
  absl::StatusOr<SpiffeId> identity = SpiffeId::Parse(received.name);
  if (!identity.ok()) return identity.status();
  std::optional<crypto::TrustBundle> bundle;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(*identity);
    // Not (or no longer) asked for: ignored, as xDS clients do with unrequested resources.
    if (it == entries_.end() || !it->second->subscribed) return absl::OkStatus();
    bundle = bundle_;
  }
  absl::Status verdict = absl::OkStatus();
  std::optional<crypto::CertificateInfo> leaf;
  if (!bundle.has_value()) {
    verdict = absl::FailedPreconditionError("no trust bundle (ROOTCA) received yet");
  } else if (absl::StatusOr<crypto::PrivateKey> key =
                 crypto::PrivateKey::FromPem(received.private_key_pem);
             !key.ok()) {
    verdict = key.status();
  } else {
    absl::StatusOr<crypto::CertificateInfo> validated = crypto::ValidateWorkloadCertificate(
        received.cert_chain_pem, *key, *bundle, *identity, absl::Now());
    if (validated.ok()) {
      leaf = *std::move(validated);
    } else {
      verdict = validated.status();
    }
  }

  bool first_certificate = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(*identity);
    if (it == entries_.end()) return absl::OkStatus();
    Entry& entry = *it->second;
    if (!verdict.ok()) {
      ++rejected_;
      entry.last_error = absl::StrCat("rejected pushed certificate: ", verdict.message());
      LogWarning(identity->ToString(), ": ", entry.last_error,
                 entry.current.has_value() ? "; keeping the last good one" : "");
      return absl::InvalidArgumentError(
          absl::StrCat(identity->ToString(), ": ", verdict.message()));
    }
    if (entry.current.has_value() && entry.current->leaf.serial_hex == leaf->serial_hex) {
      return absl::OkStatus();
    }
    first_certificate = !entry.current.has_value();
    entry.current = Material{{received.cert_chain_pem, received.private_key_pem}, *leaf};
    entry.expired_notified = false;
    entry.last_update = absl::Now();
    entry.last_error.clear();
    ++wakeups_;
  }
  Notify({CertificateChange{CertificateChange::Kind::kCertificate, *identity}});
  // A first certificate frees a slot for a queued identity.
  if (first_certificate) UpdateSubscription();
  return absl::OkStatus();
}

void CertificateCache::OnRefused(const std::string& resource, const absl::Status& reason) {
  absl::StatusOr<SpiffeId> identity = SpiffeId::Parse(resource);
  if (!identity.ok()) return;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(*identity);
    if (it == entries_.end()) return;
    it->second->refused_until = absl::Now() + options_.refused_retry;
    it->second->subscribed = false;
    it->second->last_error = absl::StrCat("refused by the SDS server: ", reason.message());
    ++wakeups_;
  }
  LogWarning(resource, " refused by the SDS server; asking again in ",
             absl::FormatDuration(options_.refused_retry));
  UpdateSubscription();
}

void CertificateCache::OnDisconnected(const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  connection_error_ = reason.ToString();
}

void CertificateCache::TimerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    absl::Time wake = absl::InfiniteFuture();
    std::vector<CertificateChange> changes;
    std::vector<SpiffeId> to_probe;
    std::vector<SpiffeId> unanswered;
    bool subscription_changed = false;
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto current = it++;
      Entry& entry = *current->second;
      if (entry.references == 0 && entry.release_at <= now) {
        entries_.erase(current);
        subscription_changed = true;
        continue;
      }
      if (entry.references == 0) wake = std::min(wake, entry.release_at);
      if (entry.current.has_value() && !entry.expired_notified) {
        if (now >= entry.current->leaf.not_after) {
          entry.expired_notified = true;
          entry.last_error = "certificate expired before a new one arrived";
          LogError(entry.identity.ToString(), ": ", entry.last_error);
          changes.push_back({CertificateChange::Kind::kExpired, entry.identity});
        } else {
          wake = std::min(wake, entry.current->leaf.not_after);
        }
      }
      if (entry.refused_until != absl::InfinitePast()) {
        if (entry.refused_until <= now) {
          to_probe.push_back(entry.identity);
        } else {
          wake = std::min(wake, entry.refused_until);
        }
      } else if (entry.subscribed && !entry.current.has_value()) {
        if (entry.next_probe <= now) {
          unanswered.push_back(entry.identity);
        } else {
          wake = std::min(wake, entry.next_probe);
        }
      }
    }
    if (!changes.empty() || subscription_changed || !to_probe.empty() || !unanswered.empty()) {
      mu_.Unlock();
      Notify(changes);
      // A refused identity is asked for on the side first, so that a refusal that still holds
      // does not end the stream the node's other identities ride on.
      for (const SpiffeId& identity : to_probe) {
        absl::Status probe = client_.Probe(identity.ToString(), kProbeTimeout);
        absl::MutexLock relock(&mu_);
        auto it = entries_.find(identity);
        if (it == entries_.end()) continue;
        // Only a refusal keeps it off the stream; a server still issuing it answers late.
        if (!IsRefusal(probe)) {
          it->second->refused_until = absl::InfinitePast();
          subscription_changed = true;
        } else {
          it->second->refused_until = absl::Now() + options_.refused_retry;
          it->second->last_error = absl::StrCat("refused by the SDS server: ", probe.message());
        }
      }
      for (const SpiffeId& identity : unanswered) {
        absl::Status probe = client_.Probe(identity.ToString(), kUnansweredProbeTimeout);
        absl::MutexLock relock(&mu_);
        auto it = entries_.find(identity);
        if (it == entries_.end()) continue;
        Entry& entry = *it->second;
        if (IsRefusal(probe)) {
          entry.refused_until = absl::Now() + options_.refused_retry;
          entry.subscribed = false;
          entry.last_error = absl::StrCat("refused by the SDS server: ", probe.message());
          LogWarning(identity.ToString(), " refused by the SDS server (", probe.message(),
                     "); asking again in ", absl::FormatDuration(options_.refused_retry));
          subscription_changed = true;
          continue;
        }
        entry.probe_interval = std::min(entry.probe_interval * 2, options_.refused_retry);
        entry.next_probe = absl::Now() + entry.probe_interval;
      }
      if (subscription_changed) UpdateSubscription();
      mu_.Lock();
      continue;
    }
    const std::uint64_t seen = wakeups_;
    auto woken = [this, seen]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wakeups_ != seen; };
    mu_.AwaitWithDeadline(absl::Condition(&woken), wake);
  }
}

absl::StatusOr<IdentityCredentials> CertificateCache::Get(const SpiffeId& identity) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(identity);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(identity.ToString(), " is not acquired"));
  }
  const Entry& entry = *it->second;
  if (!entry.current.has_value()) {
    return absl::UnavailableError(absl::StrCat(
        "no certificate for ", identity.ToString(), " yet", entry.last_error.empty() ? "" : ": ",
        entry.last_error, connection_error_.empty() ? "" : " (SDS: ", connection_error_,
        connection_error_.empty() ? "" : ")"));
  }
  if (absl::Now() >= entry.current->leaf.not_after) {
    return absl::UnavailableError(
        absl::StrCat("certificate for ", identity.ToString(), " expired at ",
                     absl::FormatTime(entry.current->leaf.not_after), " and was not renewed"));
  }
  return IdentityCredentials{identity, entry.current->credentials, *bundle_, entry.current->leaf};
}

absl::StatusOr<crypto::TrustBundle> CertificateCache::Bundle() const {
  absl::MutexLock lock(&mu_);
  if (!bundle_.has_value()) return absl::UnavailableError("no trust bundle received yet");
  return *bundle_;
}

absl::StatusOr<IdentityCredentials> CertificateCache::WaitForCredentials(
    const SpiffeId& identity, absl::Time deadline) const {
  {
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (stopping_) return true;
      auto it = entries_.find(identity);
      return it == entries_.end() ||
             (it->second->current.has_value() && absl::Now() < it->second->current->leaf.not_after);
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  }
  return Get(identity);
}

int CertificateCache::AddListener(Listener listener) {
  absl::MutexLock lock(&listeners_mu_);
  int id = next_listener_id_++;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void CertificateCache::RemoveListener(int id) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(id);
}

void CertificateCache::Notify(const std::vector<CertificateChange>& changes) {
  if (changes.empty()) return;
  absl::MutexLock lock(&listeners_mu_);
  for (const CertificateChange& change : changes) {
    for (const auto& [id, listener] : listeners_) listener(change);
  }
}

std::vector<IdentityStatus> CertificateCache::Status() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  std::vector<IdentityStatus> out;
  out.reserve(entries_.size());
  for (const auto& [identity, entry] : entries_) {
    IdentityStatus status{identity};
    status.references = entry->references;
    status.last_update = entry->last_update;
    status.last_error = entry->last_error;
    if (entry->refused_until > now) {
      status.state = IdentityStatus::State::kRefused;
    } else if (entry->current.has_value()) {
      status.state = now >= entry->current->leaf.not_after ? IdentityStatus::State::kExpired
                                                           : IdentityStatus::State::kReady;
    } else {
      status.state =
          entry->subscribed ? IdentityStatus::State::kRequested : IdentityStatus::State::kQueued;
    }
    if (entry->current.has_value()) {
      const crypto::CertificateInfo& leaf = entry->current->leaf;
      status.serial_hex = leaf.serial_hex;
      status.version = leaf.serial_hex;
      status.not_before = leaf.not_before;
      status.not_after = leaf.not_after;
      // The server renews at about half the lifetime left when it issued the certificate.
      status.next_refresh = entry->last_update + (leaf.not_after - entry->last_update) / 2;
    }
    out.push_back(std::move(status));
  }
  std::sort(out.begin(), out.end(), [](const IdentityStatus& a, const IdentityStatus& b) {
    return a.identity.ToString() < b.identity.ToString();
  });
  return out;
}

std::int64_t CertificateCache::rejected_secrets() const {
  absl::MutexLock lock(&mu_);
  return rejected_;
}

}  // namespace nodeward::sds
