"""A small SMTP content filter for the tests (FILTER_README's "simple
content filter", over SMTP): it takes mail on one port, adds a header,
and hands it back to the MTA's re-injection port, answering 250 only
once the MTA has taken the message back. Each envelope it sees is
appended to a log file, one line per message: sender and recipients.

usage: add_header_filter.py LISTEN_PORT REINJECT_PORT LOG_FILE
"""
import smtplib
import socketserver
import sys

LISTEN, REINJECT, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


class Session(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        self.reply("220 filter.test ESMTP")
        sender, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-filter.test")
                self.reply("250 8BITMIME")
            elif verb == "MAIL":
                sender, rcpts = cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>"))
                self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                lines = []
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b".\n", b""):
                        break
                    if l.startswith(b".."):
                        l = l[1:]
                    lines.append(l)
                message = b"X-Filtered: by the test filter\r\n" + b"".join(lines)
                try:
                    with smtplib.SMTP("127.0.0.1", REINJECT) as s:
                        s.sendmail(sender, rcpts, message)
                except Exception as e:  # the MTA keeps the message and retries
                    self.reply("451 4.3.0 re-injection failed: %s" % e)
                    continue
                with open(LOG, "a") as f:
                    f.write("%s %s\n" % (sender, " ".join(rcpts)))
                self.reply("250 2.0.0 Ok: filtered")
            elif verb == "RSET":
                sender, rcpts = None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 not here")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server(("127.0.0.1", LISTEN), Session) as server:
    print("ready", flush=True)
    server.serve_forever()
