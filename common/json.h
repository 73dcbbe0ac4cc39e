// JSON where it must round-trip exactly: CNI network configurations and the results of the
// plugins before ours, the node's conflist, Kubernetes objects in the test API server. Strict
// RFC 8259 (no comments, no trailing
// commas, no duplicate member names, valid escapes), members kept in their order, numbers kept
// as written, and each value remembers the bytes it was parsed from so a result can be passed
// on unchanged.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nodeward {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() = default;  // null

  static JsonValue Null() { return JsonValue(Type::kNull); }
  static JsonValue Bool(bool value);
  // `text` must be a JSON number as written (not checked): values built in code.
  static JsonValue Number(std::string text);
  static JsonValue String(std::string value);
  static JsonValue Array(std::vector<JsonValue> items = {});
  static JsonValue Object(std::vector<Member> members = {});

  Type type() const { return type_; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_string() const { return type_ == Type::kString; }

  bool bool_value() const { return bool_; }
  // Decoded for strings, as written for numbers.
  const std::string& text() const { return text_; }
  const std::vector<JsonValue>& items() const { return items_; }
  std::vector<JsonValue>& mutable_items() { return items_; }
  const std::vector<Member>& members() const { return members_; }

  // Object member by name, or null.
  const JsonValue* Find(absl::string_view name) const;
  JsonValue* FindMutable(absl::string_view name);
  // The member's string, or "" when absent or not a string.
  std::string StringAt(absl::string_view name) const;
  // Replaces the member's value, or appends it when absent.
  void Set(std::string name, JsonValue value);
  // Removes the member; false when there was none.
  bool Remove(absl::string_view name);

  // Where the value was in the text it was parsed from ([offset, offset + length)); zero for
  // values built in code.
  std::size_t source_offset() const { return offset_; }
  std::size_t source_length() const { return length_; }

 private:
  explicit JsonValue(Type type) : type_(type) {}
  friend class JsonParser;

  Type type_ = Type::kNull;
  bool bool_ = false;
  std::string text_;
  std::vector<JsonValue> items_;
  std::vector<Member> members_;
  std::size_t offset_ = 0;
  std::size_t length_ = 0;
};

// Parses exactly one value (surrounding whitespace allowed). Errors say what was wrong and at
// which byte. Nesting deeper than 64 levels is refused.
absl::StatusOr<JsonValue> ParseJson(absl::string_view text);

// `indent` 0: one line; otherwise pretty-printed with that many spaces per level.
std::string SerializeJson(const JsonValue& value, int indent = 0);

// A JSON string literal (quotes included) for `text`.
std::string QuoteJson(absl::string_view text);

}  // namespace nodeward
