// The pods' application: a TCP server that tells each client what it saw, and its client.
//   serve: listens on 0.0.0.0:PORT; per connection reads until EOF or a newline, answers
//          "from=<peer> to=<local> got=<text>\n" and closes.
//   call:  connects, sends TEXT, half-closes, prints the reply; "error=<reason>" and exit
//          code 1 on failure (refused, reset, timeout, closed without a reply).
#ifndef NODEWARD_SANDBOX_APP_H_
#define NODEWARD_SANDBOX_APP_H_

#include <string>

#include "absl/time/time.h"

namespace nodeward::sandbox {

// Runs until killed; returns an exit code only when it cannot listen.
int ServeApp(int port, absl::Duration read_timeout);

// Returns the process exit code.
int CallApp(const std::string& to, const std::string& text, absl::Duration timeout);

}  // namespace nodeward::sandbox

#endif  // NODEWARD_SANDBOX_APP_H_
