#include "agent/proxy/access_log.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nodeward::proxy {
namespace {

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace

std::string FormatAccessRecord(const AccessRecord& record, absl::Time end) {
  std::string line = absl::StrCat(
      "{\"time\":", JsonString(absl::FormatTime(absl::RFC3339_full, end, absl::UTCTimeZone())),
      ",\"msg\":\"access\",\"direction\":",
      JsonString(std::string(DirectionName(record.direction))));
  auto field = [&line](const char* name, const std::string& value) {
    absl::StrAppend(&line, ",\"", name, "\":", JsonString(value));
  };
  field("source_workload", record.source_workload);
  field("source_principal", record.source_principal);
  field("source_address", record.source_address);
  field("destination_workload", record.destination_workload);
  field("destination_principal", record.destination_principal);
  field("destination_address", record.destination_address);
  if (!record.delivered_from.empty()) field("delivered_from", record.delivered_from);
  field("mode", std::string(ModeName(record.mode)));
  field("connection_security_policy", record.mutual_tls ? "mutual_tls" : "none");
  field("policy", record.policy);
  if (!record.authorization.empty()) field("authorization", record.authorization);
  if (!record.audited_by.empty()) field("audited_by", record.audited_by);
  field("reason", record.reason);
  field("result", std::string(ResultName(record.result)));
  if (record.refusal != RefusalReason::kNone) {
    field("refusal", std::string(RefusalReasonName(record.refusal)));
  }
  if (record.closed_by_policy_change) field("closed_by", "policy_change");
  absl::StrAppend(&line, ",\"sent_bytes\":", record.sent_bytes,
                  ",\"received_bytes\":", record.received_bytes,
                  ",\"duration_ms\":", absl::ToInt64Milliseconds(record.duration), "}\n");
  return line;
}

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const std::string& path) {
  if (path.empty() || path == "-") return std::unique_ptr<AccessLog>(new AccessLog(stderr, false));
  std::FILE* file = std::fopen(path.c_str(), "ae");
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("access log ", path, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<AccessLog>(new AccessLog(file, true));
}

AccessLog::~AccessLog() {
  absl::MutexLock lock(&mutex_);
  if (owned_) std::fclose(file_);
}

void AccessLog::Write(const AccessRecord& record) {
  const std::string line = FormatAccessRecord(record, absl::Now());
  absl::MutexLock lock(&mutex_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace nodeward::proxy
