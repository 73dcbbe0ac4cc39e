#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace nodeward {
namespace {

std::atomic<int> minimum_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> json_format{false};
absl::Mutex output_mutex;

std::string JsonEscaped(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      absl::StrAppend(&out, "\\u00", c < 0x10 ? "0" : "", absl::Hex(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning" || lower == "warn") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level \"", text, "\" (debug, info, warning, error)"));
}

void SetLogLevel(LogLevel level) { minimum_level.store(static_cast<int>(level)); }

LogLevel CurrentLogLevel() { return static_cast<LogLevel>(minimum_level.load()); }

void SetLogFormat(LogFormat format) { json_format.store(format == LogFormat::kJson); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= minimum_level.load(); }

void LogLine(LogLevel level, absl::string_view message) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  std::string line =
      json_format.load()
          ? absl::StrCat("{\"time\":\"", time, "\",\"level\":\"", LogLevelName(level),
                         "\",\"msg\":\"", JsonEscaped(message), "\"}\n")
          : absl::StrCat(time, " ", LogLevelName(level), " ", message, "\n");
  absl::MutexLock lock(&output_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace nodeward
