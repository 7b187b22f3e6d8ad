/* SPDX-License-Identifier: MIT */
/*
 * `tlm migrate`: source side of the relay for stock QEMU. The relay itself
 * is qemu-glue/relay.c; this file parses options, shows progress, handles
 * Ctrl-C and prints the report. The progress and report printers are shared
 * with demo.c (prototypes there).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "relay.h"
#include "tlm/engine.h"

static volatile sig_atomic_t *sig_flag;
static bool progress_shown;

static void on_signal(int sig)
{
	(void)sig;
	if (sig_flag)
		*sig_flag = 1;
}

/* SIGINT/SIGTERM set *flag; the relay sees it within ~100 ms and cancels. */
void tlm_cli_relay_signals(volatile sig_atomic_t *flag)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sig_flag = flag;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* A live line on a terminal; nothing otherwise. */
void tlm_cli_relay_progress(const struct tlm_qmp_migstat *st, void *arg)
{
	static uint64_t last_ms, last_bytes;
	uint64_t now = tlm_cli_now_ms();
	double rate = 0, pct = 0;

	(void)arg;
	if (!isatty(STDERR_FILENO))
		return;
	if (last_ms && now > last_ms && st->ram_transferred >= last_bytes)
		rate = mib(st->ram_transferred - last_bytes) * 1000.0 / (double)(now - last_ms);
	last_ms = now;
	last_bytes = st->ram_transferred;
	if (st->ram_total)
		pct = 100.0 * (double)(st->ram_total - (st->ram_remaining < st->ram_total ?
						       st->ram_remaining : st->ram_total)) /
		      (double)st->ram_total;
	fprintf(stderr, "\r\033[K%-14s %5.1f%%  sent %8.1f MiB  left %7.1f MiB  "
		"%7.1f MiB/s  dirty %6llu pg/s  pass %llu",
		st->status[0] ? st->status : "starting", pct, mib(st->ram_transferred),
		mib(st->ram_remaining), rate, (unsigned long long)st->ram_dirty_pages_rate,
		(unsigned long long)st->ram_dirty_sync_count);
	fflush(stderr);
	progress_shown = true;
}

void tlm_cli_relay_progress_end(void)
{
	if (progress_shown)
		fputc('\n', stderr);
	progress_shown = false;
}

/* Text report to f, or the fields into an open JSON object j. */
void tlm_cli_relay_report(FILE *f, const struct tlm_relay_result *r, const char *transport,
			  int policy, int protect, bool json, struct tlm_json *j)
{
	double secs = (double)(r->st.total_time_ms > 0 ? r->st.total_time_ms : r->wall_ms) / 1000.0;
	double tput = secs > 0 ? mib(r->bytes) / secs : 0;

	if (json) {
		tlm_json_bool(j, "completed", r->completed);
		tlm_json_str(j, "status", r->st.status);
		if (r->error[0])
			tlm_json_str(j, "error", r->error);
		tlm_json_i64(j, "total_ms", r->st.total_time_ms);
		tlm_json_i64(j, "downtime_ms", r->st.downtime_ms);
		tlm_json_i64(j, "setup_ms", r->st.setup_time_ms);
		tlm_json_i64(j, "wall_ms", r->wall_ms);
		tlm_json_u64(j, "ram_transferred", r->st.ram_transferred);
		tlm_json_u64(j, "ram_total", r->st.ram_total);
		tlm_json_u64(j, "dirty_sync_count", r->st.ram_dirty_sync_count);
		tlm_json_dbl(j, "throughput_mib_s", tput);
		tlm_json_str(j, "transport", transport);
		tlm_json_str(j, "protect", tlm_protect_name(protect));
		tlm_json_str(j, "policy", tlm_relay_policy_name(policy));
		tlm_json_bool(j, "qemu_converged", r->qemu_converged);
		tlm_json_bool(j, "forced_switchover", r->forced);
		tlm_json_str(j, "destination", r->dst_status);
		tlm_cli_json_lanes(j, r);
		return;
	}
	fprintf(f, "migration %s", r->completed ? "completed" : "FAILED");
	if (r->error[0])
		fprintf(f, ": %s", r->error);
	fprintf(f, "\n  policy %s, transport %s, protect %s, %u multifd lanes + main + control\n",
		tlm_relay_policy_name(policy), transport, tlm_protect_name(protect),
		r->n_lanes ? r->n_lanes - 1 : 0);
	fprintf(f, "  QEMU status     %s%s\n", r->st.status[0] ? r->st.status : "-",
		r->forced ? " (policy tlm switched over after the first pass)" :
		r->qemu_converged ? " (QEMU's precopy converged)" : "");
	fprintf(f, "  total time      %lld ms (setup %lld ms)\n", (long long)r->st.total_time_ms,
		(long long)r->st.setup_time_ms);
	fprintf(f, "  downtime        %lld ms (QEMU, source-side)\n", (long long)r->st.downtime_ms);
	fprintf(f, "  RAM             %.1f MiB transferred of %.1f MiB, %llu passes\n",
		mib(r->st.ram_transferred), mib(r->st.ram_total),
		(unsigned long long)r->st.ram_dirty_sync_count);
	fprintf(f, "  relayed         %.1f MiB, %.1f MiB/s\n", mib(r->bytes), tput);
	for (unsigned i = 1; i <= r->n_lanes; i++)
		fprintf(f, "    lane %-2u %-8s %10.1f MiB out, %8.1f MiB in\n", i,
			i == 1 ? "main" : "multifd", mib(r->lane_tx[i]), mib(r->lane_rx[i]));
	if (r->dst_status[0])
		fprintf(f, "  destination     %s\n", r->dst_status);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm migrate --qmp SRC.qmp --to HOST:PORT --psk FILE [--mode auto]\n"
"                   [--transport tcp] [--policy P] [--json] [--timeout SEC]\n"
"                   [--peer-timeout SEC]\n"
"                   [--chk-lanes N] [--ps-lanes N] [--epoch-ms MS]      (inside)\n"
"                   [--lanes N] [--max-bandwidth SIZE]                  (relay)\n"
"\n"
"Migrates the running VM behind --qmp to `tlm receive` on HOST:PORT.\n"
"Mode inside (a QEMU built with tlm's patch series, scripts/build-qemu.sh):\n"
"QEMU runs the tlm engine itself, a checkpoint stream on the CHK lanes and\n"
"each epoch's dirty pages on the PS lanes. Mode relay (stock QEMU): QEMU\n"
"migrates to a private unix socket with multifd on, and tlm carries its main\n"
"channel and each multifd channel over a lane of its own.\n"
"\n"
"  --qmp PATH         QMP unix socket of the running source QEMU\n"
"  --to HOST:PORT     where `tlm receive` listens\n"
"  --mode M           auto (inside if this QEMU has the tlm engine, else\n"
"                     relay; default), inside or relay; both sides alike\n"
"  --transport NAME   lane transport (default tcp)\n"
TLM_CLI_TARGS_HELP
"  --policy P         inside: tlm (one checkpoint pass, page saver alongside;\n"
"                     default), precopy, stop-copy, frs, mp.\n"
"                     relay: one-pass (switch over after QEMU's first full\n"
"                     pass; default), qemu (QEMU's own precopy),\n"
"                     auto-converge (QEMU's throttling)\n"
"  --chk-lanes N      inside: checkpoint lanes (default 1)\n"
"  --ps-lanes N       inside: page-saver lanes (default 1)\n"
"  --epoch-ms MS      inside: epoch length (default 100)\n"
"  --lanes N          relay: multifd channels, one data lane each, plus the\n"
"                     main channel's lane (default 4)\n"
"  --psk FILE         pre-shared key (same file on both hosts; required;\n"
"                     make one with tlm keygen FILE)\n"
"  --protect MODE     encrypt (default), integrity or none, the same on both\n"
"                     hosts (docs/security.md); on rdma, zero copy in each\n"
"  --timeout SEC      give up (and cancel) after SEC seconds (default 600)\n"
TLM_CLI_PEER_TIMEOUT_HELP("")
TLM_CLI_PEER_TIMEOUT_INSIDE_HELP("")
"  --max-bandwidth S  QEMU's max-bandwidth, bytes/s (default 64G)\n"
"  --json             print the report as one JSON object\n");
}

int tlm_cli_qmp_open(const char *path, struct tlm_qmp **q)
{
	int rc = tlm_qmp_connect(path, 10000, q);

	if (rc)
		tlm_cli_err("cannot talk QMP on %s: %s", path,
			    rc == -ENOENT ? "no such socket" :
			    rc == -ECONNREFUSED ? "nobody listening (is QEMU running with -qmp?)" :
			    tlm_strerror(rc));
	return rc;
}

int tlm_cli_migrate(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "to", required_argument, NULL, 't' },
		TLM_CLI_RELAY_OPTIONS,
		{ "policy", required_argument, NULL, 'p' },
		{ "max-bandwidth", required_argument, NULL, 'b' },
		{ "mode", required_argument, NULL, 'm' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "ps-lanes", required_argument, NULL, 's' },
		{ "epoch-ms", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static volatile sig_atomic_t stop;
	const char *qmp_path = NULL, *to = NULL;
	struct tlm_cli_relay ro = { .transport = "tcp", .multifd = 4, .timeout = 600,
				.protect = TLM_PROTECT_ENCRYPT };
	char host[256], port[32];
	struct tlm_relay_src_opts o = { 0 };
	struct tlm_relay_result r;
	struct tlm_psk psk;
	struct tlm_qmp *q;
	long chk = 1, ps = 1, epoch = 0;
	const char *mode = NULL, *policy_name = NULL;
	int policy = TLM_RELAY_POLICY_TLM, c, rc, inside;
	uint64_t bw = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end;

		int t = tlm_cli_relay_opt(&ro, c);

		if (t < 0)
			return 2;
		if (t > 0)
			continue;
		switch (c) {
		case 'q': qmp_path = optarg; break;
		case 't': to = optarg; break;
		case 'b':
			if (tlm_cli_parse_size(optarg, &bw) || !bw) {
				tlm_cli_err("--max-bandwidth: a size such as 10G");
				return 2;
			}
			break;
		case 'p': policy_name = optarg; break;
		case 'm':
			if (tlm_cli_parse_mode(optarg, &mode))
				return 2;
			break;
		case 'c':
		case 's':
		case 'e': {
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > (c == 'e' ? 60000 : 16)) {
				tlm_cli_err("--%s: 1..%d", c == 'c' ? "chk-lanes" :
					    c == 's' ? "ps-lanes" : "epoch-ms", c == 'e' ? 60000 : 16);
				return 2;
			}
			*(c == 'c' ? &chk : c == 's' ? &ps : &epoch) = v;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!qmp_path || !to) {
		tlm_cli_err("--qmp and --to are required");
		usage(stderr);
		return 2;
	}
	if (tlm_cli_parse_hostport(to, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--to: HOST:PORT, not '%s'", to);
		return 2;
	}
	if (tlm_cli_relay_check(&ro, &psk))
		return 2;
	if (policy_name && tlm_policy_parse(policy_name) < 0 &&
	    tlm_relay_policy_parse(policy_name) < 0) {
		tlm_cli_err("--policy: tlm, precopy, stop-copy, frs, mp (inside) or one-pass, "
			    "qemu, auto-converge (relay), not '%s'", policy_name);
		return 2;
	}
	if (tlm_cli_qmp_open(qmp_path, &q))
		return 1;
	inside = tlm_cli_pick_mode(q, mode);
	if (inside < 0) {
		tlm_qmp_close(q);
		return 2;
	}
	tlm_cli_relay_signals(&stop);
	if (inside) {
		struct tlm_cli_inside in = {
			.qmp = q, .source = true, .json = ro.json, .host = host, .port = port,
			.transport = ro.transport, .transport_args = ro.targs,
			.psk_path = ro.psk_path, .protect = ro.protect,
			.policy = policy_name ? policy_name : "tlm", .chk_lanes = (unsigned)chk,
			.ps_lanes = (unsigned)ps, .epoch_ms = (unsigned)epoch,
			.timeout_ms = (int)ro.timeout * 1000, .cancel = &stop,
			.peer_timeout_ms = (int)ro.peer_timeout * 1000,
		};

		if (tlm_policy_parse(in.policy) < 0) {
			tlm_cli_err("--policy %s is a relay policy; this QEMU runs the tlm engine: "
				    "tlm, precopy, stop-copy, frs or mp", in.policy);
			rc = 2;
		} else {
			rc = tlm_cli_inside_run(&in);
		}
		tlm_qmp_close(q);
		memset(&psk, 0, sizeof(psk));
		return rc;
	}
	if (policy_name) {
		policy = tlm_relay_policy_parse(policy_name);
		if (policy < 0) {
			tlm_cli_err("--policy %s needs QEMU with tlm's patch series "
				    "(scripts/build-qemu.sh); with stock QEMU (mode relay): "
				    "one-pass, qemu or auto-converge", policy_name);
			tlm_qmp_close(q);
			return 2;
		}
	}
	o.qmp = q;
	o.qmp_path = qmp_path;
	o.transport = ro.transport;
	o.transport_args = ro.targs;
	o.protect = ro.protect;
	o.host = host;
	o.port = port;
	o.psk = &psk;
	o.multifd = (unsigned)ro.multifd;
	o.policy = policy;
	o.max_bandwidth = bw;
	o.timeout_ms = (int)ro.timeout * 1000;
	o.peer_timeout_ms = (int)ro.peer_timeout * 1000;
	o.progress = tlm_cli_relay_progress;
	o.cancel = &stop;
	rc = tlm_relay_migrate(&o, &r);
	tlm_cli_relay_progress_end();
	if (ro.json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_cli_relay_report(stdout, &r, ro.transport, policy, ro.protect, true, &j);
		tlm_json_finish(&j);
	} else {
		tlm_cli_relay_report(stdout, &r, ro.transport, policy, ro.protect, false, NULL);
		if (rc) {
			char st[32] = "?";

			if (!tlm_qmp_query_status(q, st, sizeof(st), NULL))
				fprintf(stdout, "  source VM       %s\n", st);
		}
	}
	tlm_qmp_close(q);
	memset(&psk, 0, sizeof(psk));
	return rc ? 1 : 0;
}
