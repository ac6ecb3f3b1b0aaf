// SIGTERM/SIGINT for every command: a flag the loops poll and a pipe that wakes a poll() at once.
// Knows nothing of what is being stopped.
#pragma once

namespace walstream {

// Installs the handlers (no SA_RESTART: a blocking call returns EINTR and the caller sees the flag)
// and ignores SIGPIPE.
void install_stop_handlers();
bool stop_requested();
// Readable once a stop was requested; drain_stop_pipe() empties it after a poll() woke on it.
int stop_pipe_fd();
void drain_stop_pipe();

}  // namespace walstream
