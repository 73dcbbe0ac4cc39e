# stall_clients.py HOST PORT COUNT: COUNT connections to HOST:PORT that never send a byte, and
# when each was closed by the server: "closed within 2s: N" once, then "closed within Ts: N"
# when all are closed (or 14 s have passed). Holds what is left open for 30 s more, so a
# caller can look at the server meanwhile.
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, reset_at_connect = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(3)
    try:
        s.connect((host, port))
    except ConnectionResetError:  # reset by the server before connect() returned
        reset_at_connect += 1
        continue
    s.setblocking(False)
    held.append(s)


def closed_now():
    n = reset_at_connect
    for s in held:
        try:
            n += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


start = time.time()
time.sleep(2)
print("closed within 2s:", closed_now(), flush=True)
while time.time() - start < 14 and closed_now() < count:
    time.sleep(0.5)
print("closed within %.0fs:" % (time.time() - start), closed_now(), flush=True)
time.sleep(30)
