// Exponential backoff with full jitter, shared by certificate issuance and SDS reconnection.
#pragma once

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace nodeward::sds {

struct BackoffPolicy {
  absl::Duration initial = absl::Milliseconds(200);
  absl::Duration max = absl::Seconds(30);
  double multiplier = 2.0;
  // Fraction of each delay that is randomised, so that many clients failing together do not
  // retry together.
  double jitter = 0.5;
};

class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy) : policy_(policy), current_(policy.initial) {}

  // The delay before the next attempt; grows until `max`.
  absl::Duration Next();
  void Reset() { current_ = policy_.initial; }

 private:
  BackoffPolicy policy_;
  absl::Duration current_;
  absl::BitGen random_;
};

// `base` moved randomly by up to +/- `fraction` of itself.
absl::Duration Jittered(absl::Duration base, double fraction, absl::BitGen& random);

}  // namespace nodeward::sds
