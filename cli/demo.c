/* SPDX-License-Identifier: MIT */
/*
 * `tlm demo`: two QEMUs on this machine (TCG), the test guest dirtying its
 * RAM on the source, a live migration, then a few more guest sweeps on the
 * destination, whose own page verification says whether anything was lost.
 * Mode inside (the default once scripts/build-qemu.sh has built QEMU with
 * tlm's patch series): the QEMUs run the tlm engine, CHK and PS streams on
 * lanes of their own. Mode relay (stock QEMU): QEMU's own multifd streams
 * carried over tcp lanes.
 *
 * Threads: the main thread starts and stops both VMs (vmproc ties
 * PDEATHSIG to the forking thread) and runs the source side; a second
 * thread runs the receiver with the destination's QMP handle, which the
 * main thread does not touch until that thread is joined.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"
#include "inside.h"
#include "relay.h"
#include "tlm/engine.h"
#include "vmproc.h"

static volatile sig_atomic_t stop;

/* What the guest said on its serial port so far. */
struct guest_log {
	char part[512];
	size_t plen;
	bool started, filled, fault;
	int statuses;
	long long sweep, errors, vpasses, writes, first_sweep;
	int error_lines;
};

static void log_line(struct guest_log *g, const char *l)
{
	const char *p;

	if (!strncmp(l, "TLMG start", 10))
		g->started = true;
	else if (!strncmp(l, "TLMG filled", 11))
		g->filled = true;
	else if (!strncmp(l, "TLMG error", 10))
		g->error_lines++;
	else if (!strncmp(l, "TLMG fault", 10))
		g->fault = true;
	else if (!strncmp(l, "TLMG status", 11)) {
		if ((p = strstr(l, " sweep=")))
			g->sweep = atoll(p + 7);
		if ((p = strstr(l, " errors=")))
			g->errors = atoll(p + 8);
		if ((p = strstr(l, " vpasses=")))
			g->vpasses = atoll(p + 9);
		if ((p = strstr(l, " writes=")))
			g->writes = atoll(p + 8);
		if (!g->statuses++)
			g->first_sweep = g->sweep;
	}
}

static void log_poll(struct tlm_vmproc *vp, struct guest_log *g)
{
	char buf[4096];
	ssize_t n;

	while ((n = tlm_vmproc_serial_tail(vp, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' || g->plen == sizeof(g->part) - 1) {
				g->part[g->plen] = '\0';
				log_line(g, g->part);
				g->plen = 0;
			} else if (buf[i] != '\r') {
				g->part[g->plen++] = buf[i];
			}
		}
	}
}

/* Polls the serial log until pred holds; 0, -ETIMEDOUT, -ECHILD if the VM
 * died, -TLM_EABORTED on Ctrl-C. */
static int wait_guest(struct tlm_vmproc *vp, struct guest_log *g,
		      bool (*pred)(const struct guest_log *, long long), long long arg,
		      int timeout_ms)
{
	uint64_t end = tlm_cli_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		log_poll(vp, g);
		if (pred(g, arg))
			return 0;
		if (g->fault)
			return -EFAULT;
		if (!tlm_vmproc_alive(vp))
			return -ECHILD;
		if (stop)
			return -TLM_EABORTED;
		if (tlm_cli_now_ms() >= end)
			return -ETIMEDOUT;
		usleep(50000);
	}
}

static bool running_pred(const struct guest_log *g, long long arg)
{
	(void)arg;
	return g->filled && g->statuses > 0;
}

static bool sweeps_pred(const struct guest_log *g, long long arg)
{
	return g->statuses > 0 && g->sweep - g->first_sweep >= arg;
}

static int find_kernel(const char *given, char *out, size_t len)
{
	char exe[PATH_MAX], *slash;
	const char *env = getenv("TLM_GUEST_ELF");
	const char *fixed[] = { "/usr/local/share/tlm/guest.elf", "/usr/share/tlm/guest.elf" };
	ssize_t n;

	if (given) {
		if (access(given, R_OK))
			return -errno;
		snprintf(out, len, "%s", given);
		return 0;
	}
	if (env && !access(env, R_OK)) {
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			/* build tree: <build>/cli/tlm -> <build>/tests/guest/guest.elf;
			 * installed: <prefix>/bin/tlm -> <prefix>/share/tlm/guest.elf */
			const char *rel[] = { "/../tests/guest/guest.elf",
					      "/../share/tlm/guest.elf" };

			for (size_t i = 0; i < 2; i++) {
				if (strlen(exe) + strlen(rel[i]) >= len)
					continue;
				strcpy(out, exe);
				strcat(out, rel[i]);
				if (!access(out, R_OK))
					return 0;
			}
		}
	}
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (!access(fixed[i], R_OK)) {
			snprintf(out, len, "%s", fixed[i]);
			return 0;
		}
	}
	return -ENOENT;
}

/* The QEMU that scripts/build-qemu.sh built next to this tlm
 * (<build>/cli/tlm -> <build>/qemu-tlm/bin/qemu-system-x86_64). */
static int find_patched_qemu(char *out, size_t len)
{
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return -ENOENT;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	if ((size_t)snprintf(out, len, "%s/../qemu-tlm/bin/qemu-system-x86_64", exe) >= len)
		return -ENAMETOOLONG;
	return access(out, X_OK) ? -ENOENT : 0;
}

/* A key file QEMU can read (0600, in a private directory). */
static int psk_file(const struct tlm_psk *psk, char *dir, size_t dlen, char *path, size_t plen)
{
	char hex[2 * TLM_PSK_MAX + 2];
	FILE *f;
	int fd;

	snprintf(dir, dlen, "/tmp/tlm-demo-XXXXXX");
	if (!mkdtemp(dir))
		return -errno;
	snprintf(path, plen, "%s/psk", dir);
	if (tlm_psk_to_hex(psk, hex, sizeof(hex)) < 0)
		return -EINVAL;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	fprintf(f, "%s\n", hex);
	return fclose(f) ? -errno : 0;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -errno;
	if (!bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &al))
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* Mode inside: migrate-incoming on dst, migrate on src, until dst runs. */
static int run_inside(struct tlm_vmproc *src, struct tlm_vmproc *dst, const char *psk_path,
		      const char *policy, unsigned chk, unsigned ps, bool json,
		      struct tlm_inside_result *r)
{
	struct tlm_inside_opts o = {
		.host = "127.0.0.1", .transport = "tcp", .psk_path = psk_path,
		.chk_lanes = chk, .ps_lanes = ps, .policy = policy, .timeout_ms = 300000,
		.cancel = &stop,
	};
	char port[16], uri[1024], dst_status[32] = "";
	int rc, running = 0;
	uint64_t end;

	memset(r, 0, sizeof(*r));
	rc = free_port();
	if (rc < 0) {
		snprintf(r->error, sizeof(r->error), "no free port: %s", strerror(-rc));
		return rc;
	}
	snprintf(port, sizeof(port), "%d", rc);
	o.port = port;
	o.qmp = tlm_vmproc_qmp(dst);
	rc = tlm_inside_uri(&o, false, uri, sizeof(uri), r->error, sizeof(r->error));
	if (!rc && (rc = tlm_qmp_migrate_incoming(o.qmp, uri)))
		snprintf(r->error, sizeof(r->error), "destination refused migrate-incoming: %s",
			 tlm_qmp_last_error(o.qmp));
	if (rc)
		return rc;
	o.qmp = tlm_vmproc_qmp(src);
	o.progress = json ? NULL : tlm_cli_inside_progress;
	rc = tlm_inside_migrate(&o, r);
	tlm_cli_inside_progress_end();
	if (rc)
		return rc;
	end = tlm_cli_now_ms() + 30000;
	while (!running && tlm_cli_now_ms() < end) {
		if (tlm_qmp_query_status(tlm_vmproc_qmp(dst), dst_status, sizeof(dst_status),
					 &running))
			break;
		if (!running)
			usleep(50000);
	}
	if (!running) {
		snprintf(r->error, sizeof(r->error), "the destination VM is %s, not running",
			 dst_status);
		r->completed = false;
		return -EIO;
	}
	return 0;
}

struct recv_job {
	struct tlm_relay_dst_opts o;
	struct tlm_relay_result r;
	int rc;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int port;                    /* 0 until listening, -1 if it never will */
};

static void job_port(int port, void *arg)
{
	struct recv_job *j = arg;

	pthread_mutex_lock(&j->mu);
	j->port = port;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

static void *recv_thread(void *arg)
{
	struct recv_job *j = arg;

	j->rc = tlm_relay_receive(&j->o, &j->r);
	job_port(j->port ? j->port : -1, j);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm demo [--kernel GUEST.ELF] [--mem MIB] [--pattern mg|sp|random|idle]\n"
"                [--rate PAGES/S] [--policy P] [--mode auto|inside|relay]\n"
"                [--chk-lanes N] [--ps-lanes N] [--lanes N]\n"
"                [--sweeps N] [--qemu BINARY] [--json] [--keep]\n"
"\n"
"Starts two QEMUs on this machine (TCG) with the tlm test guest, which keeps\n"
"rewriting and verifying its memory; migrates it live from one to the other\n"
"over tcp lanes; lets the guest run a few more sweeps on the destination and\n"
"reports, with the guest's own count of bad pages. Mode inside (default once\n"
"scripts/build-qemu.sh has built QEMU with tlm's patch series): the QEMUs run\n"
"the tlm engine, a checkpoint stream and a page-saver stream on lanes of\n"
"their own. Mode relay (stock QEMU): QEMU's own multifd migration carried\n"
"over tlm lanes.\n"
"\n"
"  --kernel FILE   the test guest (default: tests/guest/guest.elf in the build\n"
"                  tree of this tlm, or <prefix>/share/tlm/guest.elf)\n"
"  --mem MIB       guest RAM (default 512)\n"
"  --pattern P     guest write pattern (default mg)\n"
"  --rate N        guest page writes per second, 0 = unlimited (default 0)\n"
"  --mode M        auto (inside if the QEMU runs the tlm engine), inside, relay\n"
"  --policy P      inside: tlm (default), stop-copy, precopy, frs, mp;\n"
"                  relay: one-pass (default), qemu, auto-converge\n"
"  --chk-lanes N   inside: checkpoint lanes (default 1)\n"
"  --ps-lanes N    inside: page-saver lanes (default 1)\n"
"  --lanes N       relay: multifd channels / data lanes (default 4)\n"
"  --sweeps N      guest sweeps to wait for on the destination (default 2)\n"
"  --qemu BINARY   QEMU to use (default: the one scripts/build-qemu.sh built,\n"
"                  else qemu-system-x86_64 in PATH)\n"
"  --json          print the report as one JSON object\n"
"  --keep          keep the VMs' directories (logs) for inspection\n");
}

int tlm_cli_demo(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "mem", required_argument, NULL, 'm' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "rate", required_argument, NULL, 'r' },
		{ "lanes", required_argument, NULL, 'n' },
		{ "policy", required_argument, NULL, 'P' },
		{ "sweeps", required_argument, NULL, 's' },
		{ "qemu", required_argument, NULL, 'Q' },
		{ "json", no_argument, NULL, 'j' },
		{ "keep", no_argument, NULL, 'K' },
		{ "mode", required_argument, NULL, 'M' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "ps-lanes", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kernel_arg = NULL, *pattern = "mg", *qemu = NULL;
	long mem = 512, rate = 0, lanes = 4, sweeps = 2, chk = 1, ps = 1;
	int policy = TLM_RELAY_POLICY_TLM, c, rc, status = 1, inside = 0;
	const char *mode = NULL, *policy_name = NULL;
	char psk_dir[64] = "", psk_path[96] = "";
	struct tlm_inside_result ir = { 0 };
	bool patched = false;
	bool json = false, keep = false, recv_on = false;
	char kernel[PATH_MAX], qemu_path[PATH_MAX], mem_s[24], append[128], port_s[16];
	struct tlm_vmproc *src = NULL, *dst = NULL;
	struct guest_log gs = { 0 }, gd = { 0 };
	struct recv_job job = { .port = 0 };
	struct tlm_relay_src_opts so = { 0 };
	struct tlm_relay_result res;
	struct tlm_psk psk;
	pthread_t rt;
	uint64_t t_start = tlm_cli_now_ms();
	char dst_status[32] = "", src_status[32] = "";
	int guest_rc = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;

		if (c == 'm' || c == 'r' || c == 'n' || c == 's' || c == 'c' || c == 'S') {
			v = strtol(optarg, &end, 10);
			if (*end || v < 0 || (c == 'm' && (v < 16 || v > 16384)) ||
			    (c == 'n' && (v < 1 || v > TLM_RELAY_MAX_MULTIFD)) ||
			    ((c == 'c' || c == 'S') && (v < 1 || v > 16)) ||
			    (c == 's' && v > 1000)) {
				tlm_cli_err("bad value '%s' for --%s", optarg,
					    c == 'm' ? "mem" : c == 'r' ? "rate" :
					    c == 'n' ? "lanes" : c == 'c' ? "chk-lanes" :
					    c == 'S' ? "ps-lanes" : "sweeps");
				return 2;
			}
		}
		switch (c) {
		case 'k': kernel_arg = optarg; break;
		case 'm': mem = v; break;
		case 'r': rate = v; break;
		case 'n': lanes = v; break;
		case 's': sweeps = v; break;
		case 'Q': qemu = optarg; break;
		case 'j': json = true; break;
		case 'K': keep = true; break;
		case 'p':
			if (strcmp(optarg, "mg") && strcmp(optarg, "sp") &&
			    strcmp(optarg, "random") && strcmp(optarg, "idle")) {
				tlm_cli_err("--pattern: mg, sp, random or idle");
				return 2;
			}
			pattern = optarg;
			break;
		case 'c': chk = v; break;
		case 'S': ps = v; break;
		case 'P':
			if (tlm_policy_parse(optarg) < 0 && tlm_relay_policy_parse(optarg) < 0) {
				tlm_cli_err("--policy: tlm, stop-copy, precopy, frs, mp (inside) or "
					    "one-pass, qemu, auto-converge (relay), not '%s'", optarg);
				return 2;
			}
			policy_name = optarg;
			break;
		case 'M':
			if (tlm_cli_parse_mode(optarg, &mode))
				return 2;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	rc = find_kernel(kernel_arg, kernel, sizeof(kernel));
	if (rc) {
		if (kernel_arg)
			tlm_cli_err("--kernel %s: %s", kernel_arg, strerror(-rc));
		else
			tlm_cli_err("test guest not found: build it (ninja -C build builds "
				    "tests/guest/guest.elf) or pass --kernel FILE");
		return 1;
	}
	if (!qemu && !(mode && !strcmp(mode, "relay")) &&
	    !find_patched_qemu(qemu_path, sizeof(qemu_path))) {
		patched = true;
		qemu = qemu_path;
	}
	rc = patched ? 0 : tlm_vmproc_find_qemu(qemu ? qemu : "qemu-system-x86_64", qemu_path,
						 sizeof(qemu_path));
	if (rc) {
		tlm_cli_err("%s not found: install it (Debian: apt-get install "
			    "qemu-system-x86) or pass --qemu", qemu ? qemu : "qemu-system-x86_64");
		return 1;
	}
	if (tlm_cli_get_psk(NULL, true, &psk))
		return 1;
	tlm_cli_relay_signals(&stop);

	/* Stock QEMU < 9.0 (Debian 12 ships 7.2) drops TCG guest writes during
	 * live migration when the RAM block is a multiple of 256 KiB (its fast
	 * dirty-bitmap sync never resets the TCG TLB's dirty state; fixed
	 * upstream in 03bfc2188f). 8 KiB less forces the page-by-page sync.
	 * The patched QEMU carries the fix (qemu-glue/qemu-7.2/0001). */
	snprintf(mem_s, sizeof(mem_s), "%ldK", mem * 1024 - (patched ? 0 : 8));
	snprintf(append, sizeof(append), "pattern=%s rate=%ld", pattern, rate);
	{
		const char *src_args[] = { "-accel", "tcg", "-m", mem_s, "-kernel", kernel,
					   "-append", append, NULL };
		const char *dst_args[] = { "-accel", "tcg", "-m", mem_s, "-kernel", kernel,
					   "-append", append, "-incoming", "defer", NULL };
		struct tlm_vmproc_opts vo = { .qemu = qemu_path, .args = src_args,
					      .keep_dir = keep };

		rc = tlm_vmproc_start(&vo, &src);
		if (rc) {
			tlm_cli_err("cannot start the source QEMU: %s", tlm_strerror(rc));
			goto out;
		}
		vo.args = dst_args;
		rc = tlm_vmproc_start(&vo, &dst);
		if (rc) {
			tlm_cli_err("cannot start the destination QEMU: %s", tlm_strerror(rc));
			goto out;
		}
	}
	inside = tlm_cli_pick_mode(tlm_vmproc_qmp(src), mode);
	if (inside < 0)
		goto out;
	if (inside) {
		if (!policy_name)
			policy_name = "tlm";
		if (tlm_policy_parse(policy_name) < 0) {
			tlm_cli_err("--policy %s is a relay policy; the QEMU runs the tlm engine: "
				    "tlm, stop-copy, precopy, frs or mp", policy_name);
			goto out;
		}
	} else if (policy_name) {
		policy = tlm_relay_policy_parse(policy_name);
		if (policy < 0) {
			tlm_cli_err("--policy %s needs QEMU with tlm's patch series (run "
				    "scripts/build-qemu.sh); with stock QEMU: one-pass, qemu or "
				    "auto-converge", policy_name);
			goto out;
		}
	}
	if (!json) {
		if (inside)
			printf("tlm demo: mode inside (QEMU runs the tlm engine), %s, guest %ld MiB, "
			       "pattern %s, rate %s, %ld CHK + %ld PS tcp lanes, policy %s\n",
			       qemu_path, mem, pattern, rate ? strchr(append, ' ') + 6 : "unlimited",
			       chk, ps, policy_name);
		else
			printf("tlm demo: mode relay (stock QEMU's multifd over tlm lanes), %s, "
			       "guest %ld MiB, pattern %s, rate %s, %ld tcp lanes, policy %s\n",
			       qemu_path, mem, pattern, rate ? strchr(append, ' ') + 6 : "unlimited",
			       lanes, tlm_relay_policy_name(policy));
	}
	if (!json)
		printf("source VM %d and destination VM %d started; waiting for the guest "
		       "to fill its memory...\n", (int)tlm_vmproc_pid(src), (int)tlm_vmproc_pid(dst));
	fflush(stdout);
	rc = wait_guest(src, &gs, running_pred, 0, 90000);
	if (rc) {
		tlm_cli_err("the guest did not start running on the source: %s",
			    rc == -ECHILD ? "QEMU exited" : rc == -EFAULT ? "guest fault" :
			    tlm_strerror(rc));
		goto out;
	}
	if (!json)
		printf("guest running: sweep %lld, %lld page writes so far, errors %lld\n",
		       gs.sweep, gs.writes, gs.errors);

	if (inside) {
		rc = psk_file(&psk, psk_dir, sizeof(psk_dir), psk_path, sizeof(psk_path));
		if (rc) {
			tlm_cli_err("cannot write a key file for QEMU: %s", strerror(-rc));
			goto out;
		}
		rc = run_inside(src, dst, psk_path, policy_name, (unsigned)chk, (unsigned)ps,
				json, &ir);
		res.completed = ir.completed;
		goto migrated;
	}
	job.o.qmp = tlm_vmproc_qmp(dst);
	job.o.addr = "127.0.0.1";
	job.o.port = "0";
	job.o.psk = &psk;
	job.o.multifd = (unsigned)lanes;
	job.o.accept_timeout_ms = 30000;
	job.o.timeout_ms = 300000;
	job.o.listening = job_port;
	job.o.listening_arg = &job;
	job.o.cancel = &stop;
	pthread_mutex_init(&job.mu, NULL);
	pthread_cond_init(&job.cv, NULL);
	if (pthread_create(&rt, NULL, recv_thread, &job)) {
		tlm_cli_err("cannot start the receiver thread");
		goto out;
	}
	recv_on = true;
	pthread_mutex_lock(&job.mu);
	while (!job.port)
		pthread_cond_wait(&job.cv, &job.mu);
	pthread_mutex_unlock(&job.mu);
	if (job.port < 0) {
		pthread_join(rt, NULL);
		recv_on = false;
		tlm_cli_err("receiver: %s", job.r.error);
		goto out;
	}
	snprintf(port_s, sizeof(port_s), "%d", job.port);

	so.qmp = tlm_vmproc_qmp(src);
	so.host = "127.0.0.1";
	so.port = port_s;
	so.psk = &psk;
	so.multifd = (unsigned)lanes;
	so.policy = policy;
	so.timeout_ms = 300000;
	so.progress = json ? NULL : tlm_cli_relay_progress;
	so.cancel = &stop;
	rc = tlm_relay_migrate(&so, &res);
	tlm_cli_relay_progress_end();
	pthread_join(rt, NULL);
	recv_on = false;
	if (!rc && job.rc)
		rc = job.rc;
migrated:
	tlm_qmp_query_status(tlm_vmproc_qmp(src), src_status, sizeof(src_status), NULL);

	if (!rc) {
		tlm_qmp_query_status(tlm_vmproc_qmp(dst), dst_status, sizeof(dst_status), NULL);
		if (!json)
			printf("migrated; letting the guest run %ld more sweep%s on the "
			       "destination...\n", sweeps, sweeps == 1 ? "" : "s");
		fflush(stdout);
		guest_rc = wait_guest(dst, &gd, sweeps_pred, sweeps, 90000);
		if (guest_rc)
			tlm_cli_err("destination guest: %s",
				    guest_rc == -ECHILD ? "QEMU exited" :
				    guest_rc == -EFAULT ? "guest fault" :
				    guest_rc == -ETIMEDOUT ? "no progress in 90 s" :
				    tlm_strerror(guest_rc));
	}
	{
		long long errors = rc ? gs.errors : gd.errors;
		bool ok = !rc && !guest_rc && errors == 0 && !gd.error_lines;

		if (json) {
			struct tlm_json j;

			tlm_json_begin(&j, stdout);
			if (inside) {
				tlm_cli_inside_report(stdout, &ir, "source", true, &j);
			} else {
				tlm_json_str(&j, "mode", "relay");
				tlm_cli_relay_report(stdout, &res, "tcp", policy, TLM_PROTECT_ENCRYPT,
						     true, &j);
			}
			tlm_json_i64(&j, "guest_errors", errors);
			tlm_json_i64(&j, "guest_sweeps_after", gd.statuses ? gd.sweep - gd.first_sweep : 0);
			tlm_json_i64(&j, "guest_vpasses", gd.vpasses);
			tlm_json_i64(&j, "guest_mem_mib", mem);
			tlm_json_str(&j, "guest_pattern", pattern);
			tlm_json_str(&j, "source_status", src_status);
			tlm_json_u64(&j, "demo_ms", tlm_cli_now_ms() - t_start);
			tlm_json_bool(&j, "ok", ok);
			tlm_json_finish(&j);
		} else {
			if (inside)
				tlm_cli_inside_report(stdout, &ir, "source", false, NULL);
			else
				tlm_cli_relay_report(stdout, &res, "tcp", policy, TLM_PROTECT_ENCRYPT,
						     false, NULL);
			printf("  source VM       %s\n", src_status[0] ? src_status : "?");
			if (!rc)
				printf("  guest           %lld sweeps on the destination, "
				       "verification errors: %lld%s\n",
				       gd.statuses ? gd.sweep - gd.first_sweep : 0, errors,
				       errors ? "  <-- pages lost or stale!" : " (every page intact)");
			printf("demo %s in %.1f s\n", ok ? "OK" : "FAILED",
			       (double)(tlm_cli_now_ms() - t_start) / 1000.0);
		}
		status = ok ? 0 : 1;
	}
out:
	if (recv_on) {
		stop = 1;
		pthread_join(rt, NULL);
	}
	tlm_vmproc_stop(dst, 3000, NULL);
	tlm_vmproc_stop(src, 3000, NULL);
	if (psk_path[0])
		unlink(psk_path);
	if (psk_dir[0])
		rmdir(psk_dir);
	memset(&psk, 0, sizeof(psk));
	return status;
}
