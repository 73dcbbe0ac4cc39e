#include "sds/backoff.h"

#include <algorithm>

namespace nodeward::sds {

absl::Duration Backoff::Next() {
  absl::Duration base = current_;
  current_ = std::min(policy_.max, current_ * policy_.multiplier);
  double jitter = std::clamp(policy_.jitter, 0.0, 1.0);
  double scale = 1.0 - jitter * absl::Uniform(random_, 0.0, 1.0);
  return base * scale;
}

absl::Duration Jittered(absl::Duration base, double fraction, absl::BitGen& random) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  if (fraction == 0.0) return base;
  return base * (1.0 + absl::Uniform(random, -fraction, fraction));
}

}  // namespace nodeward::sds
