#!/bin/sh
# FILTER_README's "simple content filter", as a pipe(8) service runs it:
# the message on standard input is saved, inspected (here: a header is
# added to show that it passed), and given back with sendmail.
#
# Usage: simple_filter.sh MTAD CONFIG_DIR -f SENDER -- RECIPIENT...
# Exit 75 (EX_TEMPFAIL) makes the mail system try again later.
mtad=$1
conf=$2
shift 2
tmp=$(mktemp) || exit 75
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" || exit 75
{ printf 'X-Filtered-By: simple_filter.sh\n'; cat "$tmp"; } |
    "$mtad" sendmail -C "$conf" -G -i "$@" || exit 75
exit 0
