// A stream entry of the record contract -> the one-line JSON that `walstream tail` prints.
// Pure (no I/O): the caller reads Redis and writes the line; also the compact-JSON check it relies on.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace walstream {

// {"stream_id":<stream key>,"id":<entry ID>,"op":…,"table":…,"key":…,"after":…,"before":…,
//  "unchanged":…,"ts":…} in that order, without a trailing newline. `key`, `after`, `before` and
// `unchanged` are embedded JSON, re-written without insignificant whitespace so that a json column
// stored with its newlines still fits on one line; a field the entry does not have is left out (never
// null), and a value that is not valid JSON (never written by walstream) is kept as a JSON string.
// Other fields (lsn, xid, schema, anything foreign) are not printed.
std::string record_json_line(std::string_view stream, std::string_view id,
                             std::span<const std::pair<std::string, std::string>> fields);

// Checks that `text` is one JSON value (RFC 8259 grammar, any nesting depth, numbers of any size)
// and appends it to `out` without whitespace outside strings. On false `out` holds a partial copy.
bool compact_json(std::string_view text, std::string& out);

}  // namespace walstream
