#include "metrics_server.h"

#include <httplib.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "metrics.h"

namespace walstream {

ListenAddress parse_listen_address(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument(fmt::format("'{}' is not HOST:PORT", text));
  ListenAddress a;
  a.host = text.substr(0, colon);
  if (a.host.size() >= 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
  if (a.host.empty()) a.host = "0.0.0.0";
  auto port = text.substr(colon + 1);
  std::size_t used = 0;
  try {
    a.port = std::stoi(port, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (port.empty() || used != port.size() || a.port < 1 || a.port > 65535) {
    throw std::invalid_argument(fmt::format("'{}' has no port between 1 and 65535", text));
  }
  return a;
}

MetricsServer::MetricsServer(const ListenAddress& address) : server_(std::make_unique<httplib::Server>()) {
  auto& s = *server_;
  // One worker: a scrape is rendered in microseconds, and the streaming thread must keep the CPU.
  s.new_task_queue = [] { return new httplib::ThreadPool(1); };
  s.Get("/metrics", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics::registry().render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  // Ready only while this instance holds the slot and streams: a load balancer or an orchestrator's
  // readiness check then points at the active instance, and a standby is alive but not ready.
  s.Get("/readyz", [](const httplib::Request&, httplib::Response& res) {
    auto role = metrics::registry().role.load();
    res.status = role == metrics::Role::Active ? 200 : 503;
    res.set_content(fmt::format("{}\n", metrics::role_name(role)), "text/plain");
  });
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second walstream on the
  // same host and port would bind too and answer every other scrape.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  errno = 0;
  if (!s.bind_to_port(address.host, address.port)) {
    throw std::runtime_error(fmt::format("--metrics-listen {}:{}: cannot listen ({})", address.host, address.port,
                                         errno ? std::strerror(errno) : "bind failed"));
  }
  // The server's threads never take SIGTERM/SIGINT: the streaming thread's poll() must see them.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

MetricsServer::~MetricsServer() {
  // stop() does nothing before the loop runs: a process stopped within its first moments waits for it.
  while (!server_->is_running() && thread_.joinable()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace walstream
