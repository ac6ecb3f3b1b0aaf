// One row of COPY … TO STDOUT in text format -> its fields. Pure.
// Fields are tab-separated, \N is NULL, and backslash escapes (\t \n \\ \ooo \xhh …) are decoded.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace walstream::copy_text {

// Splits and unescapes `line` (without its trailing newline) into `out`; nullopt stands for NULL.
// A field without escapes is a view into `line`; one with escapes is decoded into a string of
// `scratch` (a deque, so that its strings stay put while it grows) and viewed there. The views live
// until the next call with the same `scratch` or until `line` goes. Throws std::invalid_argument on a
// dangling backslash.
void parse_row(std::string_view line, std::vector<std::optional<std::string_view>>& out,
               std::deque<std::string>& scratch);

}  // namespace walstream::copy_text
