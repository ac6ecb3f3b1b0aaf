// --metrics-listen: /metrics (Prometheus text format), /healthz and /readyz over HTTP, served by
// cpp-httplib on a thread of its own, from the process's metrics registry (metrics.h).
#pragma once

#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace walstream {

struct ListenAddress {
  std::string host;
  int port = 0;
};
// "HOST:PORT", "[::1]:PORT" or ":PORT" (every address). Throws std::invalid_argument.
ListenAddress parse_listen_address(const std::string& text);

class MetricsServer {
 public:
  // Listens at once (throws std::runtime_error with one line when it cannot), serves until destroyed.
  explicit MetricsServer(const ListenAddress& address);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace walstream
