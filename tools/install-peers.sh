#!/bin/sh
# Installs the real programs the tests talk to (Debian packages; needs root
# and apt). Uses the workplace's shared script when it is beside the repo,
# and the same package list otherwise. Never installs a second MTA package:
# apt would remove Postfix, the tests' oracle.
set -e
here=$(cd "$(dirname "$0")" && pwd)
# Beyond the shared list: the Perl TLS modules that `swaks --tls` needs
# (mta-smtp's STARTTLS interop test), and systemd-analyze (the unit's check).
extra="libnet-ssleay-perl libio-socket-ssl-perl systemd"
shared="$here/../../shared/tools/install-test-peers.sh"
if [ -x "$shared" ]; then
  exec sh "$shared" $extra "$@"
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
need=""
for p in postfix postfix-pcre postfix-doc dovecot-imapd dovecot-lmtpd procmail swaks bc $extra "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
echo "test peers installed:$need"
