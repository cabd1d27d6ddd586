#!/bin/sh
# Relay throughput: Postfix's smtp-source sends N messages of L bytes
# over S sessions for an outside domain; the MTA relays them through its
# smtp transport (relayhost = [127.0.0.1]:PORT, no DNS) to Debian's
# smtp-sink, which writes each message it receives to a file. Timed
# until all N files are there. Debian's Postfix on the reference setup
# (../shared/bench/postfix-ref-setup.sh, 127.0.0.1:2600, relaying to a
# sink on 2700) and mtad on a copy of the same main.cf and Debian's
# stock master.cf (127.0.0.1:2601, relaying to a sink on 2701),
# alternating in one run. Both fsync the queue file before the 250 to
# smtp-source.
# usage: bench/smtp-relay.sh [ROUNDS]   (env N S L; needs root and
#        Debian's postfix; builds mtad --release)
set -e
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N=${N:-5000}; S=${S:-20}; L=${L:-4096}
SHARED=$(cd ../shared/bench && pwd)
cargo build -q --release -p mtad
MTAD=$PWD/target/release/mtad
W=$(mktemp -d /tmp/mtad-relay.XXXXXX)
chmod 755 "$W"
PIDS=
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  postfix stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

wait_port() {
  for i in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; exit 1
}

# One sink per MTA, so each run counts only its own messages.
for port in 2700 2701; do
  mkdir -p "$W/sink$port"; chmod 777 "$W/sink$port"
  smtp-sink -u nobody -d "$W/sink$port/m" 127.0.0.1:$port 256 &
  PIDS="$PIDS $!"
  wait_port $port
done

sh "$SHARED/postfix-ref-setup.sh" >/dev/null
printf 'relayhost = [127.0.0.1]:2700\n' >> /etc/postfix/main.cf
postfix start >/dev/null 2>&1 || postfix reload >/dev/null 2>&1

# mtad reads Postfix's own main.cf, with its state under $W.
sed -e "s|^relayhost = .*|relayhost = [127.0.0.1]:2701|" \
    -e "s|^virtual_mailbox_base = .*|virtual_mailbox_base = $W/mail|" \
    -e "s|^virtual_mailbox_maps = .*|virtual_mailbox_maps = hash:$W/vmailbox|" \
    -e "/^maillog_file/d" /etc/postfix/main.cf > "$W/main.cf"
printf 'queue_directory = %s/queue\ndata_directory = %s/data\n' "$W" "$W" >> "$W/main.cf"
sed 's/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:2601 inet n - n - - smtpd/' \
    /usr/share/postfix/master.cf.dist > "$W/master.cf"
cp /etc/postfix/vmailbox "$W/vmailbox"
"$MTAD" postmap -c "$W" "hash:$W/vmailbox"
"$MTAD" -c "$W" 2>"$W/mtad.log" &
PIDS="$PIDS $!"
wait_port 2601

count() { find "$1" -type f | wc -l; }
run() { # run TARGET SINKDIR
  before=$(count "$2")
  t0=$(date +%s.%N)
  smtp-source -d -s "$S" -m "$N" -l "$L" -M client.test -f bench@client.test \
    -t someone@example.net "$1"
  t1=$(date +%s.%N)
  deadline=$(echo "$t1 + 180" | bc)
  while [ $(( $(count "$2") - before )) -lt "$N" ]; do
    sleep 0.02
    if [ "$(echo "$(date +%s.%N) > $deadline" | bc)" = 1 ]; then
      echo "only $(( $(count "$2") - before )) of $N relayed after 180 s" >&2; exit 1
    fi
  done
  t2=$(date +%s.%N)
  echo "accept_s=$(echo "$t1-$t0" | bc) relay_s=$(echo "$t2-$t0" | bc) end_to_end_msgs_per_s=$(echo "$N/($t2-$t0)" | bc)"
}

echo "N=$N S=$S L=$L, $(nproc) cores"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  printf 'round %s postfix: ' "$r"; run 127.0.0.1:2600 "$W/sink2700"
  printf 'round %s mtad:    ' "$r"; run 127.0.0.1:2601 "$W/sink2701"
  r=$((r + 1))
done
grep -c "status=sent" "$W/mtad.log" | sed 's/^/mtad deliveries logged: /'
