#include "common/json.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward {
namespace {

using ::testing::HasSubstr;

TEST(JsonTest, ParsesEveryKindOfValueAndKeepsMemberOrder) {
  absl::StatusOr<JsonValue> value =
      ParseJson(R"( {"z":1, "a":[true,false,null,-1.5e3,"x\u00e9\ud83d\ude00\n"], "m":{}} )");
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_object());
  ASSERT_EQ(value->members().size(), 3u);
  EXPECT_EQ(value->members()[0].first, "z");
  EXPECT_EQ(value->members()[1].first, "a");
  const JsonValue& items = *value->Find("a");
  ASSERT_EQ(items.items().size(), 5u);
  EXPECT_TRUE(items.items()[0].bool_value());
  EXPECT_EQ(items.items()[2].type(), JsonValue::Type::kNull);
  EXPECT_EQ(items.items()[3].text(), "-1.5e3");  // numbers as written
  EXPECT_EQ(items.items()[4].text(), "x\xc3\xa9\xf0\x9f\x98\x80\n");
  EXPECT_EQ(SerializeJson(*value), R"({"z":1,"a":[true,false,null,-1.5e3,"x)"
                                   "\xc3\xa9\xf0\x9f\x98\x80"
                                   R"(\n"],"m":{}})");
}

TEST(JsonTest, RemembersWhereEachValueCameFrom) {
  const std::string text = R"({"prevResult": {"ips": [ {"address":"10.0.0.2/24"} ]}, "x": 1})";
  absl::StatusOr<JsonValue> value = ParseJson(text);
  ASSERT_TRUE(value.ok());
  const JsonValue* prev = value->Find("prevResult");
  EXPECT_EQ(text.substr(prev->source_offset(), prev->source_length()),
            R"({"ips": [ {"address":"10.0.0.2/24"} ]})");
}

TEST(JsonTest, RefusesWhatIsNotStrictJson) {
  for (const char* bad : {"",
                          "{",
                          "[1,]",
                          "{\"a\":1,}",
                          "{\"a\":1 \"b\":2}",
                          "{'a':1}",
                          "01",
                          "1.",
                          "-",
                          "+1",
                          "\"\\x\"",
                          "\"tab\there\"",
                          "\"\\ud800\"",
                          "\"\\udc00\"",
                          "\"\xff\"",
                          "\"\xc0\x80\"",
                          "{\"a\":1,\"a\":2}",
                          "nul",
                          "[1] [2]",
                          "// comment\n1",
                          "\"unterminated"}) {
    EXPECT_FALSE(ParseJson(bad).ok()) << bad;
  }
  EXPECT_THAT(ParseJson("{\"a\":1,\"a\":2}").status().message(), HasSubstr("appears twice"));
  EXPECT_THAT(ParseJson("[1,]").status().message(), HasSubstr("byte 3"));
}

TEST(JsonTest, RefusesDeepNesting) {
  EXPECT_TRUE(ParseJson(std::string(64, '[') + std::string(64, ']')).ok());
  EXPECT_THAT(ParseJson(std::string(100, '[') + std::string(100, ']')).status().message(),
              HasSubstr("deeper than 64"));
}

TEST(JsonTest, BuildsEditsAndPrettyPrints) {
  JsonValue object = JsonValue::Object();
  object.Set("name", JsonValue::String("a\"b"));
  object.Set("list", JsonValue::Array({JsonValue::Number("1"), JsonValue::Bool(false)}));
  object.Set("name", JsonValue::String("c"));
  EXPECT_EQ(SerializeJson(object), R"({"name":"c","list":[1,false]})");
  EXPECT_TRUE(object.Remove("name"));
  EXPECT_FALSE(object.Remove("name"));
  EXPECT_EQ(SerializeJson(object, 2), "{\n  \"list\": [\n    1,\n    false\n  ]\n}");
  EXPECT_EQ(QuoteJson("\x01\\"), "\"\\u0001\\\\\"");
}

}  // namespace
}  // namespace nodeward
