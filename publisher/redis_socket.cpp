#include "redis_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <mutex>

#include "redis_error.h"

namespace walstream {
namespace {

using Clock = std::chrono::steady_clock;

// The oldest error OpenSSL queued, as one line; the queue is emptied.
std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown TLS error";
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : fmt::format("OpenSSL error {:#x}", e);
}

// Alerts a server sends when it refuses this client's certificate (mutual TLS), or ours refused its:
// settings to fix, not a connection to retry.
bool certificate_alert(unsigned long e) {
  if (ERR_GET_LIB(e) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(e)) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      return true;
    default:
      return false;
  }
}

void set_option(int fd, int level, int name, int value) { setsockopt(fd, level, name, &value, sizeof value); }

bool is_ip_address(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<long long>(left, 0));
}

}  // namespace

RedisSocket::RedisSocket(const RedisUrl& url, std::chrono::milliseconds timeout) : display_(url.display()) {
  connect_tcp(url, timeout);
  if (url.tls) {
    try {
      handshake(url, timeout);
    } catch (...) {
      if (ssl_) SSL_free(ssl_);
      ::close(fd_);
      throw;
    }
  }
}

RedisSocket::~RedisSocket() {
  if (ssl_) SSL_free(ssl_);  // no close_notify: the server sees the connection end either way
  if (fd_ >= 0) ::close(fd_);
}

void RedisSocket::connect_tcp(const RedisUrl& url, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const auto port = std::to_string(url.port);
  if (int rc = getaddrinfo(url.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    throw RedisError(RedisError::Kind::Transient,
                     fmt::format("cannot connect to Redis at {}: {}", display_, gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, freeaddrinfo);
  std::string why = "no address";
  const auto deadline = Clock::now() + timeout;
  for (auto* a = found; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, timeout.count() > 0 ? remaining_ms(deadline) : -1);
      if (rc == 0) {
        why = "timed out";
        rc = -1;
      } else if (rc > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        if (err) why = std::strerror(err);
      } else {
        why = std::strerror(errno);
      }
    } else if (rc < 0) {
      why = std::strerror(errno);
    }
    if (rc == 0) {
      fd_ = fd;
      break;
    }
    ::close(fd);
  }
  if (fd_ < 0) {
    throw RedisError(RedisError::Kind::Transient, fmt::format("cannot connect to Redis at {}: {}", display_, why));
  }
  // As hiredis does: no Nagle delay; a peer that vanishes without a reset is noticed in ~30 s.
  set_option(fd_, IPPROTO_TCP, TCP_NODELAY, 1);
  set_option(fd_, SOL_SOCKET, SO_KEEPALIVE, 1);
  set_option(fd_, IPPROTO_TCP, TCP_KEEPIDLE, 15);
  set_option(fd_, IPPROTO_TCP, TCP_KEEPINTVL, 5);
  set_option(fd_, IPPROTO_TCP, TCP_KEEPCNT, 3);
}

void RedisSocket::handshake(const RedisUrl& url, std::chrono::milliseconds timeout) {
  static std::once_flag no_sigpipe;
  std::call_once(no_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });  // OpenSSL writes with write(2)
  const auto& files = url.tls_files;
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) throw RedisError(RedisError::Kind::Fatal, "TLS: " + openssl_error());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  auto fatal = [&](const std::string& what) { throw RedisError(RedisError::Kind::Fatal, what); };
  if (!files.insecure) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (!files.ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx.get(), files.ca_file.c_str(), nullptr) != 1) {
        fatal(fmt::format("TLS: cannot load the CA certificates of --redis-tls-ca {}: {}", files.ca_file,
                          openssl_error()));
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      fatal(fmt::format("TLS: cannot load the system's CA certificates: {}", openssl_error()));
    }
  }
  if (files.cert_file.empty() != files.key_file.empty()) {
    fatal("TLS: --redis-tls-cert and --redis-tls-key go together (a client certificate and its key)");
  }
  if (!files.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.cert_file.c_str()) != 1) {
      fatal(fmt::format("TLS: cannot load --redis-tls-cert {}: {}", files.cert_file, openssl_error()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      fatal(fmt::format("TLS: cannot load --redis-tls-key {}: {}", files.key_file, openssl_error()));
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      fatal(fmt::format("TLS: --redis-tls-key {} is not the key of --redis-tls-cert {}", files.key_file,
                        files.cert_file));
    }
  }
  ssl_ = SSL_new(ctx.get());
  if (!ssl_) fatal("TLS: " + openssl_error());
  // A retried SSL_write may pass the unsent rest from a buffer that moved or grew meanwhile.
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_fd(ssl_, fd_);
  if (!files.insecure) {
    if (is_ip_address(url.host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), url.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, url.host.c_str());
      SSL_set1_host(ssl_, url.host.c_str());
    }
  } else if (!is_ip_address(url.host)) {
    SSL_set_tlsext_host_name(ssl_, url.host.c_str());
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    ERR_clear_error();
    int rc = SSL_connect(ssl_);
    if (rc == 1) return;
    int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      pollfd p{fd_, static_cast<short>(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      int left = timeout.count() > 0 ? remaining_ms(deadline) : -1;
      if (left == 0 || ::poll(&p, 1, left) == 0) {
        lost("in the TLS handshake", fmt::format("no answer within {} ms (is it a TLS port?)", timeout.count()));
      }
      continue;
    }
    if (long v = SSL_get_verify_result(ssl_); v != X509_V_OK && !url.tls_files.insecure) {
      fatal(fmt::format("TLS: the certificate of Redis at {} fails verification: {}; give the CA that signed it "
                        "with --redis-tls-ca (and a host name or address it was issued for)",
                        display_, X509_verify_cert_error_string(v)));
    }
    tls_failed("in the TLS handshake", err);
  }
}

[[noreturn]] void RedisSocket::lost(const char* doing, const std::string& why) {
  // TLS 1.3 ends the handshake before the server has checked the client's certificate: a server that
  // requires one sends its alert and resets the connection, and a write that comes first sees only the
  // reset. Lost before any reply: say what that usually means.
  const char* hint = ssl_ && !answered_ ? " (right after the TLS handshake, before any reply: does the server require "
                                          "a client certificate? --redis-tls-cert and --redis-tls-key)"
                                        : "";
  throw RedisError(RedisError::Kind::Transient,
                   fmt::format("lost the Redis connection to {} while {}: {}{}", display_, doing, why, hint));
}

[[noreturn]] void RedisSocket::tls_failed(const char* doing, int ssl_error) {
  if (ssl_error == SSL_ERROR_ZERO_RETURN) lost(doing, "Server closed the connection");
  if (ssl_error == SSL_ERROR_SYSCALL) {
    unsigned long queued = ERR_peek_error();
    if (queued == 0) lost(doing, errno ? std::strerror(errno) : "Server closed the connection");
  }
  unsigned long e = ERR_peek_error();
  if (certificate_alert(e)) {
    throw RedisError(RedisError::Kind::Fatal,
                     fmt::format("TLS: Redis at {} refused the connection {}: {} (a client certificate it trusts: "
                                 "--redis-tls-cert and --redis-tls-key)",
                                 display_, doing, openssl_error()));
  }
  // Not TLS on the other end, or no protocol version in common: settings to fix. Anything else (an
  // internal error alert, a bad record, an unexpected EOF) is a connection to retry.
  const int reason = ERR_GET_REASON(e);
  if (std::string_view(doing) == "in the TLS handshake" && ERR_GET_LIB(e) == ERR_LIB_SSL &&
      (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
       reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
       reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)) {
    throw RedisError(RedisError::Kind::Fatal,
                     fmt::format("TLS: the handshake with Redis at {} failed: {} (is it a TLS port?)", display_,
                                 openssl_error()));
  }
  lost(doing, openssl_error());
}

std::size_t RedisSocket::send_some(const char* data, std::size_t len) {
  if (len == 0) return 0;
  if (!ssl_) {
    for (;;) {
      ssize_t n = ::send(fd_, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno != EINTR) lost("writing", std::strerror(errno));
    }
  }
  write_wants_read_ = false;
  ERR_clear_error();
  errno = 0;
  int n = SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(len, 1 << 30)));
  if (n > 0) return static_cast<std::size_t>(n);
  int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_WRITE) return 0;
  if (err == SSL_ERROR_WANT_READ) {
    write_wants_read_ = true;
    return 0;
  }
  tls_failed("writing", err);
}

std::size_t RedisSocket::recv_some(char* buf, std::size_t cap) {
  if (!ssl_) {
    for (;;) {
      ssize_t n = ::recv(fd_, buf, cap, MSG_DONTWAIT);
      if (n > 0) return static_cast<std::size_t>(n);
      if (n == 0) lost("reading", "Server closed the connection");
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno != EINTR) lost("reading", std::strerror(errno));
    }
  }
  read_wants_write_ = false;
  ERR_clear_error();
  errno = 0;
  int n = SSL_read(ssl_, buf, static_cast<int>(std::min<std::size_t>(cap, 1 << 30)));
  if (n > 0) {
    answered_ = true;
    return static_cast<std::size_t>(n);
  }
  int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_READ) return 0;
  if (err == SSL_ERROR_WANT_WRITE) {
    read_wants_write_ = true;
    return 0;
  }
  tls_failed("reading", err);
}

bool RedisSocket::buffered() const { return ssl_ && SSL_pending(ssl_) > 0; }

void RedisSocket::wait_for(short events, std::chrono::milliseconds timeout, const char* doing) {
  pollfd p{fd_, events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, timeout.count() > 0 ? static_cast<int>(timeout.count()) : -1);
    if (rc > 0) return;
    if (rc == 0) lost(doing, "Resource temporarily unavailable (timed out)");
    if (errno != EINTR) lost(doing, std::strerror(errno));
  }
}

void RedisSocket::send_all(std::string_view data, std::chrono::milliseconds timeout) {
  while (!data.empty()) {
    auto n = send_some(data.data(), data.size());
    data.remove_prefix(n);
    if (n == 0) wait_for(write_wants_read_ ? POLLIN : POLLOUT, timeout, "writing");
  }
}

std::size_t RedisSocket::recv_wait(char* buf, std::size_t cap, std::chrono::milliseconds timeout) {
  for (;;) {
    if (auto n = recv_some(buf, cap)) return n;
    wait_for(read_wants_write_ ? POLLOUT : POLLIN, timeout, "reading");
  }
}

}  // namespace walstream
