#include "sds/log.h"

#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nodeward::sds {
namespace {
LogSink sink = nullptr;
}  // namespace

void SetLogSink(LogSink new_sink) { sink = new_sink; }

void LogLine(LogLevel level, absl::string_view message) {
  if (sink != nullptr) {
    sink(level, message);
    return;
  }
  const char* tag = level == LogLevel::kInfo ? "I" : level == LogLevel::kWarning ? "W" : "E";
  std::string line =
      absl::StrCat(tag, absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " sds] ", message, "\n");
  // One write(2) per line keeps lines whole across threads without a lock.
  absl::string_view rest = line;
  while (!rest.empty()) {
    ssize_t written = ::write(STDERR_FILENO, rest.data(), rest.size());
    if (written <= 0) return;
    rest.remove_prefix(static_cast<std::size_t>(written));
  }
}

}  // namespace nodeward::sds
