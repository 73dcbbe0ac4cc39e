// The pods' application: a TCP server that tells each client what it saw, and its clients.
//   serve: listens on 0.0.0.0:PORT; per connection reads until EOF or a newline, answers
//          "from=<peer> to=<local> got=<text>\n" and closes. With a certificate and key it
//          serves TLS (a server outside the mesh); with echo_lines it answers every line with
//          "echo=<line>\n" until the client closes.
//   call:  connects, sends TEXT, half-closes, prints the reply; "error=<reason>" and exit
//          code 1 on failure (refused, reset, timeout, closed without a reply).
//   chat:  one long-lived connection to an echo_lines server: a line every interval, each
//          echo checked.
//   load:  N connections at once, each sending TEXT-<i>, half-closing and checking that the
//          reply says the server got exactly that.
#pragma once

#include <string>

#include "absl/time/time.h"

namespace nodeward::sandbox {

struct ServeOptions {
  int port = 0;
  // The address to listen on: 0.0.0.0 (all IPv4), :: (all addresses, dual-stack), or one
  // address (127.0.0.1 for a loopback-only service, the pod's IP, ...).
  std::string listen = "0.0.0.0";
  absl::Duration read_timeout = absl::Seconds(3);  // per line with echo_lines
  bool echo_lines = false;
  std::string tls_cert, tls_key;  // PEM files; both or neither
};

// Runs until killed; returns an exit code only when it cannot listen.
int ServeApp(const ServeOptions& options);

struct ChatOptions {
  std::string to, text;
  int lines = 10;
  absl::Duration interval = absl::Seconds(1);
  absl::Duration timeout = absl::Seconds(3);  // per line
};
int ChatApp(const ChatOptions& options);

struct LoadOptions {
  std::string to, text;
  int connections = 1000;
  absl::Duration timeout = absl::Seconds(30);  // for all of them
};
int LoadApp(const LoadOptions& options);

// Returns the process exit code.
int CallApp(const std::string& to, const std::string& text, absl::Duration timeout);

}  // namespace nodeward::sandbox
