// PostgreSQL text output of a value + its type's kind -> typed JSON value (the record contract's table).
// Pure: the type's kind is resolved from pg_type elsewhere (cdc/postgres/catalog); never invents a value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "json.h"

namespace walstream {

// How a value of a type is written in JSON. Domains are resolved to their base type first.
enum class TypeKind : std::uint8_t {
  Text,         // any other type: the PostgreSQL text form as a JSON string
  Bool,         // 't'/'f' -> true/false
  Integer,      // int2, int4, int8, oid -> number
  Float,        // float4, float8 -> number; NaN, Infinity, -Infinity -> strings
  Numeric,      // numeric -> string, exact
  Json,         // json -> embedded JSON, checked first (the text is the user's, kept as written)
  Jsonb,        // jsonb -> embedded JSON as printed (PostgreSQL's own printer, from the binary form)
  Bytea,        // '\x…' hex form -> base64 string
  Date,         // YYYY-MM-DD (infinity, -infinity: text)
  Timestamp,    // YYYY-MM-DDTHH:MM:SS[.ffffff] (infinity, -infinity: text)
  TimestampTz,  // YYYY-MM-DDTHH:MM:SS[.ffffff]Z, from UTC text output (infinity, -infinity: text)
                // Years of all three: ISO 8601, astronomical before 1 AD (44 BC = -0043, 1 BC = 0000),
                // more than four digits past 9999 as PostgreSQL prints them (10000, no '+').
  Array,        // {…} literal -> nested JSON arrays of the element kind; NULL -> null
};

struct TypeInfo {
  TypeKind kind = TypeKind::Text;
  TypeKind element = TypeKind::Text;  // element kind when kind == Array
  char delimiter = ',';                // array element delimiter (pg_type.typdelim of the element)
};

// The kind of a built-in base type OID (16 bool, 20/21/23/26 ints, 700/701 floats, 1700 numeric,
// 114 json, 3802 jsonb, 17 bytea, 1082 date, 1114 timestamp, 1184 timestamptz); Text for anything else.
TypeKind kind_for_base_type(std::uint32_t oid);

// Writes one non-NULL value. `text` is PostgreSQL's output with DateStyle=ISO, TimeZone=UTC,
// IntervalStyle=iso_8601, extra_float_digits=3, bytea_output=hex. A value that does not parse as its
// kind (should never happen) is written as its text, so nothing is lost.
void write_typed_value(JsonWriter& w, const TypeInfo& type, std::string_view text);

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);

}  // namespace walstream
