#!/bin/sh
# SPDX-License-Identifier: MIT
# `tlm bench transport --transport dpdk` end to end on loopback (embedded
# memif): every page verified, none placed (dpdk sends from registered
# memory but the receiver copies out of its ring), the raw PMD blast and
# the per-page figures reported; with loss, reordering and duplication on
# the sender still every page verified; the tcp comparison verified too;
# the dpdk flags refused for other transports with exit status 2; a bad
# EAL argument named on stderr with stdout left empty; --rounds lists every
# round, each verified, and its best figures are those of the fastest rounds.
# Behaviour only: no figure is compared with a threshold.
#   bench_cli.sh PATH-TO-tlm
set -u
TLM=$1
# shellcheck source=tests/dpdk/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# EAL runtime directories of lane processes (tlm-<pid>): each removes its own
rundirs() { ls -d /var/run/dpdk/tlm-[0-9]* 2>/dev/null | wc -l; }
dirs0=$(rundirs)
# In the background for its pid: the raw children's EAL runtime directories
# are named after it.
# --protect none: the lanes' own zero-copy path (a sealed lane sends
# through the cipher, the next run).
"$TLM" bench transport --transport dpdk --lanes 2 --bytes 64M --raw-seconds 1 --json \
	--protect none >"$tmp" &
pid=$!
wait $pid || bad "bench exited $?"
out=$(cat "$tmp")
echo "$out"
echo "$out" | grep -q '"verified":true' || bad "not verified"
echo "$out" | grep -q '"pages":16384,' || bad "wrong page count"
echo "$out" | grep -q '"live_send":true,"pages_placed":0,' || bad "live send / placed"
echo "$out" | grep -q '"protect":"none"' || bad "protect none not reported"
positive "$(num "$out" raw_Bps)" || bad "raw_Bps missing or 0"
positive "$(num "$out" ratio)" || bad "ratio missing or 0"
positive "$(num "$out" raw_copy_Bps)" || bad "raw_copy_Bps missing or 0"
positive "$(num "$out" ratio_raw_copy)" || bad "ratio_raw_copy missing or 0"
for k in raw_place_Bps raw_place_over_raw ratio_raw_place headline_ratio; do
	positive "$(num "$out" $k)" || bad "$k missing or 0"
done
# memif's headline is lanes / raw_place (the plain blast touches no page)
echo "$out" | grep -q '"headline":"ratio_raw_place"' || bad "memif headline is not ratio_raw_place"
[ "$(num "$out" headline_ratio)" = "$(num "$out" ratio_raw_place)" ] ||
	bad "headline_ratio is not ratio_raw_place"
for k in cycles_per_page_tx cycles_per_page_rx pages_per_s_per_core_tx pages_per_s_per_core_rx; do
	positive "$(num "$out" $k)" || bad "$k missing or 0"
done
echo "$out" | grep -Eq '"line_rate_10GbE_one_core":(true|false)' || bad "line rate verdict"
for d in /var/run/dpdk /tmp/dpdk "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk"; do
	ls -d "$d/tlm-raw-$pid-"* 2>/dev/null && bad "the raw blast left its EAL runtime directories"
done
[ "$(rundirs)" -le "$dirs0" ] || bad "the lanes' processes left EAL runtime directories: $(rundirs) > $dirs0"

out=$("$TLM" bench transport --transport dpdk --lanes 2 --bytes 64M --json --no-raw \
	--fault drop=0.01,reorder=0.01,dup=0.01 --dpdk-args "--no-huge --no-pci -m 512") ||
	bad "faults: bench exited $?"
echo "$out"
echo "$out" | grep -q '"verified":true' || bad "faults: not verified"
echo "$out" | grep -q '"pages":16384,' || bad "faults: wrong page count"
echo "$out" | grep -q '"raw_skipped":"--no-raw"' || bad "--no-raw not reported"
echo "$out" | grep -q '"protect":"encrypt"' || bad "faults: not sealed by default"
echo "$out" | grep -q '"live_send":false' || bad "faults: a sealed lane sent live pages"

out=$("$TLM" bench transport --transport dpdk --lanes 1 --bytes 16M --json --no-raw \
	--compare tcp) || bad "compare: bench exited $?"
echo "$out"
echo "$out" | grep -q '"verified":true' || bad "compare: not verified"
echo "$out" | grep -q '"tcp_verified":true' || bad "compare: tcp not verified"
positive "$(num "$out" tcp_goodput_Bps)" || bad "tcp_goodput_Bps missing or 0"

# --rounds: raw blasts and lanes per round, lanes in a child each time;
# every round verified and listed, the figures from the median one
"$TLM" bench transport --transport dpdk --lanes 1 --bytes 16M --rounds 3 \
	--raw-seconds 0.2 --json >"$tmp" &
pid=$!
wait $pid || bad "rounds: bench exited $?"
out=$(cat "$tmp")
echo "$out"
echo "$out" | grep -q '"rounds":3,"median_round":[123],' || bad "rounds: count or median"
[ "$(echo "$out" | grep -o '{"goodput_Bps":[0-9]*,"verified":true,"raw_Bps":[1-9]' | wc -l)" -eq 3 ] ||
	bad "rounds: per_round does not list 3 verified rounds with their raw blasts"
positive "$(num "$out" ratio)" || bad "rounds: ratio missing or 0"
# best: each path's fastest round, and the ratios of those
best=$(echo "$out" | grep -o '"best":{[^}]*}')
[ -n "$best" ] || bad "rounds: no best"
echo "$out" | grep -o '"per_round":\[[^]]*\]' | grep -o '"[a-z_]*_Bps":[0-9]*' |
	awk -F'[":]+' -v b="$best" '
	function val(k,  m) { m = b; sub(".*\"" k "\":", "", m); return m + 0 }
	{ if ($2 != "goodput_Bps" && $2 != "raw_Bps" && $2 != "raw_place_Bps") next
	  if ($3 + 0 > max[$2]) max[$2] = $3 + 0 }
	END {
		for (k in max) if (val(k) != max[k]) { print "best " k " " val(k) " is not the fastest round, " max[k]; bad = 1 }
		r = val("goodput_Bps") / val("raw_Bps"); q = val("ratio")
		if (q < r * 0.999 || q > r * 1.001) { print "best ratio " q " is not goodput / raw " r; bad = 1 }
		exit bad }' >&2 || bad "rounds: best figures are not the fastest rounds"
for d in /var/run/dpdk /tmp/dpdk "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk"; do
	ls -d "$d/tlm-raw-$pid-"* 2>/dev/null && bad "rounds: raw EAL runtime directories left"
done

for args in "--fault drop=0.01" "--transport tcp --fault drop=0.01" \
	    "--transport tcp --dpdk-args -m" "--transport dpdk --fault drop=2" \
	    "--transport dpdk --fault lose=0.1" "--transport tcp --no-raw" \
	    "--transport tcp --compare tcp" "--transport dpdk --compare udp" \
	    "--transport dpdk --raw-seconds 0" "--rounds 0" "--rounds 51" \
	    "--rounds 2 --connect 127.0.0.1:1" \
	    "--transport dpdk --rx-transport-args mtu=1500 --connect 127.0.0.1:1"; do
	# shellcheck disable=SC2086
	"$TLM" bench transport $args >/dev/null 2>&1
	rc=$?
	[ $rc -eq 2 ] || bad "'$args' gave exit $rc, want 2"
done
"$TLM" bench transport --help | grep -q -- '--raw-seconds' || bad "--help"
# Bad transport args: refused, and the message names the item (a quoted
# fault= list is read whole, every value checked).
for targs in 'fault="drop=0.01,dup=2"' 'fault=drop=x' 'mtu=100' 'queues=0' 'spinners=0' 'window=8K'; do
	msg=$("$TLM" bench transport --transport dpdk --no-raw --lanes 1 --bytes 1M \
		--transport-args "$targs" 2>&1) && bad "'$targs' accepted"
	echo "$msg" | grep -q "transport_args: '" || bad "'$targs': no message naming it: $msg"
done
out=$("$TLM" bench transport --transport dpdk --no-raw --lanes 1 --bytes 16M --json \
	--transport-args 'fault="drop=0.01,reorder=0.01,dup=0.01"') || bad "quoted fault list: exit $?"
echo "$out" | grep -q '"verified":true' || bad "quoted fault list: not verified"
# A bad EAL argument: a clear error on stderr, nothing on stdout (the EAL's
# usage text would break --json), for the lanes and for the raw blast.
for raw in --no-raw ""; do
	err=$(mktemp)
	# shellcheck disable=SC2086
	out=$("$TLM" bench transport --transport dpdk $raw --lanes 1 --bytes 1M --json \
		--dpdk-args "--no-huge --bogus-flag" 2>"$err") && bad "bad --dpdk-args accepted ($raw)"
	[ -z "$out" ] || bad "bad --dpdk-args ($raw): stdout not empty: $(echo "$out" | head -n 3)"
	grep -q "unrecognized option '--bogus-flag'" "$err" ||
		bad "bad --dpdk-args ($raw): stderr does not say which: $(head -n 5 "$err")"
	[ "$(grep -c "unrecognized option" "$err")" -eq 1 ] ||
		bad "bad --dpdk-args ($raw): said more than once: $(cat "$err")"
	rm -f "$err"
done
[ $fail -eq 0 ] && echo "bench_cli: passed"
exit $fail
