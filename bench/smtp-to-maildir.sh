#!/bin/sh
# End-to-end SMTP to maildir: Postfix's smtp-source sends N messages of L
# bytes over S sessions to one virtual mailbox, timed until every file is
# in the maildir's new/ (../shared/bench/smtp-throughput.sh). Debian's
# Postfix on the reference setup (../shared/bench/postfix-ref-setup.sh,
# 127.0.0.1:2600) and mtad on a copy of the same main.cf and Debian's
# stock master.cf (127.0.0.1:2601), alternating in one run. Both fsync
# the queue file before 250 and the maildir file before counting it
# delivered. Each round also measures the accept latency (end of DATA to
# 250, one session, bench/smtp-latency.py) of each, p50 and p99.
# usage: bench/smtp-to-maildir.sh [ROUNDS]   (env N S L as the shared script;
#        needs root and Debian's postfix; builds mtad --release)
set -e
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SHARED=$(cd ../shared/bench && pwd)
cargo build -q --release -p mtad
MTAD=$PWD/target/release/mtad
W=$(mktemp -d /tmp/mtad-bench.XXXXXX)
cleanup() {
  [ -n "$MTAD_PID" ] && kill "$MTAD_PID" 2>/dev/null || true
  postfix stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

sh "$SHARED/postfix-ref-setup.sh" >/dev/null
postfix start >/dev/null 2>&1 || postfix reload >/dev/null 2>&1

# mtad reads Postfix's own main.cf, with its state under $W.
sed -e "s|^virtual_mailbox_base = .*|virtual_mailbox_base = $W/mail|" \
    -e "s|^virtual_mailbox_maps = .*|virtual_mailbox_maps = hash:$W/vmailbox|" \
    -e "/^maillog_file/d" /etc/postfix/main.cf > "$W/main.cf"
printf 'queue_directory = %s/queue\ndata_directory = %s/data\n' "$W" "$W" >> "$W/main.cf"
sed 's/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:2601 inet n - n - - smtpd/' \
    /usr/share/postfix/master.cf.dist > "$W/master.cf"
cp /etc/postfix/vmailbox "$W/vmailbox"
"$MTAD" postmap -c "$W" "hash:$W/vmailbox"
"$MTAD" -c "$W" 2>"$W/mtad.log" &
MTAD_PID=$!
for i in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', 2601), 1)" 2>/dev/null && break
  sleep 0.1
done

echo "N=${N:-5000} S=${S:-20} L=${L:-4096}, $(nproc) cores"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  printf 'round %s postfix: ' "$r"
  sh "$SHARED/smtp-throughput.sh" 127.0.0.1:2600 /var/mail/vhosts/example.com/alice
  printf 'round %s mtad:    ' "$r"
  sh "$SHARED/smtp-throughput.sh" 127.0.0.1:2601 "$W/mail/example.com/alice"
  printf 'round %s postfix: ' "$r"
  python3 bench/smtp-latency.py 127.0.0.1:2600
  printf 'round %s mtad:    ' "$r"
  python3 bench/smtp-latency.py 127.0.0.1:2601
  r=$((r + 1))
done
grep -c "status=sent" "$W/mtad.log" | sed 's/^/mtad deliveries logged: /'
