// schema/type_codec: PostgreSQL's text output -> the record contract's typed JSON, compared as exact
// JSON text. Inputs come from a real PostgreSQL 15 (tests/fixtures/type_values.tsv, written by
// capture_type_values.sh); the expected JSON is written here by hand from the contract.
#include "type_codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace walstream {
namespace {

std::string encode(const TypeInfo& type, std::string_view text) {
  JsonWriter w;
  write_typed_value(w, type, text);
  EXPECT_TRUE(w.complete()) << "one whole JSON value for " << text;
  return std::string(w.view());
}

// The value written as a plain JSON string: what a value that does not parse as its kind becomes.
std::string as_json_string(std::string_view text) {
  JsonWriter w;
  w.string(text);
  return std::string(w.view());
}

TypeInfo scalar(TypeKind kind) { return {kind, TypeKind::Text, ','}; }
TypeInfo array_of(TypeKind element, char delimiter = ',') { return {TypeKind::Array, element, delimiter}; }

// ---- cases captured from PostgreSQL ------------------------------------------------------------

struct CapturedCase {
  std::string name;
  std::string type;
  std::uint32_t oid = 0;
  std::uint32_t elem_oid = 0;
  char delimiter = ',';
  std::string literal;
  std::string output;
};

void PrintTo(const CapturedCase& c, std::ostream* os) { *os << c.name << " (" << c.literal << "::" << c.type << ")"; }

// COPY's text format escapes backslash and control characters; the fixture has no NULL fields.
std::string copy_unescape(std::string_view field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\' || i + 1 == field.size()) {
      out.push_back(field[i]);
      continue;
    }
    switch (const char c = field[++i]) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'v': out.push_back('\v'); break;
      default: out.push_back(c); break;
    }
  }
  return out;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  std::size_t start = 0;
  for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) {
    fields.push_back(line.substr(start, tab - start));
  }
  fields.push_back(line.substr(start));
  return fields;
}

std::vector<CapturedCase> load_captured_cases() {
  std::vector<CapturedCase> cases;
  std::ifstream in(WALSTREAM_FIXTURES "/type_values.tsv");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = split_tabs(line);
    if (f.size() != 7) continue;  // reported by FixtureIsComplete through the missing names
    CapturedCase c;
    c.name = copy_unescape(f[0]);
    c.type = copy_unescape(f[1]);
    c.oid = static_cast<std::uint32_t>(std::stoul(f[2]));
    c.elem_oid = static_cast<std::uint32_t>(std::stoul(f[3]));
    c.delimiter = copy_unescape(f[4]).at(0);
    c.literal = copy_unescape(f[5]);
    c.output = copy_unescape(f[6]);
    cases.push_back(std::move(c));
  }
  return cases;
}

const std::vector<CapturedCase>& captured_cases() {
  static const std::vector<CapturedCase> cases = load_captured_cases();
  return cases;
}

// As the catalog resolves it: an array type (one whose element's typarray points at it) is an Array
// of its element's kind, split on the element's typdelim; any other type is its base type's kind.
TypeInfo type_info_of(const CapturedCase& c) {
  if (c.elem_oid == 0) return scalar(kind_for_base_type(c.oid));
  return array_of(kind_for_base_type(c.elem_oid), c.delimiter);
}

const std::map<std::string, std::string>& expected_json() {
  static const std::map<std::string, std::string> expected = {
      {"bool_true", "true"},
      {"bool_false", "false"},
      {"int2_min", "-32768"},
      {"int2_max", "32767"},
      {"int4_min", "-2147483648"},
      {"int4_max", "2147483647"},
      {"int8_min", "-9223372036854775808"},
      {"int8_max", "9223372036854775807"},
      {"oid_max", "4294967295"},
      {"float4_one_and_half", "1.5"},
      {"float4_tenth", "0.1"},
      {"float4_max", "3.4028235e+38"},
      {"float4_denormal", "1e-45"},
      {"float4_nan", R"("NaN")"},
      {"float8_one_and_half", "1.5"},
      {"float8_tenth", "0.1"},
      {"float8_tenth_plus_fifth", "0.30000000000000004"},
      {"float8_big", "1e+300"},
      {"float8_large_integer", "1.2345678901234568e+20"},
      {"float8_small", "1.5e-07"},
      {"float8_denormal", "5e-324"},
      {"float8_negative_zero", "-0"},
      {"float8_nan", R"("NaN")"},
      {"float8_infinity", R"("Infinity")"},
      {"float8_minus_infinity", R"("-Infinity")"},
      {"numeric_big", R"("12345678901234567890.123456789012345678901234567890")"},
      {"numeric_trailing_zeros", R"("1.50")"},
      {"numeric_small", R"("-0.00000000015")"},
      {"numeric_nan", R"("NaN")"},
      {"numeric_infinity", R"("Infinity")"},
      // json keeps the user's text (escapes, spacing, even duplicate keys); jsonb is normalized.
      {"json_nested", R"({"b": [1, 2.5e10, null, true], "a": {"c": "\u00e9 é 😀"}})"},
      {"json_multiline", "{\n  \"a\" : 1,\n  \"a\" : 2\n}"},
      {"json_huge_number", R"({"big": 1e400})"},
      {"json_scalar_string", R"("just text")"},
      {"json_null", "null"},
      {"jsonb_nested", R"({"a": {"c": "é 😀"}, "b": [1, 25000000000, null, true]})"},
      {"jsonb_huge_number", R"({"big": 1)" + std::string(400, '0') + "}"},
      {"jsonb_escapes", R"({"q": "say \"hi\"\\n", "tab": "\t"})"},
      {"bytea_empty", R"("")"},
      {"bytea_binary", R"("AP9/gA==")"},
      {"bytea_text", R"("Zm9vYmFy")"},
      {"date_plain", R"("2026-11-27")"},
      {"date_infinity", R"("infinity")"},
      {"date_minus_infinity", R"("-infinity")"},
      // Years before 1 AD in ISO 8601's astronomical numbering (1 BC is 0000, 2 BC is -0001); years
      // past 9999 with as many digits as PostgreSQL prints and no sign.
      {"date_bc", R"("-1999-01-01")"},
      {"date_year_10000", R"("10000-01-01")"},
      {"date_44_bc", R"("-0043-03-15")"},
      {"date_1_bc", R"("0000-12-31")"},
      {"date_1_ad", R"("0001-01-01")"},
      {"date_min", R"("-4712-01-01")"},
      {"date_max", R"("5874897-12-31")"},
      {"timestamp_micros", R"("2026-11-27T01:35:15.123456")"},
      {"timestamp_half_second", R"("2026-11-27T01:35:15.5")"},
      {"timestamp_whole_second", R"("2026-11-27T01:35:15")"},
      {"timestamp_infinity", R"("infinity")"},
      {"timestamp_minus_infinity", R"("-infinity")"},
      {"timestamp_bc", R"("-1999-01-01T01:02:03.25")"},
      {"timestamp_year_10000", R"("10000-01-01T00:00:00")"},
      {"timestamp_1_bc", R"("0000-12-31T23:59:59.999999")"},
      {"timestamp_min", R"("-4713-11-24T00:00:00")"},
      {"timestamp_max", R"("294276-12-31T23:59:59.999999")"},
      {"timestamptz_from_plus_two", R"("2026-11-27T01:35:15.5Z")"},
      {"timestamptz_micros_utc", R"("2026-11-27T01:35:15.123456Z")"},
      {"timestamptz_from_half_hour_zone", R"("2026-11-27T05:00:00Z")"},
      {"timestamptz_infinity", R"("infinity")"},
      {"timestamptz_minus_infinity", R"("-infinity")"},
      {"timestamptz_bc", R"("-1999-01-01T00:00:00Z")"},
      {"timestamptz_44_bc", R"("-0043-03-15T12:00:00Z")"},
      {"timestamptz_1_bc_from_plus_two", R"("0000-12-31T23:00:00.5Z")"},
      {"timestamptz_min", R"("-4713-11-24T00:00:00Z")"},
      {"timestamptz_year_10000", R"("10000-01-01T00:00:00Z")"},
      {"timestamptz_max", R"("294276-12-31T23:59:59.999999Z")"},
      {"time_micros", R"("01:35:15.123456")"},
      {"timetz_plus_two", R"("01:35:15.5+02")"},
      {"interval_full", R"("P1Y2M3DT4H5M6S")"},
      {"interval_negative_fraction", R"("P-1DT-0.5S")"},
      {"uuid_plain", R"("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")"},
      {"text_specials", R"("quote \" backslash \\ newline \n tab \t cr \r unicode é😀")"},
      {"text_empty", R"("")"},
      {"varchar_plain", R"("abc")"},
      {"char_padded", R"("ab   ")"},
      {"enum_value", R"("happy")"},
      {"inet_host", R"("192.168.0.1")"},
      {"cidr_net", R"("10.0.0.0/8")"},
      {"int2vector_not_array", R"("1 2 3")"},
      {"int4_array_with_null", "[1,null,3]"},
      {"int8_array_extremes", "[-9223372036854775808,9223372036854775807]"},
      {"text_array_specials",
       R"(["plain","a b","c\"d","e\\f","g,h","NULL","null",""," lead","x{y}","é😀","new\nline",null])"},
      {"text_array_nested", R"([["a","b c"],["NULL",null]])"},
      {"int4_array_nested", "[[1,2],[3,4]]"},
      {"int4_array_empty", "[]"},
      {"int4_array_lower_bound_zero", "[1,2]"},
      {"int4_array_nested_bounds", "[[1,2],[3,4]]"},
      // A jsonb element that is JSON null and an SQL NULL element are both null.
      {"jsonb_array", R"([{"a": 1},"s",null,[1, 2],3,null])"},
      {"json_array", R"([{ "a" : [1,2] },true])"},
      {"bool_array", "[true,false,null]"},
      {"numeric_array", R"(["1.50","NaN","-Infinity","12345678901234567890.5"])"},
      {"float8_array_specials", R"(["NaN",1.5,"-Infinity","Infinity",-0,1e+300])"},
      {"float4_array", R"([0.1,"NaN"])"},
      {"timestamptz_array", R"(["2026-11-27T01:35:15.5Z","infinity",null])"},
      {"timestamp_array", R"(["2026-11-27T01:35:15","-infinity","-1999-01-01T00:00:00"])"},
      {"date_array", R"(["2026-11-27","infinity","-1999-01-01"])"},
      {"timestamptz_array_bc", R"(["-0043-03-15T12:00:00Z","-infinity"])"},
      {"bytea_array", R"(["AP8=","","Zm9vYmFy",null])"},
      {"box_array", R"j(["(1,1),(0,0)","(3,3),(2,2)"])j"},
      {"char_array", R"(["ab ","abc"])"},
      {"uuid_array", R"(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])"},
      {"enum_array", R"(["sad","happy"])"},
      {"interval_array", R"(["P1D","PT-1H"])"},
  };
  return expected;
}

class CapturedValue : public ::testing::TestWithParam<CapturedCase> {};

TEST_P(CapturedValue, EncodesAsTheContractSays) {
  const CapturedCase& c = GetParam();
  const auto expected = expected_json().find(c.name);
  ASSERT_NE(expected, expected_json().end()) << "write the expected JSON for fixture case " << c.name;
  EXPECT_EQ(encode(type_info_of(c), c.output), expected->second) << "PostgreSQL printed: " << c.output;
}

INSTANTIATE_TEST_SUITE_P(Fixture, CapturedValue, ::testing::ValuesIn(captured_cases()),
                         [](const ::testing::TestParamInfo<CapturedCase>& info) { return info.param.name; });

// Guards against a fixture that went missing or lost cases: every expectation must be exercised.
TEST(CapturedValues, FixtureHasEveryExpectedCase) {
  ASSERT_FALSE(captured_cases().empty()) << "cannot read " WALSTREAM_FIXTURES "/type_values.tsv";
  std::map<std::string, int> seen;
  for (const CapturedCase& c : captured_cases()) ++seen[c.name];
  for (const auto& [name, json] : expected_json()) EXPECT_EQ(seen[name], 1) << name << " in type_values.tsv";
}

// The server's own word on the quirks the codec relies on, so a re-capture that changes them shows here.
TEST(CapturedValues, PostgreSqlPrintsWhatTheCodecExpects) {
  std::map<std::string, std::string> output;
  for (const CapturedCase& c : captured_cases()) output[c.name] = c.output;
  EXPECT_EQ(output["timestamptz_from_plus_two"], "2026-11-27 01:35:15.5+00");  // TimeZone=UTC: "+00"
  EXPECT_EQ(output["timestamptz_44_bc"], "0044-03-15 12:00:00+00 BC");           // " BC" after the offset
  EXPECT_EQ(output["timestamp_1_bc"], "0001-12-31 23:59:59.999999 BC");          // 1 BC, not year 0
  EXPECT_EQ(output["bytea_array"], R"({"\\x00ff","\\x","\\x666f6f626172",NULL})");
  EXPECT_EQ(output["box_array"], "{(1,1),(0,0);(3,3),(2,2)}");  // ';' between boxes, commas unquoted
  EXPECT_EQ(output["char_padded"], "ab   ");                    // output function, not ::text
  EXPECT_EQ(output["float8_tenth"], "0.1");  // extra_float_digits > 0: shortest exact, not 17 digits
}

// ---- kinds ------------------------------------------------------------------------------------

TEST(KindForBaseType, MapsTheContractsBuiltInTypes) {
  EXPECT_EQ(kind_for_base_type(16), TypeKind::Bool);
  for (std::uint32_t oid : {20u, 21u, 23u, 26u}) EXPECT_EQ(kind_for_base_type(oid), TypeKind::Integer) << oid;
  for (std::uint32_t oid : {700u, 701u}) EXPECT_EQ(kind_for_base_type(oid), TypeKind::Float) << oid;
  EXPECT_EQ(kind_for_base_type(1700), TypeKind::Numeric);
  EXPECT_EQ(kind_for_base_type(114), TypeKind::Json);
  EXPECT_EQ(kind_for_base_type(3802), TypeKind::Jsonb);
  EXPECT_EQ(kind_for_base_type(17), TypeKind::Bytea);
  EXPECT_EQ(kind_for_base_type(1082), TypeKind::Date);
  EXPECT_EQ(kind_for_base_type(1114), TypeKind::Timestamp);
  EXPECT_EQ(kind_for_base_type(1184), TypeKind::TimestampTz);
}

TEST(KindForBaseType, EverythingElseIsText) {
  // text, varchar, uuid, time, interval, int4[] (arrays are resolved by the catalog), a user type.
  for (std::uint32_t oid : {25u, 1043u, 2950u, 1083u, 1186u, 1007u, 16385u, 0u}) {
    EXPECT_EQ(kind_for_base_type(oid), TypeKind::Text) << oid;
  }
}

// ---- base64 ------------------------------------------------------------------------------------

TEST(Base64, Rfc4648TestVectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
}

TEST(Base64, BinaryBytesUseTheWholeAlphabet) {
  EXPECT_EQ(base64_encode(std::string_view("\x00\xff\xfe", 3)), "AP/+");
  EXPECT_EQ(base64_encode(std::string_view("\xfb\xef\xbe", 3)), "++++");
}

// ---- values that do not parse as their kind keep their text ---------------------------------

struct Fallback {
  TypeKind kind;
  const char* text;
};

TEST(Fallback, ScalarsThatDoNotParseAreWrittenAsTheirText) {
  const Fallback cases[] = {
      {TypeKind::Bool, "true"},
      {TypeKind::Bool, ""},
      {TypeKind::Integer, "12a"},
      {TypeKind::Integer, "01"},
      {TypeKind::Integer, "+1"},
      {TypeKind::Integer, ""},
      {TypeKind::Float, "1."},
      {TypeKind::Float, "1e"},
      {TypeKind::Float, ".5"},
      {TypeKind::Float, "nan"},
      {TypeKind::Bytea, "\\x0"},
      {TypeKind::Bytea, "\\xzz"},
      {TypeKind::Bytea, "abc"},  // bytea_output=escape
      {TypeKind::Timestamp, "2026-11-27T01:35:15"},
      {TypeKind::Timestamp, "2026-11-27 1:35:15"},
      {TypeKind::Timestamp, "2026-11-27 01:35:15."},
      {TypeKind::Timestamp, "2026-11-27 01:35:15+00"},
      {TypeKind::Timestamp, "26-11-27 01:35:15"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15Z"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15+0"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15-00"},
      {TypeKind::Date, "26-11-27"},
      {TypeKind::Date, "2026-1-27"},
      {TypeKind::Date, "2026-11-27 00:00:00"},
      {TypeKind::Date, "-2026-11-27"},
      {TypeKind::Date, ""},
      // " BC" exactly as PostgreSQL appends it, and never to year 0, which it does not print.
      {TypeKind::Date, "2026-11-27 bc"},
      {TypeKind::Date, "2026-11-27BC"},
      {TypeKind::Date, "2026-11-27 BC "},
      {TypeKind::Date, "0000-01-01 BC"},
      {TypeKind::Timestamp, "2026-11-27 01:35:15 BC BC"},
      {TypeKind::Timestamp, "0000-01-01 00:00:00 BC"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15 BC+00"},
      {TypeKind::TimestampTz, "0000-01-01 00:00:00+00 BC"},
      {TypeKind::TimestampTz, "2026-11-27 01:35:15+02 BC"},
  };
  for (const Fallback& c : cases) EXPECT_EQ(encode(scalar(c.kind), c.text), as_json_string(c.text)) << c.text;
}

// The session should be in UTC; if it is not, the exact text beats a silently shifted clock.
TEST(Fallback, TimestampTzWithANonZeroOffsetKeepsItsText) {
  EXPECT_EQ(encode(scalar(TypeKind::TimestampTz), "2026-11-27 03:35:15.5+02"), R"("2026-11-27 03:35:15.5+02")");
  EXPECT_EQ(encode(scalar(TypeKind::TimestampTz), "1800-01-01 05:53:28+05:53:28"),
            R"("1800-01-01 05:53:28+05:53:28")");
}

// ISO 8601's astronomical year, signed and at least four digits, beyond the captured cases too.
TEST(Years, BeforeOneAdAreAstronomicalWithAtLeastFourDigits) {
  EXPECT_EQ(encode(scalar(TypeKind::Date), "0002-06-01 BC"), R"("-0001-06-01")");
  EXPECT_EQ(encode(scalar(TypeKind::Date), "1000-06-01 BC"), R"("-0999-06-01")");
  EXPECT_EQ(encode(scalar(TypeKind::Date), "1001-06-01 BC"), R"("-1000-06-01")");
  EXPECT_EQ(encode(scalar(TypeKind::Date), "10001-06-01 BC"), R"("-10000-06-01")");
  EXPECT_EQ(encode(scalar(TypeKind::Timestamp), "0010-06-01 00:00:00.000001 BC"), R"("-0009-06-01T00:00:00.000001")");
  EXPECT_EQ(encode(scalar(TypeKind::TimestampTz), "0001-01-01 00:00:00+00:00 BC"), R"("0000-01-01T00:00:00Z")");
}

TEST(Years, FromOneAdKeepTheirDigitsWithoutASign) {
  EXPECT_EQ(encode(scalar(TypeKind::Date), "0001-01-01"), R"("0001-01-01")");
  EXPECT_EQ(encode(scalar(TypeKind::Date), "9999-12-31"), R"("9999-12-31")");
  EXPECT_EQ(encode(scalar(TypeKind::Timestamp), "12345-01-01 00:00:00"), R"("12345-01-01T00:00:00")");
}

TEST(TimestampTz, EveryZeroOffsetFormIsUtc) {
  EXPECT_EQ(encode(scalar(TypeKind::TimestampTz), "2026-11-27 01:35:15+00:00"), R"("2026-11-27T01:35:15Z")");
  EXPECT_EQ(encode(scalar(TypeKind::TimestampTz), "2026-11-27 01:35:15.000001+00:00:00"),
            R"("2026-11-27T01:35:15.000001Z")");
}

TEST(Bytea, UppercaseHexDigitsAreAccepted) {
  EXPECT_EQ(encode(scalar(TypeKind::Bytea), "\\xFFfe"), R"("//4=")");
}

// jsonb is embedded as printed, unchecked; only something that cannot be its text output at all
// (empty, or binary jsonb's version byte) is written as a string instead.
TEST(Jsonb, EmbeddedAsPrintedUnlessNotTextOutput) {
  for (const char* json : {R"({"a": [1, "x"]})", "[]", R"("s")", "-1.5", "0", "true", "false", "null"}) {
    EXPECT_EQ(encode(scalar(TypeKind::Jsonb), json), json);
  }
  EXPECT_EQ(encode(scalar(TypeKind::Jsonb), ""), R"("")");
  const std::string binary = std::string("\x01") + R"({"a": 1})";
  EXPECT_EQ(encode(scalar(TypeKind::Jsonb), binary), as_json_string(binary));
}

TEST(Json, DeepNestingNeitherOverflowsNorFallsBack) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(encode(scalar(TypeKind::Json), deep), deep);
}

// json (not jsonb) accepts any \u escape, as JSON's grammar does, even an unpaired surrogate.
TEST(Json, UnpairedSurrogateEscapeIsEmbedded) {
  EXPECT_EQ(encode(scalar(TypeKind::Json), R"(["\ud800","\udc00"])"), R"(["\ud800","\udc00"])");
}

TEST(Json, EveryValidFormIsEmbeddedAsIs) {
  const char* const cases[] = {
      "{}", "[]", " [ ] ", "\"\"", "0", "-0.5e+3", "1E-2", "true", "false", "null", "\t{ \"a\" :\r\n[ ] }\n",
      R"({"a":{"b":[{},[],"",0,null]},"c":"\"\\\/\b\f\n\r\t\u00E9"})",
      R"([1e999999,-123456789012345678901234567890.5])",
  };
  for (const char* json : cases) EXPECT_EQ(encode(scalar(TypeKind::Json), json), json);
}

TEST(Fallback, InvalidJsonIsWrittenAsItsText) {
  const char* const cases[] = {
      "", " ", "tru", "nul", "True", "NaN", "'a'",                                  // not a value
      "[1 2]", "[1,]", "[,1]", "[1}", "[", "]", "[1]x", "{} {}",                    // arrays, trailing text
      R"({"a" 1})", R"({"a":})", R"({"a":1,})", "{1:2}", R"({"a"})", R"({"a":1])",  // objects
      "01", "1.", ".5", "+1", "-",                                                  // numbers
      R"("a)", "\"a\tb\"", R"("\x")", R"("\u12")", R"("\u12g4")", "\"\x01\"1",      // strings
  };
  for (const char* text : cases) EXPECT_EQ(encode(scalar(TypeKind::Json), text), as_json_string(text)) << text;
}

TEST(Fallback, MalformedArrayLiteralsAreWrittenAsTheirText) {
  const char* const cases[] = {
      "", "{", "}", "1,2", "{1,2", "{1}}", "{1}x", "{1}{2}",  // braces
      "{1,,2}", "{,1}", "{1,}",                               // delimiters
      R"({"a})", R"({"a\)", R"({"a"b})", R"({1,"2"3})",       // quoted elements
      R"({a"b})", R"({a\b})", "{1{2}}",                       // unquoted elements
      "[0:1]{1,2}", "[0:1={1,2}", "[a:b]={1}",                // dimension decorations
  };
  for (const char* text : cases) EXPECT_EQ(encode(array_of(TypeKind::Integer), text), as_json_string(text)) << text;
}

// ---- arrays: what array_in accepts beyond array_out's exact form --------------------------------

TEST(Array, WhiteSpaceAroundElementsAndBracesIsSkipped) {
  EXPECT_EQ(encode(array_of(TypeKind::Integer), " { 1 , 2 } "), "[1,2]");
  EXPECT_EQ(encode(array_of(TypeKind::Text), "{ a b , \"c\" }"), R"(["a b","c"])");
  EXPECT_EQ(encode(array_of(TypeKind::Integer), "{ { 1 } , { 2 } }"), "[[1],[2]]");
}

TEST(Array, UnquotedNullInAnyCaseIsNull) {
  EXPECT_EQ(encode(array_of(TypeKind::Text), R"({null,Null,NULL,"null",nulls})"), R"([null,null,null,"null","nulls"])");
}

TEST(Array, QuotedBackslashMakesAnyCharacterLiteral) {
  EXPECT_EQ(encode(array_of(TypeKind::Text), R"({"\a\\\"\{"})"), R"(["a\\\"{"])");
}

TEST(Array, AnElementThatDoesNotParseKeepsItsTextAndTheRestIsTyped) {
  EXPECT_EQ(encode(array_of(TypeKind::Integer), "{1,x,3}"), R"([1,"x",3])");
  EXPECT_EQ(encode(array_of(TypeKind::TimestampTz), R"({"2026-11-27 01:35:15+00","2026-11-27 03:35:15+02"})"),
            R"(["2026-11-27T01:35:15Z","2026-11-27 03:35:15+02"])");
  EXPECT_EQ(encode(array_of(TypeKind::Json), R"({"{\"a\":",1})"), R"(["{\"a\":",1])");
}

TEST(Array, AnEmptyQuotedElementIsAnEmptyString) {
  EXPECT_EQ(encode(array_of(TypeKind::Text), R"({"",""})"), R"(["",""])");
}

TEST(Array, ScalarKindWritesTheLiteralAsText) {
  EXPECT_EQ(encode(scalar(TypeKind::Text), "{1,2}"), R"("{1,2}")");
}

// ---- buffers and the enclosing document ----------------------------------------------------------

// A huge value must encode the same as small ones, before and after (the scratch buffers are reused).
TEST(Buffers, HugeValuesBetweenSmallOnes) {
  std::string bytes;
  for (int i = 0; i < 300000; ++i) bytes.push_back(static_cast<char>(i * 7));
  std::string hex = "\\x";
  for (char b : bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    hex.push_back(kDigits[static_cast<unsigned char>(b) >> 4]);
    hex.push_back(kDigits[static_cast<unsigned char>(b) & 15]);
  }
  EXPECT_EQ(encode(scalar(TypeKind::Bytea), "\\x666f"), R"("Zm8=")");
  std::string quoted = base64_encode(bytes);
  quoted.insert(quoted.begin(), '"');
  quoted.push_back('"');
  EXPECT_EQ(encode(scalar(TypeKind::Bytea), hex), quoted);
  EXPECT_EQ(encode(scalar(TypeKind::Bytea), "\\x66"), R"("Zg==")");

  const std::string long_text(200000, 'x');
  EXPECT_EQ(encode(array_of(TypeKind::Text), "{\"" + long_text + "\\\\\"}"), "[\"" + long_text + "\\\\\"]");
  EXPECT_EQ(encode(array_of(TypeKind::Text), R"({"a\"b"})"), R"(["a\"b"])");
}

// Values sit inside the record's objects: fallbacks and arrays must leave the writer consistent.
TEST(Document, ValuesInsideAnObject) {
  JsonWriter w;
  w.start_object();
  w.key("ids");
  write_typed_value(w, array_of(TypeKind::Integer), "{{1,NULL},{3,4}}");
  w.key("bad");
  write_typed_value(w, array_of(TypeKind::Integer), "{1,");
  w.key("doc");
  write_typed_value(w, scalar(TypeKind::Json), R"({"k": [true]})");
  w.key("n");
  write_typed_value(w, scalar(TypeKind::Float), "NaN");
  w.key("ok");
  write_typed_value(w, scalar(TypeKind::Bool), "t");
  w.end_object();
  EXPECT_TRUE(w.complete());
  EXPECT_EQ(std::string(w.view()),
            R"({"ids":[[1,null],[3,4]],"bad":"{1,","doc":{"k": [true]},"n":"NaN","ok":true})");
}

}  // namespace
}  // namespace walstream
