// One row of COPY … TO STDOUT in text format -> its fields. Pure.
// Fields are tab-separated, \N is NULL, and backslash escapes (\t \n \\ \ooo \xhh …) are decoded.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace walstream::copy_text {

// Splits and unescapes `line` (without its trailing newline) into `out`; nullopt stands for NULL.
// Reuses the strings in `out`. Throws std::invalid_argument on a dangling backslash.
void parse_row(std::string_view line, std::vector<std::optional<std::string>>& out);

}  // namespace walstream::copy_text
