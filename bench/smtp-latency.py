#!/usr/bin/env python3
"""Accept latency: the time from the end of DATA to the 250 reply, for M
messages of L bytes sent one after another over one SMTP session (the
server's durable queueing, fsync included, as a client waits for it).
Prints p50 and p99 in milliseconds.

usage: bench/smtp-latency.py HOST:PORT [M] [L] [RCPT]
"""
import smtplib
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
size = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
rcpt = sys.argv[4] if len(sys.argv) > 4 else "alice@example.com"
body = ("Subject: latency\r\n\r\n" + "x" * 76 + "\r\n") * max(1, size // 78)
s = smtplib.SMTP(host, int(port), local_hostname="client.example.org", timeout=30)
s.ehlo("client.example.org")
times = []
for _ in range(count):
    s.mail("bench@example.org")
    s.rcpt(rcpt)
    code, _ = s.putcmd("DATA"), None
    code, resp = s.getreply()
    if code != 354:
        sys.exit(f"DATA: {code} {resp}")
    s.send(body.encode() + b".\r\n")
    start = time.perf_counter()
    code, resp = s.getreply()
    times.append(time.perf_counter() - start)
    if code != 250:
        sys.exit(f"end of data: {code} {resp}")
s.quit()
times.sort()
p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
print(f"accept latency over {count} messages: p50 {p(0.50):.2f} ms, p99 {p(0.99):.2f} ms")
