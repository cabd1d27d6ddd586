#!/bin/sh
# Whole-process lookup-table benchmark: mtad postmap against Debian's
# postmap, alternating in one run on this machine (issue 3's goals).
#   hash build      1,000,000 keys
#   hash query      1,000,000 `-q -` keys, half of them misses
#   regexp query    100,000 keys against 1,000 patterns
#   cidr query      100,000 addresses against 10,000 prefixes
# usage: bench/postmap.sh [ROUNDS]   (needs Debian's postfix; builds mtad --release)
set -e
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
cargo build -q --release -p mtad
MTAD=$PWD/target/release/mtad
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
printf 'compatibility_level = 3.6\n' > "$W/main.cf"; : > "$W/master.cf"
python3 - "$W" <<'PY'
import random, sys
w = sys.argv[1]
random.seed(1)
with open(f"{w}/big", "w") as f:
    for i in range(1_000_000):
        f.write(f"user{i}@domain{i % 5000}.example  target{i}@example.net\n")
with open(f"{w}/big.keys", "w") as f:
    for i in range(1_000_000):
        n = random.randrange(2_000_000)
        f.write(f"user{n}@domain{n % 5000}.example\n")
with open(f"{w}/re", "w") as f:
    for i in range(1000):
        f.write(f"/^user{i}[a-z]*@(sub[0-9]+\\.)?domain{i}\\.example$/ OK rule{i} $1\n")
with open(f"{w}/re.keys", "w") as f:
    for i in range(100_000):
        n = random.randrange(2000)
        f.write(f"user{n}x@sub{i % 7}.domain{n}.example\n")
with open(f"{w}/cidr", "w") as f:
    for i in range(10_000):
        f.write(f"10.{i // 256 % 256}.{i % 256}.0/24 REJECT net{i}\n")
with open(f"{w}/cidr.keys", "w") as f:
    for i in range(100_000):
        n = random.randrange(20_000)
        f.write(f"10.{n // 256 % 256}.{n % 256}.{i % 250 + 1}\n")
PY
t() { s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
run() { # name postfix-cmd... -- mtad-cmd...
  name=$1; shift
  pf=""; md=""; side=pf
  for a in "$@"; do if [ "$a" = "--" ]; then side=md; continue; fi
    if [ $side = pf ]; then pf="$pf '$a'"; else md="$md '$a'"; fi; done
  for r in $(seq "$ROUNDS"); do
    a=$(eval t $pf); b=$(eval t $md)
    echo "$name round $r: postfix ${a}s mtad ${b}s ratio $(echo "scale=1; $a / $b" | bc)x"
  done
}
cp "$W/big" "$W/big2"
run "hash build 1M" postmap -c "$W" "hash:$W/big" -- "$MTAD" postmap -c "$W" "hash:$W/big2"
run "hash query 1M" sh -c "postmap -c $W -q - hash:$W/big < $W/big.keys" -- sh -c "$MTAD postmap -c $W -q - hash:$W/big2 < $W/big.keys"
if "$MTAD" postconf -m | grep -qx regexp; then
  run "regexp 100k x 1000" sh -c "postmap -c $W -q - regexp:$W/re < $W/re.keys" -- sh -c "$MTAD postmap -c $W -q - regexp:$W/re < $W/re.keys"
else echo "regexp: mtad has no regexp tables yet"; fi
if "$MTAD" postconf -m | grep -qx cidr; then
  run "cidr 100k x 10000" sh -c "postmap -c $W -q - cidr:$W/cidr < $W/cidr.keys" -- sh -c "$MTAD postmap -c $W -q - cidr:$W/cidr < $W/cidr.keys"
else echo "cidr: mtad has no cidr tables yet"; fi
