// nodewardctl's output: aligned tables, human durations and byte counts, JSON and YAML forms of
// the admin API's responses, and one renderer per command. No sockets here, so all of it is
// unit-tested on hand-built responses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/admin/admin.pb.h"
#include "google/protobuf/message.h"

namespace nodeward::ctl {

enum class OutputFormat { kTable, kJson, kYaml };

// "table", "json" or "yaml".
absl::StatusOr<OutputFormat> ParseOutputFormat(const std::string& text);

// Columns as wide as their widest cell, two spaces between columns, header in capitals, "-"
// for an empty cell, no trailing blanks. Rows shorter than the header are padded with "-".
class Table {
 public:
  explicit Table(std::vector<std::string> header, bool show_header = true);
  void AddRow(std::vector<std::string> row);
  std::string Render() const;
  std::size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  bool show_header_;
  std::vector<std::vector<std::string>> rows_;
};

// 0 -> "0s", 42 -> "42s", 192 -> "3m12s", 43080 -> "11h58m", 185400 -> "2d3h", >= 10 days ->
// "15d". Negative durations get a leading "-". Sub-second parts are dropped.
std::string HumanDuration(absl::Duration d);
std::string HumanSeconds(double seconds);

// 512 -> "512 B", 1234 -> "1.2 KiB", then MiB, GiB, TiB (one decimal).
std::string HumanBytes(uint64_t bytes);

// RFC 3339 time -> "in" duration from now, "-" when empty, the text itself when unparseable.
std::string DurationUntil(const std::string& rfc3339, absl::Time now);

// A SHA-256 fingerprint shortened to its first 8 bytes ("ab:cd:...", or 16 hex digits).
std::string ShortFingerprint(const std::string& fingerprint);

// The proto3 JSON mapping with the .proto field names, every primitive field printed.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);
// That JSON as YAML (block style; strings that would read back as numbers, booleans or null
// are quoted).
absl::StatusOr<std::string> JsonToYaml(const std::string& json);
absl::StatusOr<std::string> ToYaml(const google::protobuf::Message& message);

// "KEY  value" lines, keys aligned, "-" for an empty value; an empty key continues the line
// above.
std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& pairs);
// A decision's trace: its numbered steps, then its warnings (nothing when both are empty).
std::string RenderTrace(const admin::v1::PolicyTrace& trace);

// Per-command table forms.
std::string RenderWorkloads(const admin::v1::ListWorkloadsResponse& response);
std::string RenderCertificates(const admin::v1::ListCertificatesResponse& response, absl::Time now);
std::string RenderExplain(const admin::v1::ExplainPolicyRequest& request,
                          const admin::v1::ExplainPolicyResponse& response);
std::string RenderConnections(const admin::v1::ListConnectionsResponse& response);
std::string RenderTunnels(const admin::v1::ListTunnelsResponse& response);
std::string RenderBpf(const admin::v1::DumpBpfResponse& response);
std::string RenderConfig(const admin::v1::DumpConfigResponse& response);

// `message` in `format`: tables through `table`, JSON and YAML from the message itself.
template <typename Renderer>
absl::StatusOr<std::string> Render(const google::protobuf::Message& message, OutputFormat format,
                                   Renderer table) {
  switch (format) {
    case OutputFormat::kJson:
      return ToJson(message);
    case OutputFormat::kYaml:
      return ToYaml(message);
    case OutputFormat::kTable:
      break;
  }
  return table();
}

}  // namespace nodeward::ctl
