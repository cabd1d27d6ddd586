#!/bin/sh
# Starts a throwaway Postfix instance that runs content checks and
# discards what it accepts. Usage: start-postfix.sh DIR PORT HEADER_CHECKS BODY_CHECKS [name=value...]
# Must run as root (Postfix's master drops to the postfix user).
set -eu
dir=$1 port=$2 hc=$3 bc=$4
shift 4
mkdir -p "$dir/queue" "$dir/data" "$dir/log"
cp "$hc" "$dir/header_checks"
cp "$bc" "$dir/body_checks"
chown postfix "$dir/data" "$dir/log"
sed "s/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:$port inet n - n - - smtpd/" \
    /usr/share/postfix/master.cf.dist > "$dir/master.cf"
grep -q "^127.0.0.1:$port" "$dir/master.cf"
cat > "$dir/main.cf" <<EOC
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/log/maillog
maillog_file_prefixes = /var, /dev/stdout, $dir/log
myhostname = oracle.example.net
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
default_transport = discard:
relay_transport = discard:
local_transport = discard:
virtual_transport = discard:
alias_maps =
alias_database =
smtpd_banner = \$myhostname ESMTP
header_checks = regexp:$dir/header_checks
body_checks = regexp:$dir/body_checks
EOC
for kv in "$@"; do echo "$kv" >> "$dir/main.cf"; done
postfix -c "$dir" check
postfix -c "$dir" start
