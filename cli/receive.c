/* SPDX-License-Identifier: MIT */
/*
 * `tlm receive`: destination side of the relay for stock QEMU
 * (qemu-glue/relay.c). The QEMU must have been started with
 * `-incoming defer`; tlm configures it, runs migrate-incoming on a private
 * unix socket and reconnects the lanes to it, main channel first.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "relay.h"


static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm receive --qmp DST.qmp --listen ADDR:PORT --psk FILE [--mode auto]\n"
"                   [--transport tcp] [--lanes N] [--json]\n"
"                   [--accept-timeout SEC] [--timeout SEC] [--peer-timeout SEC]\n"
"\n"
"Destination side. Start QEMU with the same machine options as the source\n"
"plus `-incoming defer` and a -qmp socket. Mode inside (QEMU built with\n"
"tlm's patch series): QEMU itself listens and places every page straight\n"
"into guest RAM; tlm waits until the VM runs here. Mode relay (stock QEMU):\n"
"tlm waits for `tlm migrate`, configures the QEMU to match the source\n"
"(multifd, same channel count) and hands each lane to it.\n"
"\n"
"  --qmp PATH            QMP unix socket of the waiting destination QEMU\n"
"  --listen ADDR:PORT    where to wait for the source (relay: port 0 picks one)\n"
"  --mode M              auto (inside if this QEMU has the tlm engine; default),\n"
"                        inside or relay; both sides alike\n"
"  --transport NAME      lane transport (default tcp)\n"
TLM_CLI_TARGS_HELP
"  --lanes N             expected multifd channels (default: the source's)\n"
"  --psk FILE            pre-shared key (same file on both hosts; required;\n"
"                        make one with tlm keygen FILE)\n"
"  --protect MODE        encrypt (default), integrity or none, the same on both\n"
"                        hosts (docs/security.md); on rdma, zero copy in each\n"
"  --accept-timeout SEC  wait this long for the source (default 600)\n"
"  --timeout SEC         migration time limit once connected (default 600)\n"
TLM_CLI_PEER_TIMEOUT_HELP("   ")
TLM_CLI_PEER_TIMEOUT_INSIDE_HELP("   ")
"  --json                print the result as one JSON object\n");
}

static void say_port(int port, void *arg)
{
	(void)arg;
	fprintf(stderr, "tlm: listening on port %d\n", port);
}

int tlm_cli_receive(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "listen", required_argument, NULL, 'l' },
		TLM_CLI_RELAY_OPTIONS,
		{ "accept-timeout", required_argument, NULL, 'a' },
		{ "mode", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static volatile sig_atomic_t stop;
	const char *qmp_path = NULL, *listen = NULL;
	struct tlm_cli_relay ro = { .transport = "tcp", .timeout = 600, .acc_timeout = 600,
				.protect = TLM_PROTECT_ENCRYPT };
	char host[256], port[32];
	struct tlm_relay_dst_opts o = { 0 };
	struct tlm_relay_result r;
	struct tlm_psk psk;
	struct tlm_qmp *q;
	const char *mode = NULL;
	int c, rc, inside;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		int t = tlm_cli_relay_opt(&ro, c);

		if (t < 0)
			return 2;
		if (t > 0)
			continue;
		switch (c) {
		case 'q': qmp_path = optarg; break;
		case 'l': listen = optarg; break;
		case 'm':
			if (tlm_cli_parse_mode(optarg, &mode))
				return 2;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!qmp_path || !listen) {
		tlm_cli_err("--qmp and --listen are required");
		usage(stderr);
		return 2;
	}
	if (tlm_cli_parse_hostport(listen, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--listen: ADDR:PORT, not '%s'", listen);
		return 2;
	}
	if (tlm_cli_relay_check(&ro, &psk))
		return 2;
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
			.qmp = q, .source = false, .json = ro.json, .host = host, .port = port,
			.transport = ro.transport, .transport_args = ro.targs,
			.psk_path = ro.psk_path, .protect = ro.protect,
			.timeout_ms = (int)(ro.acc_timeout + ro.timeout) * 1000, .cancel = &stop,
			.peer_timeout_ms = (int)ro.peer_timeout * 1000,
		};

		rc = tlm_cli_inside_run(&in);
		tlm_qmp_close(q);
		memset(&psk, 0, sizeof(psk));
		return rc;
	}
	o.qmp = q;
	o.transport = ro.transport;
	o.transport_args = ro.targs;
	o.protect = ro.protect;
	o.addr = host;
	o.port = port;
	o.psk = &psk;
	o.multifd = (unsigned)ro.multifd;
	o.accept_timeout_ms = (int)ro.acc_timeout * 1000;
	o.timeout_ms = (int)ro.timeout * 1000;
	o.peer_timeout_ms = (int)ro.peer_timeout * 1000;
	o.listening = say_port;
	o.cancel = &stop;
	rc = tlm_relay_receive(&o, &r);
	if (ro.json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_bool(&j, "completed", r.completed);
		if (r.error[0])
			tlm_json_str(&j, "error", r.error);
		tlm_json_str(&j, "destination", r.dst_status);
		tlm_json_i64(&j, "wall_ms", r.wall_ms);
		tlm_json_str(&j, "transport", ro.transport);
		tlm_json_str(&j, "protect", tlm_protect_name(ro.protect));
		tlm_cli_json_lanes(&j, &r);
		tlm_json_finish(&j);
	} else if (rc) {
		printf("receive FAILED: %s%s\n", r.error,
		       r.dst_quit ? " (destination QEMU told to quit)" : "");
	} else {
		printf("received: destination %s, %.1f MiB over %u lanes + control, protect %s\n",
		       r.dst_status, (double)r.bytes / 1048576.0, r.n_lanes,
		       tlm_protect_name(ro.protect));
	}
	tlm_qmp_close(q);
	memset(&psk, 0, sizeof(psk));
	return rc ? 1 : 0;
}
