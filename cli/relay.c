/* SPDX-License-Identifier: MIT */
/*
 * `tlm relay-out` and `tlm relay-in`: the passive relays
 * (qemu-glue/relay-passive.c) for migrations that libvirt drives. This
 * file parses options and prints; docs/libvirt.md shows the whole setup.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "relay.h"

#define RELAY_COMMON_HELP \
"  --transport NAME      lane transport (default tcp)\n" \
TLM_CLI_TARGS_HELP \
"  --psk FILE            pre-shared key (same file on both hosts; required)\n" \
"  --protect MODE        encrypt (default), integrity or none, the same on\n" \
"                        both relays (docs/security.md)\n" \
"  --timeout SEC         migration time limit once it started (default 600)\n" \
TLM_CLI_PEER_TIMEOUT_HELP("   ") \
"  --json                print the result as one JSON object\n"

static const struct option common_opts[] = {
	TLM_CLI_RELAY_OPTIONS,
	{ "accept-timeout", required_argument, NULL, 'a' },
	{ "help", no_argument, NULL, 'h' },
};
#define N_COMMON (sizeof(common_opts) / sizeof(common_opts[0]))

int tlm_cli_relay_opt(struct tlm_cli_relay *rc, int c)
{
	char *end;
	long v;

	if (tlm_cli_targs_opt(&rc->ta, c))
		return 1;
	switch (c) {
	case 'T': rc->transport = optarg; return 1;
	case 'k': rc->psk_path = optarg; return 1;
	case 'j': rc->json = true; return 1;
	case 'Q': return tlm_cli_parse_protect(optarg, &rc->protect) ? -1 : 1;
	case 'n':
		v = strtol(optarg, &end, 10);
		if (*end || v < 1 || v > TLM_RELAY_MAX_MULTIFD) {
			tlm_cli_err("--lanes: multifd channels, 1..%d", TLM_RELAY_MAX_MULTIFD);
			return -1;
		}
		rc->multifd = v;
		return 1;
	case 'K':
		v = strtol(optarg, &end, 10);
		if (*end || v < 2 || v > 3600) {
			tlm_cli_err("--peer-timeout: seconds, 2..3600");
			return -1;
		}
		rc->peer_timeout = v;
		return 1;
	case 'o':
	case 'a':
		v = strtol(optarg, &end, 10);
		if (*end || v < 1 || v > 86400) {
			tlm_cli_err("--%s: seconds, 1..86400", c == 'o' ? "timeout" : "accept-timeout");
			return -1;
		}
		*(c == 'o' ? &rc->timeout : &rc->acc_timeout) = v;
		return 1;
	default:
		return 0;
	}
}

int tlm_cli_relay_check(struct tlm_cli_relay *rc, struct tlm_psk *psk)
{
	if (!tlm_transport_available(rc->transport)) {
		tlm_cli_err("transport '%s' is not built into this tlm", rc->transport);
		return -1;
	}
	if (tlm_cli_targs_build(&rc->ta, rc->transport, rc->targs, sizeof(rc->targs)))
		return -1;
	if (!rc->psk_path) {
		tlm_cli_err("--psk FILE is required (%s)",
			rc->psk_whose ? rc->psk_whose : "the same key file on both hosts");
		return -1;
	}
	return tlm_cli_get_psk(rc->psk_path, false, psk) ? -1 : 0;
}

void tlm_cli_json_lanes(struct tlm_json *j, const struct tlm_relay_result *r)
{
	tlm_json_u64(j, "bytes", r->bytes);
	tlm_json_u64(j, "lanes", r->n_lanes ? r->n_lanes - 1 : 0);
	tlm_json_arr(j, "lane_bytes");
	for (unsigned i = 1; i <= r->n_lanes; i++)
		tlm_json_u64(j, NULL, r->lane_tx[i] + r->lane_rx[i]);
	tlm_json_end_arr(j);
}

static void report(const struct tlm_relay_result *r, const struct tlm_cli_relay *rc,
		   const char *side, const char *sock, int rv)
{
	if (rc->json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "side", side);
		tlm_json_bool(&j, "completed", r->completed);
		if (r->error[0])
			tlm_json_str(&j, "error", r->error);
		tlm_json_str(&j, "socket", sock);
		tlm_json_i64(&j, "wall_ms", r->wall_ms);
		tlm_json_str(&j, "transport", rc->transport);
		tlm_json_str(&j, "protect", tlm_protect_name(rc->protect));
		tlm_cli_json_lanes(&j, r);
		tlm_json_finish(&j);
	} else if (rv) {
		printf("%s FAILED (%s, protect %s): %s\n", side, sock,
		       tlm_protect_name(rc->protect), r->error);
	} else {
		printf("%s: every channel of %s carried and closed: %.1f MiB in %lld ms over "
		       "%u lanes + control, protect %s\n", side, sock,
		       (double)r->bytes / (1024.0 * 1024.0), (long long)r->wall_ms, r->n_lanes,
		       tlm_protect_name(rc->protect));
	}
	fflush(stdout);
}

static void out_usage(FILE *f)
{
	fprintf(f,
"usage: tlm relay-out --unix PATH --to HOST:PORT --psk FILE [--lanes N]\n"
"                     [--name NAME] [--socket-group GROUP] [--transport tcp]\n"
"                     [--protect encrypt|integrity|none]\n"
"                     [--accept-timeout SEC] [--timeout SEC] [--json]\n"
"\n"
"Source host of a migration that libvirt drives (virsh migrate --live --p2p\n"
"--migrateuri unix://PATH --parallel --parallel-connections N): listens on\n"
"PATH, where the source QEMU connects, and carries its main channel and each\n"
"multifd channel over a lane of its own to `tlm relay-in` on HOST:PORT. Ends\n"
"when QEMU has closed every channel; on any failure it closes them, so the\n"
"migration fails and libvirt keeps the VM running here. docs/libvirt.md.\n"
"\n"
"  --unix PATH           the socket the source QEMU connects to\n"
"  --to HOST:PORT        where `tlm relay-in` listens\n"
"  --lanes N             multifd channels (libvirt's --parallel-connections;\n"
"                        default 2)\n"
"  --name NAME           the socket's name on the destination host, for a\n"
"                        relay-in with --unix-dir (default: PATH's last part)\n"
"  --socket-group G      group that may connect to PATH (mode 0660; default\n"
"                        libvirt-qemu if that group exists, else owner only)\n"
"  --accept-timeout SEC  wait this long for QEMU to connect (default 600)\n"
RELAY_COMMON_HELP);
}

static void say_ready(const char *path, void *arg)
{
	(void)arg;
	fprintf(stderr, "tlm: relay-out ready: waiting for QEMU on %s\n", path);
}

int tlm_cli_relay_out(int argc, char **argv)
{
	struct option lopts[N_COMMON + 5] = {
		{ "unix", required_argument, NULL, 'u' },
		{ "to", required_argument, NULL, 't' },
		{ "name", required_argument, NULL, 'N' },
		{ "socket-group", required_argument, NULL, 'g' },
	};
	static volatile sig_atomic_t stop;
	struct tlm_cli_relay rc = { .transport = "tcp", .multifd = 2, .timeout = 600,
				   .acc_timeout = 600 };
	const char *path = NULL, *to = NULL, *group = NULL;
	struct tlm_relay_out_opts o = { 0 };
	struct tlm_relay_result r;
	char host[256], port[32];
	struct tlm_psk psk;
	int c, rv;

	memcpy(lopts + 4, common_opts, sizeof(common_opts));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		int t = tlm_cli_relay_opt(&rc, c);

		if (t < 0)
			return 2;
		if (t)
			continue;
		switch (c) {
		case 'u': path = optarg; break;
		case 't': to = optarg; break;
		case 'N': o.name = optarg; break;
		case 'g': group = optarg; break;
		case 'h': out_usage(stdout); return 0;
		default: out_usage(stderr); return 2;
		}
	}
	if (!path || !to) {
		tlm_cli_err("--unix and --to are required");
		out_usage(stderr);
		return 2;
	}
	if (tlm_cli_parse_hostport(to, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--to: HOST:PORT, not '%s'", to);
		return 2;
	}
	o.socket_gid = -1;
	if (group || getgrnam("libvirt-qemu")) {
		struct group *g = getgrnam(group ? group : "libvirt-qemu");

		if (!g) {
			tlm_cli_err("--socket-group: no group '%s'", group);
			return 2;
		}
		o.socket_gid = (int)g->gr_gid;
	}
	if (tlm_cli_relay_check(&rc, &psk))
		return 2;
	tlm_cli_relay_signals(&stop);
	o.unix_path = path;
	o.transport = rc.transport;
	o.transport_args = rc.targs;
	o.host = host;
	o.port = port;
	o.psk = &psk;
	o.protect = rc.protect;
	o.multifd = (unsigned)rc.multifd;
	o.accept_timeout_ms = (int)rc.acc_timeout * 1000;
	o.timeout_ms = (int)rc.timeout * 1000;
	o.peer_timeout_ms = (int)rc.peer_timeout * 1000;
	o.ready = say_ready;
	o.cancel = &stop;
	rv = tlm_relay_out(&o, &r);
	report(&r, &rc, "relay-out", path, rv);
	memset(&psk, 0, sizeof(psk));
	return rv ? 1 : 0;
}

static void in_usage(FILE *f)
{
	fprintf(f,
"usage: tlm relay-in --listen ADDR:PORT (--unix PATH | --unix-dir DIR)\n"
"                    --psk FILE [--lanes N] [--once] [--transport tcp]\n"
"                    [--protect encrypt|integrity|none]\n"
"                    [--accept-timeout SEC] [--timeout SEC] [--json]\n"
"\n"
"Destination host of a migration that libvirt drives: takes the session of\n"
"`tlm relay-out`, connects QEMU's main channel to the destination QEMU's\n"
"socket (libvirt's migrate URI unix://PATH), then each multifd channel as its\n"
"first bytes arrive, and carries the return path back. With --unix PATH it\n"
"serves one migration and exits; with --unix-dir DIR it is a service: the\n"
"source names the socket in DIR (a plain name, no path), and it serves one\n"
"migration after another until interrupted (or one, with --once).\n"
"\n"
"  --listen ADDR:PORT    where to wait for relay-out (port 0 picks one)\n"
"  --unix PATH           the destination QEMU's migration socket\n"
"  --unix-dir DIR        the directory of the sockets the sources name\n"
"  --lanes N             expected multifd channels (default: the source's)\n"
"  --once                with --unix-dir: serve one migration, then exit\n"
"  --accept-timeout SEC  wait this long for a source (default: 600 with\n"
"                        --unix or --once, else forever)\n"
RELAY_COMMON_HELP);
}

static void say_port(int port, int protect)
{
	fprintf(stderr, "tlm: relay-in listening on port %d (protect %s)\n", port,
		tlm_protect_name(protect));
}

int tlm_cli_relay_in(int argc, char **argv)
{
	struct option lopts[N_COMMON + 5] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "unix", required_argument, NULL, 'u' },
		{ "unix-dir", required_argument, NULL, 'd' },
		{ "once", no_argument, NULL, '1' },
	};
	static volatile sig_atomic_t stop;
	struct tlm_cli_relay rc = { .transport = "tcp", .timeout = 600 };
	const char *listen = NULL;
	struct tlm_relay_in_opts o = { 0 };
	struct tlm_session_cfg cfg;
	struct tlm_listener *l = NULL;
	struct tlm_relay_result r;
	char host[256], port[32];
	struct tlm_psk psk;
	bool once = false;
	int c, rv = 0;

	memcpy(lopts + 4, common_opts, sizeof(common_opts));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		int t = tlm_cli_relay_opt(&rc, c);

		if (t < 0)
			return 2;
		if (t)
			continue;
		switch (c) {
		case 'l': listen = optarg; break;
		case 'u': o.unix_path = optarg; break;
		case 'd': o.unix_dir = optarg; break;
		case '1': once = true; break;
		case 'h': in_usage(stdout); return 0;
		default: in_usage(stderr); return 2;
		}
	}
	if (!listen || !o.unix_path == !o.unix_dir) {
		tlm_cli_err("--listen and one of --unix or --unix-dir are required");
		in_usage(stderr);
		return 2;
	}
	if (tlm_cli_parse_hostport(listen, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--listen: ADDR:PORT, not '%s'", listen);
		return 2;
	}
	if (tlm_cli_relay_check(&rc, &psk))
		return 2;
	once |= o.unix_path != NULL;
	o.multifd = (unsigned)rc.multifd;
	o.timeout_ms = (int)rc.timeout * 1000;
	o.peer_timeout_ms = (int)rc.peer_timeout * 1000;
	o.accept_timeout_ms = rc.acc_timeout ? (int)rc.acc_timeout * 1000 : once ? 0 : -1;
	o.cancel = &stop;
	cfg = tlm_relay_session_cfg(rc.transport, rc.targs, &psk, o.multifd, rc.protect);
	rv = tlm_listen(&cfg, host, port, &l);
	if (rv) {
		tlm_cli_err("cannot listen on %s: %s", listen, tlm_strerror(rv));
		memset(&psk, 0, sizeof(psk));
		return 1;
	}
	say_port(tlm_listener_port(l), rc.protect);
	tlm_cli_relay_signals(&stop);
	do {
		rv = tlm_relay_in(&o, l, &r);
		if (rv == -TLM_EABORTED && stop)
			break;
		report(&r, &rc, "relay-in", o.unix_path ? o.unix_path : o.unix_dir, rv);
		if (rv && !r.n_lanes && !once)
			break;  /* no session could be taken at all: the listener is broken */
	} while (!once && !stop);
	tlm_listener_close(l);
	memset(&psk, 0, sizeof(psk));
	return once && rv ? 1 : 0;
}
