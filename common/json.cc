#include "common/json.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace nodeward {

JsonValue JsonValue::Bool(bool value) {
  JsonValue v(Type::kBool);
  v.bool_ = value;
  return v;
}

JsonValue JsonValue::Number(std::string text) {
  JsonValue v(Type::kNumber);
  v.text_ = std::move(text);
  return v;
}

JsonValue JsonValue::String(std::string value) {
  JsonValue v(Type::kString);
  v.text_ = std::move(value);
  return v;
}

JsonValue JsonValue::Array(std::vector<JsonValue> items) {
  JsonValue v(Type::kArray);
  v.items_ = std::move(items);
  return v;
}

JsonValue JsonValue::Object(std::vector<Member> members) {
  JsonValue v(Type::kObject);
  v.members_ = std::move(members);
  return v;
}

const JsonValue* JsonValue::Find(absl::string_view name) const {
  for (const Member& member : members_) {
    if (member.first == name) return &member.second;
  }
  return nullptr;
}

JsonValue* JsonValue::FindMutable(absl::string_view name) {
  for (Member& member : members_) {
    if (member.first == name) return &member.second;
  }
  return nullptr;
}

std::string JsonValue::StringAt(absl::string_view name) const {
  const JsonValue* value = Find(name);
  return value != nullptr && value->is_string() ? value->text() : "";
}

void JsonValue::Set(std::string name, JsonValue value) {
  for (Member& member : members_) {
    if (member.first == name) {
      member.second = std::move(value);
      return;
    }
  }
  members_.emplace_back(std::move(name), std::move(value));
}

bool JsonValue::Remove(absl::string_view name) {
  for (auto it = members_.begin(); it != members_.end(); ++it) {
    if (it->first == name) {
      members_.erase(it);
      return true;
    }
  }
  return false;
}

class JsonParser {
 public:
  explicit JsonParser(absl::string_view text) : text_(text) {}

  absl::StatusOr<JsonValue> ParseDocument() {
    SkipSpace();
    absl::StatusOr<JsonValue> value = ParseValue(0);
    if (!value.ok()) return value;
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON at byte ", pos_, ": ", what));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(absl::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) return false;
    pos_ += literal.size();
    return true;
  }

  absl::StatusOr<JsonValue> ParseValue(int depth) {
    if (depth > kMaxDepth) return Error("nested deeper than 64 levels");
    if (pos_ >= text_.size()) return Error("a value was expected, the text ended");
    const std::size_t start = pos_;
    absl::StatusOr<JsonValue> value = ParseBare(depth);
    if (!value.ok()) return value;
    value->offset_ = start;
    value->length_ = pos_ - start;
    return value;
  }

  absl::StatusOr<JsonValue> ParseBare(int depth) {
    const char c = text_[pos_];
    if (c == '{') return ParseObject(depth);
    if (c == '[') return ParseArray(depth);
    if (c == '"') {
      absl::StatusOr<std::string> s = ParseString();
      if (!s.ok()) return s.status();
      return JsonValue::String(*std::move(s));
    }
    if (Consume("true")) return JsonValue::Bool(true);
    if (Consume("false")) return JsonValue::Bool(false);
    if (Consume("null")) return JsonValue::Null();
    if (c == '-' || absl::ascii_isdigit(c)) return ParseNumber();
    return Error(absl::StrFormat("unexpected character 0x%02x", static_cast<unsigned char>(c)));
  }

  absl::StatusOr<JsonValue> ParseObject(int depth) {
    JsonValue object = JsonValue::Object();
    ++pos_;  // '{'
    SkipSpace();
    if (Consume("}")) return object;
    while (true) {
      SkipSpace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return Error("a member name was expected");
      absl::StatusOr<std::string> name = ParseString();
      if (!name.ok()) return name.status();
      if (object.Find(*name) != nullptr) {
        return Error(absl::StrCat("member \"", *name, "\" appears twice"));
      }
      SkipSpace();
      if (!Consume(":")) return Error("':' was expected after a member name");
      SkipSpace();
      absl::StatusOr<JsonValue> value = ParseValue(depth + 1);
      if (!value.ok()) return value;
      object.members_.emplace_back(*std::move(name), *std::move(value));
      SkipSpace();
      if (Consume("}")) return object;
      if (!Consume(",")) return Error("',' or '}' was expected");
    }
  }

  absl::StatusOr<JsonValue> ParseArray(int depth) {
    JsonValue array = JsonValue::Array();
    ++pos_;  // '['
    SkipSpace();
    if (Consume("]")) return array;
    while (true) {
      SkipSpace();
      absl::StatusOr<JsonValue> value = ParseValue(depth + 1);
      if (!value.ok()) return value;
      array.items_.push_back(*std::move(value));
      SkipSpace();
      if (Consume("]")) return array;
      if (!Consume(",")) return Error("',' or ']' was expected");
    }
  }

  absl::StatusOr<JsonValue> ParseNumber() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(text_[pos_])) ++pos_;
      return pos_ - from;
    };
    if (text_[pos_] == '-') ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '0') {
      ++pos_;
    } else if (digits() == 0) {
      return Error("a digit was expected");
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) return Error("a digit was expected after '.'");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (digits() == 0) return Error("a digit was expected in the exponent");
    }
    return JsonValue::Number(std::string(text_.substr(start, pos_ - start)));
  }

  absl::StatusOr<uint32_t> ParseHex4() {
    if (pos_ + 4 > text_.size()) return Error("\\u needs four hex digits");
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        value |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        value |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Error("\\u needs four hex digits");
      }
    }
    return value;
  }

  static void AppendUtf8(uint32_t code_point, std::string& out) {
    if (code_point < 0x80) {
      out.push_back(static_cast<char>(code_point));
    } else if (code_point < 0x800) {
      out.push_back(static_cast<char>(0xc0 | (code_point >> 6)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3f)));
    } else if (code_point < 0x10000) {
      out.push_back(static_cast<char>(0xe0 | (code_point >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3f)));
    } else {
      out.push_back(static_cast<char>(0xf0 | (code_point >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (code_point & 0x3f)));
    }
  }

  // Length of the well-formed UTF-8 sequence at pos_ (RFC 3629), 0 when it is not one.
  std::size_t Utf8SequenceLength() const {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text_[pos_ + i]); };
    const unsigned char lead = byte(0);
    std::size_t length;
    uint32_t min;
    uint32_t value;
    if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2, min = 0x80, value = lead & 0x1f;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3, min = 0x800, value = lead & 0x0f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4, min = 0x10000, value = lead & 0x07;
    } else {
      return 0;
    }
    if (pos_ + length > text_.size()) return 0;
    for (std::size_t i = 1; i < length; ++i) {
      if ((byte(i) & 0xc0) != 0x80) return 0;
      value = (value << 6) | (byte(i) & 0x3f);
    }
    if (value < min || value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff)) return 0;
    return length;
  }

  absl::StatusOr<std::string> ParseString() {
    ++pos_;  // '"'
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) return Error("the string does not end");
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) return Error("control character inside a string");
      if (c >= 0x80) {
        const std::size_t length = Utf8SequenceLength();
        if (length == 0) return Error("invalid UTF-8 inside a string");
        out.append(text_.data() + pos_, length);
        pos_ += length;
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        continue;
      }
      if (pos_ >= text_.size()) return Error("the string does not end");
      const char escape = text_[pos_++];
      switch (escape) {
        case '"':
        case '\\':
        case '/':
          out.push_back(escape);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          absl::StatusOr<uint32_t> unit = ParseHex4();
          if (!unit.ok()) return unit.status();
          uint32_t code_point = *unit;
          if (code_point >= 0xdc00 && code_point <= 0xdfff) return Error("lone low surrogate");
          if (code_point >= 0xd800 && code_point <= 0xdbff) {
            if (!Consume("\\u")) return Error("high surrogate without its low half");
            absl::StatusOr<uint32_t> low = ParseHex4();
            if (!low.ok()) return low.status();
            if (*low < 0xdc00 || *low > 0xdfff) return Error("high surrogate without its low half");
            code_point = 0x10000 + ((code_point - 0xd800) << 10) + (*low - 0xdc00);
          }
          AppendUtf8(code_point, out);
          break;
        }
        default:
          return Error(absl::StrCat("unknown escape \\", std::string(1, escape)));
      }
    }
  }

  absl::string_view text_;
  std::size_t pos_ = 0;
};

absl::StatusOr<JsonValue> ParseJson(absl::string_view text) {
  return JsonParser(text).ParseDocument();
}

std::string QuoteJson(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
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
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

namespace {

void Serialize(const JsonValue& value, int indent, int level, std::string& out) {
  const auto newline = [&](int at) {
    if (indent == 0) return;
    out.push_back('\n');
    out.append(static_cast<std::size_t>(indent * at), ' ');
  };
  switch (value.type()) {
    case JsonValue::Type::kNull:
      out += "null";
      return;
    case JsonValue::Type::kBool:
      out += value.bool_value() ? "true" : "false";
      return;
    case JsonValue::Type::kNumber:
      out += value.text();
      return;
    case JsonValue::Type::kString:
      out += QuoteJson(value.text());
      return;
    case JsonValue::Type::kArray: {
      if (value.items().empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      bool first = true;
      for (const JsonValue& item : value.items()) {
        if (!first) out.push_back(',');
        first = false;
        newline(level + 1);
        Serialize(item, indent, level + 1, out);
      }
      newline(level);
      out.push_back(']');
      return;
    }
    case JsonValue::Type::kObject: {
      if (value.members().empty()) {
        out += "{}";
        return;
      }
      out.push_back('{');
      bool first = true;
      for (const auto& [name, member] : value.members()) {
        if (!first) out.push_back(',');
        first = false;
        newline(level + 1);
        out += QuoteJson(name);
        out += indent == 0 ? ":" : ": ";
        Serialize(member, indent, level + 1, out);
      }
      newline(level);
      out.push_back('}');
      return;
    }
  }
}

}  // namespace

std::string SerializeJson(const JsonValue& value, int indent) {
  std::string out;
  Serialize(value, indent, 0, out);
  return out;
}

}  // namespace nodeward
