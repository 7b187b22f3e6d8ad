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
"                   [--accept-timeout SEC] [--timeout SEC]\n"
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
"                        hosts (docs/security.md); zero copy only with none\n"
"  --accept-timeout SEC  wait this long for the source (default 600)\n"
"  --timeout SEC         migration time limit once connected (default 600)\n"
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
		{ "transport", required_argument, NULL, 'T' },
		TLM_CLI_TARGS_OPTIONS,
		{ "lanes", required_argument, NULL, 'n' },
		{ "psk", required_argument, NULL, 'k' },
		{ "protect", required_argument, NULL, 'Q' },
		{ "accept-timeout", required_argument, NULL, 'a' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "json", no_argument, NULL, 'j' },
		{ "mode", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static volatile sig_atomic_t stop;
	const char *qmp_path = NULL, *listen = NULL, *transport = "tcp", *psk_path = NULL;
	int protect = TLM_PROTECT_ENCRYPT;
	char host[256], port[32], targs[512];
	struct tlm_cli_targs ta = { 0 };
	struct tlm_relay_dst_opts o = { 0 };
	struct tlm_relay_result r;
	struct tlm_psk psk;
	struct tlm_qmp *q;
	bool json = false;
	long lanes = 0, timeout = 600, acc_timeout = 600;
	const char *mode = NULL;
	int c, rc, inside;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end;

		if (tlm_cli_targs_opt(&ta, c))
			continue;
		switch (c) {
		case 'q': qmp_path = optarg; break;
		case 'l': listen = optarg; break;
		case 'T': transport = optarg; break;
		case 'k': psk_path = optarg; break;
		case 'Q':
			if (tlm_cli_parse_protect(optarg, &protect))
				return 2;
			break;
		case 'j': json = true; break;
		case 'm':
			if (tlm_cli_parse_mode(optarg, &mode))
				return 2;
			break;
		case 'n':
			lanes = strtol(optarg, &end, 10);
			if (*end || lanes < 1 || lanes > TLM_RELAY_MAX_MULTIFD) {
				tlm_cli_err("--lanes: 1..%d", TLM_RELAY_MAX_MULTIFD);
				return 2;
			}
			break;
		case 'a':
		case 'o': {
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > 86400) {
				tlm_cli_err("--%s: seconds, 1..86400",
					    c == 'a' ? "accept-timeout" : "timeout");
				return 2;
			}
			if (c == 'a')
				acc_timeout = v;
			else
				timeout = v;
			break;
		}
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
	if (!tlm_transport_available(transport)) {
		tlm_cli_err("transport '%s' is not built into this tlm", transport);
		return 2;
	}
	if (tlm_cli_targs_build(&ta, transport, targs, sizeof(targs)))
		return 2;
	if (tlm_cli_get_psk(psk_path, false, &psk))
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
			.qmp = q, .source = false, .json = json, .host = host, .port = port,
			.transport = transport, .transport_args = targs, .psk_path = psk_path,
			.protect = protect,
			.timeout_ms = (int)(acc_timeout + timeout) * 1000, .cancel = &stop,
		};

		rc = tlm_cli_inside_run(&in);
		tlm_qmp_close(q);
		memset(&psk, 0, sizeof(psk));
		return rc;
	}
	o.qmp = q;
	o.transport = transport;
	o.transport_args = targs;
	o.protect = protect;
	o.addr = host;
	o.port = port;
	o.psk = &psk;
	o.multifd = (unsigned)lanes;
	o.accept_timeout_ms = (int)acc_timeout * 1000;
	o.timeout_ms = (int)timeout * 1000;
	o.listening = say_port;
	o.cancel = &stop;
	rc = tlm_relay_receive(&o, &r);
	if (json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_bool(&j, "completed", r.completed);
		if (r.error[0])
			tlm_json_str(&j, "error", r.error);
		tlm_json_str(&j, "destination", r.dst_status);
		tlm_json_i64(&j, "wall_ms", r.wall_ms);
		tlm_json_str(&j, "transport", transport);
		tlm_json_str(&j, "protect", tlm_protect_name(protect));
		tlm_cli_json_lanes(&j, &r);
		tlm_json_finish(&j);
	} else if (rc) {
		printf("receive FAILED: %s%s\n", r.error,
		       r.dst_quit ? " (destination QEMU told to quit)" : "");
	} else {
		printf("received: destination %s, %.1f MiB over %u lanes + control, protect %s\n",
		       r.dst_status, (double)r.bytes / 1048576.0, r.n_lanes,
		       tlm_protect_name(protect));
	}
	tlm_qmp_close(q);
	memset(&psk, 0, sizeof(psk));
	return rc ? 1 : 0;
}
