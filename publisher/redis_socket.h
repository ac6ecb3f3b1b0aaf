// One connection to a Redis node, owned by walstream: a non-blocking TCP socket (keepalive on) and,
// for rediss://, TLS through OpenSSL on top of it. hiredis 0.14 has no TLS, so hiredis only parses
// the bytes this socket reads (RedisClient, StreamWriter).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "redis_url.h"

struct ssl_st;  // OpenSSL's SSL

namespace walstream {

class RedisSocket {
 public:
  // Connects to url.host:url.port within `timeout`, then (url.tls) the TLS handshake, verifying the
  // server's certificate and host name unless url.tls_files.insecure. Throws RedisError: Transient
  // when the server cannot be reached; Fatal for a certificate that fails verification, a client
  // certificate the server refuses, or TLS files that cannot be loaded.
  RedisSocket(const RedisUrl& url, std::chrono::milliseconds timeout);
  ~RedisSocket();
  RedisSocket(const RedisSocket&) = delete;
  RedisSocket& operator=(const RedisSocket&) = delete;

  int fd() const { return fd_; }
  bool tls() const { return ssl_ != nullptr; }
  // Who this is, in every message: "127.0.0.1:6379/0" (RedisClient sets the sentinel form).
  void set_display(std::string display) { display_ = std::move(display); }
  const std::string& display() const { return display_; }

  // Non-blocking: the bytes written or read, 0 when the socket would block. Throw RedisError
  // (Transient: "lost the Redis connection to … while writing|reading: …"; Fatal for a TLS alert that
  // says the server refuses this client's certificate).
  std::size_t send_some(const char* data, std::size_t len);
  std::size_t recv_some(char* buf, std::size_t cap);
  // TLS: decrypted bytes wait inside OpenSSL; poll() will not report them, read them first.
  bool buffered() const;
  // TLS: the last recv_some needs the socket writable / the last send_some needs it readable.
  bool read_wants_write() const { return read_wants_write_; }
  bool write_wants_read() const { return write_wants_read_; }

  // Blocking, for the synchronous connections: all of `data`; at least one byte. `timeout` 0 waits
  // forever. A timeout throws RedisError (Transient).
  void send_all(std::string_view data, std::chrono::milliseconds timeout);
  std::size_t recv_wait(char* buf, std::size_t cap, std::chrono::milliseconds timeout);

 private:
  void connect_tcp(const RedisUrl& url, std::chrono::milliseconds timeout);
  void handshake(const RedisUrl& url, std::chrono::milliseconds timeout);
  // Waits for the socket (POLLIN/POLLOUT) for at most `timeout` (0: forever).
  void wait_for(short events, std::chrono::milliseconds timeout, const char* doing);
  [[noreturn]] void lost(const char* doing, const std::string& why);
  [[noreturn]] void tls_failed(const char* doing, int ssl_error);

  int fd_ = -1;
  ssl_st* ssl_ = nullptr;  // owned; null without TLS
  std::string display_;
  bool answered_ = false;  // TLS: a reply was read (the server accepted this client)
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
};

}  // namespace walstream
