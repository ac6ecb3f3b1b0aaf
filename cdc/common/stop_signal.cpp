#include "stop_signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace walstream {
namespace {

std::atomic<bool> g_stop{false};
int g_wake_pipe[2] = {-1, -1};

void on_signal(int) {
  g_stop = true;
  if (g_wake_pipe[1] >= 0) {
    char c = 1;
    [[maybe_unused]] auto n = write(g_wake_pipe[1], &c, 1);
  }
}

}  // namespace

void install_stop_handlers() {
  if (g_wake_pipe[0] < 0 && pipe2(g_wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    g_wake_pipe[0] = g_wake_pipe[1] = -1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() { return g_stop; }

int stop_pipe_fd() { return g_wake_pipe[0]; }

void drain_stop_pipe() {
  char drain[16];
  if (g_wake_pipe[0] >= 0) [[maybe_unused]] auto ignored = read(g_wake_pipe[0], drain, sizeof drain);
}

}  // namespace walstream
