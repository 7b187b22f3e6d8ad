#!/bin/sh
# SPDX-License-Identifier: MIT
# The tlm command refuses what it cannot do, up front, with exit status 2
# and a message (issue #18's list), and tlm keygen writes keys the lanes
# take while text keys are refused.
#   cli_args.sh PATH-TO-tlm
set -u
TLM=$1
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
tmp=$(mktemp -d /tmp/tlm-cli-args.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# keygen: 64 hex characters and a newline, mode 600, never over a file by
# accident.
"$TLM" keygen "$tmp/k" || bad "keygen exited $?"
[ "$(stat -c %a "$tmp/k")" = 600 ] || bad "keygen: mode $(stat -c %a "$tmp/k"), want 600"
grep -Eqx '[0-9a-f]{64}' "$tmp/k" || bad "keygen: not 64 hex characters: $(cat "$tmp/k")"
[ "$(wc -c <"$tmp/k")" = 65 ] || bad "keygen: $(wc -c <"$tmp/k") bytes, want 65"
cp "$tmp/k" "$tmp/k.old"
"$TLM" keygen "$tmp/k" 2>/dev/null && bad "keygen replaced an existing file"
cmp -s "$tmp/k" "$tmp/k.old" || bad "keygen changed an existing file"
chmod 644 "$tmp/k"
"$TLM" keygen --force "$tmp/k" || bad "keygen --force exited $?"
[ "$(stat -c %a "$tmp/k")" = 600 ] || bad "keygen --force: mode $(stat -c %a "$tmp/k")"
cmp -s "$tmp/k" "$tmp/k.old" && bad "keygen --force wrote the same key"
"$TLM" keygen >/dev/null 2>&1; [ $? -eq 2 ] || bad "keygen without FILE: not exit 2"

# A key made by keygen carries a session; a text key is refused, pointing
# to tlm keygen.
(umask 077; printf 'passwordpassword\n' >"$tmp/weak")
out=$("$TLM" bench transport --listen 127.0.0.1:0 --psk "$tmp/weak" 2>&1); rc=$?
[ $rc -eq 2 ] || bad "a text key: exit $rc, want 2"
echo "$out" | grep -q "tlm keygen" || bad "a text key: the message does not point to tlm keygen: $out"

expect2() {
	out=$("$TLM" "$@" 2>&1 </dev/null); rc=$?
	[ $rc -eq 2 ] || bad "'$*' gave exit $rc, want 2"
	[ -n "$out" ] || bad "'$*' said nothing"
}
expect2 bench transport --bytes nan
expect2 bench transport --bytes inf
expect2 bench transport --bytes -1
expect2 bench transport --bytes 0x10
expect2 bench transport --listen 127.0.0.1:99999 --psk "$tmp/k"
expect2 bench transport --connect 127.0.0.1:65536 --psk "$tmp/k"
expect2 bench transport --protect bogus
expect2 bench migrate --mem nan
expect2 bench migrate --mem inf
expect2 bench migrate --chk-lanes 4294967296
expect2 bench migrate --ps-lanes 4294967297
expect2 bench migrate --tracker bogus
expect2 bench migrate --protect bogus
expect2 bench migrate --listen 127.0.0.1:99999 --psk "$tmp/k"
# more memory than there is: refused before any of it is touched
out=$("$TLM" bench migrate --mem 64T 2>&1); rc=$?
[ $rc -eq 2 ] || bad "--mem 64T: exit $rc, want 2"
echo "$out" | grep -q "available" || bad "--mem 64T: no word on what is available: $out"
[ $fail -eq 0 ] && echo "cli_args: passed"
exit $fail
