// The one logger of the agent's binaries: leveled lines to stderr, JSON for log collectors or
// text for people, the level changeable at runtime.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace nodeward {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text);
void SetLogLevel(LogLevel level);
LogLevel CurrentLogLevel();
const char* LogLevelName(LogLevel level);
// JSON lines ({"time","level","msg"}) for log collectors, or plain text for people.
enum class LogFormat { kJson, kText };
void SetLogFormat(LogFormat format);
bool LogEnabled(LogLevel level);
// One line to stderr with a UTC timestamp and the level. Thread safe.
void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void Log(LogLevel level, const Args&... args) {
  if (LogEnabled(level)) LogLine(level, absl::StrCat(args...));
}

}  // namespace nodeward
