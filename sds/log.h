// Line-oriented logging to stderr for the SDS layer (abseil in this tree has no logging).
#pragma once

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nodeward::sds {

enum class LogLevel { kInfo, kWarning, kError };

// Writes one timestamped line atomically, so concurrent streams never interleave.
void LogLine(LogLevel level, absl::string_view message);

// A process that has a logger of its own (the node agent) routes these lines to it, so all of
// its output has one format. Set once, before any thread logs.
using LogSink = void (*)(LogLevel level, absl::string_view message);
void SetLogSink(LogSink sink);

template <typename... Args>
void LogInfo(const Args&... args) {
  LogLine(LogLevel::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  LogLine(LogLevel::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogLevel::kError, absl::StrCat(args...));
}

}  // namespace nodeward::sds
