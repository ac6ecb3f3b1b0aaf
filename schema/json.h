// The JSON writer every encoder uses: rapidjson's streaming Writer (no DOM, no per-value allocation).
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace walstream {

using JsonBuffer = rapidjson::StringBuffer;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

}  // namespace walstream
