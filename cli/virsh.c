/* SPDX-License-Identifier: MIT */
/*
 * `tlm virsh-migrate DOM DESTURI`: libvirt's own live migration of a
 * domain it manages, carried over tlm lanes. libvirt stays in charge (it
 * starts the destination QEMU, turns on multifd and pause-before-switchover,
 * sends migrate-continue, rolls back on failure); tlm only carries the
 * bytes: libvirt is told to migrate to unix://DIR/NAME, where this process
 * runs `tlm relay-out` (qemu-glue/relay-passive.c), and the destination
 * host's `tlm relay-in --unix-dir DIR` service connects the lanes to the
 * destination QEMU's socket of the same name. docs/libvirt.md.
 *
 * Policy one-pass raises the domain's maximum downtime once QEMU's first
 * pass over memory is done (virDomainMigrateSetMaxDowntime), so the next
 * check switches over: no QMP passthrough, which would taint the domain.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "cli.h"
#include "relay.h"

#define RELAY_IN_PORT "7411"          /* the relay-in service's default port */
#define MAX_DOWNTIME_MS 2000000ull     /* QEMU 7.2's MAX_MIGRATE_DOWNTIME */
#define ROLLBACK_GRACE_MS 20000

enum vpolicy { VPOLICY_QEMU, VPOLICY_ONE_PASS };

struct vmig {
	/* the relay-out thread */
	struct tlm_relay_out_opts o;
	struct tlm_relay_result rr;
	int rrc;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool ready, ended;
	volatile sig_atomic_t relay_stop;
	/* the watcher thread: progress, policy, interrupts */
	virDomainPtr dom;
	enum vpolicy policy;
	pthread_t wth;
	volatile bool watch_stop;
	volatile sig_atomic_t *sig;
	bool forced, aborted;
	unsigned long long forced_after_ms;
	bool progress_shown;
	/* the migration call (libvirt's errors are per thread: copied) */
	const char *desturi;
	virTypedParameterPtr params;
	int nparams;
	pthread_t mth;
	bool mig_done;
	int mig_rc;
	char mig_err[512];
};

static void *migrate_thread(void *arg)
{
	struct vmig *m = arg;
	int rc = virDomainMigrateToURI3(m->dom, m->desturi, m->params, (unsigned)m->nparams,
					VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER |
					VIR_MIGRATE_PARALLEL);
	const virError *e = rc < 0 ? virGetLastError() : NULL;

	pthread_mutex_lock(&m->mu);
	m->mig_rc = rc;
	snprintf(m->mig_err, sizeof(m->mig_err), "%s",
		 e && e->message ? e->message : rc < 0 ? "unknown libvirt error" : "");
	m->mig_done = true;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* The source domain runs with no migration job: libvirt has rolled back. */
static bool rolled_back(virDomainPtr dom)
{
	virDomainJobInfo ji;
	int st, reason;

	return virDomainGetState(dom, &st, &reason, 0) == 0 && st == VIR_DOMAIN_RUNNING &&
	       virDomainGetJobInfo(dom, &ji) == 0 && ji.type != VIR_DOMAIN_JOB_UNBOUNDED &&
	       ji.type != VIR_DOMAIN_JOB_BOUNDED;
}

/* Until libvirt's call returns: 0. Or 1 once the relay failed, libvirt
 * has rolled the source back and the call still has not returned after
 * a grace period: the destination's libvirt waits on its QEMU, which
 * QEMU 7.2 can leave hung in multifd_recv_sync_main when its multifd
 * channels fail mid-stream; the source is safe, nothing more to wait
 * for here. */
static int wait_migration(struct vmig *m)
{
	uint64_t grace_end = 0;

	pthread_mutex_lock(&m->mu);
	while (!m->mig_done) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&m->cv, &m->mu, &ts);
		if (m->mig_done || !m->ended || !m->rrc)
			continue;
		pthread_mutex_unlock(&m->mu);
		if (!rolled_back(m->dom))
			grace_end = 0;
		else if (!grace_end)
			grace_end = tlm_cli_now_ms() + ROLLBACK_GRACE_MS;
		pthread_mutex_lock(&m->mu);
		if (grace_end && tlm_cli_now_ms() >= grace_end && !m->mig_done) {
			pthread_mutex_unlock(&m->mu);
			return 1;
		}
	}
	pthread_mutex_unlock(&m->mu);
	return 0;
}

static void relay_ready(const char *path, void *arg)
{
	struct vmig *m = arg;

	(void)path;
	pthread_mutex_lock(&m->mu);
	m->ready = true;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

static void *relay_thread(void *arg)
{
	struct vmig *m = arg;

	m->rrc = tlm_relay_out(&m->o, &m->rr);
	pthread_mutex_lock(&m->mu);
	m->ended = true;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* libvirt's errors are reported where they matter (verr), not printed by
 * libvirt itself (the watcher's polls fail harmlessly once the domain has
 * left this host). */
static void quiet_libvirt(void *arg, virErrorPtr e)
{
	(void)arg;
	(void)e;
}

static const char *verr(void)
{
	const virError *e = virGetLastError();

	return e && e->message ? e->message : "unknown libvirt error";
}

static unsigned long long param_ull(virTypedParameterPtr p, int n, const char *name)
{
	unsigned long long v = 0;

	virTypedParamsGetULLong(p, n, name, &v);
	return v;
}

/* Every 500 ms: the job's progress on a terminal, the one-pass policy,
 * and an interrupt turned into virDomainAbortJob (libvirt rolls back). */
static void *watch_thread(void *arg)
{
	struct vmig *m = arg;

	while (!m->watch_stop) {
		virTypedParameterPtr p = NULL;
		int n = 0, type;

		usleep(200000);
		if (m->sig && *m->sig && !m->aborted) {
			m->aborted = true;
			if (virDomainAbortJob(m->dom) < 0)
				tlm_cli_err("virDomainAbortJob: %s", verr());
		}
		if (virDomainGetJobStats(m->dom, &type, &p, &n, 0) < 0 ||
		    type != VIR_DOMAIN_JOB_UNBOUNDED) {
			virTypedParamsFree(p, n);
			continue;
		}
		if (m->policy == VPOLICY_ONE_PASS && !m->forced &&
		    param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_ITERATION) >= 2) {
			if (virDomainMigrateSetMaxDowntime(m->dom, MAX_DOWNTIME_MS, 0) < 0) {
				/* not worth a word once the job has ended */
				if (virDomainIsActive(m->dom) == 1)
					tlm_cli_err("virDomainMigrateSetMaxDowntime: %s", verr());
			} else {
				m->forced = true;
				m->forced_after_ms = param_ull(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
			}
		}
		if (isatty(STDERR_FILENO)) {
			unsigned long long total = param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_TOTAL);
			unsigned long long rem = param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_REMAINING);

			fprintf(stderr, "\r\033[K%-8s %5.1f%%  sent %8.1f MiB  left %7.1f MiB  "
				"%7.1f MiB/s  pass %llu",
				m->forced ? "one-pass" : "migrating",
				total ? 100.0 * (double)(total - (rem < total ? rem : total)) /
					(double)total : 0.0,
				(double)param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED) / 1048576.0,
				(double)rem / 1048576.0,
				(double)param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_BPS) / 1048576.0,
				param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_ITERATION));
			fflush(stderr);
			m->progress_shown = true;
		}
		virTypedParamsFree(p, n);
	}
	if (m->progress_shown)
		fputc('\n', stderr);
	return NULL;
}

/* The host part of a libvirt URI (qemu+tcp://[user@]HOST[:port]/system). */
static int uri_host(const char *uri, char *host, size_t len)
{
	const char *p = strstr(uri, "://"), *e;

	if (!p)
		return -EINVAL;
	p += 3;
	e = strchr(p, '@');
	if (e && (!strchr(p, '/') || e < strchr(p, '/')))
		p = e + 1;
	if (*p == '[') {
		e = strchr(++p, ']');
	} else {
		e = p + strcspn(p, ":/?");
	}
	if (!e || e == p || (size_t)(e - p) >= len)
		return -EINVAL;
	memcpy(host, p, (size_t)(e - p));
	host[e - p] = '\0';
	return 0;
}

/* The destination's record of the finished job (time, downtime). */
static void dest_stats(const char *desturi, const char *name, struct tlm_json *j, bool json,
		       char *state, size_t slen)
{
	virConnectPtr c = virConnectOpen(desturi);
	virTypedParameterPtr p = NULL;
	virDomainPtr d;
	int n = 0, type, st, reason;

	snprintf(state, slen, "?");
	if (!c)
		return;
	d = virDomainLookupByName(c, name);
	if (d && virDomainGetState(d, &st, &reason, 0) == 0)
		snprintf(state, slen, "%s", st == VIR_DOMAIN_RUNNING ? "running" :
			 st == VIR_DOMAIN_PAUSED ? "paused" : "not running");
	if (d && virDomainGetJobStats(d, &type, &p, &n, VIR_DOMAIN_JOB_STATS_COMPLETED |
				      VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED) == 0) {
		unsigned long long t = param_ull(p, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
		unsigned long long dt = param_ull(p, n, VIR_DOMAIN_JOB_DOWNTIME);
		unsigned long long ram = param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED);
		unsigned long long it = param_ull(p, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);

		if (json) {
			tlm_json_u64(j, "total_ms", t);
			tlm_json_u64(j, "downtime_ms", dt);
			tlm_json_u64(j, "ram_transferred", ram);
			tlm_json_u64(j, "memory_iterations", it);
		} else {
			printf("  job time        %llu ms (libvirt, destination)\n", t);
			printf("  downtime        %llu ms\n", dt);
			printf("  RAM             %.1f MiB transferred, %llu passes\n",
			       (double)ram / 1048576.0, it);
		}
	}
	virTypedParamsFree(p, n);
	if (d)
		virDomainFree(d);
	virConnectClose(c);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm virsh-migrate DOMAIN DESTURI --psk FILE [--to HOST:PORT]\n"
"                         [--lanes N] [--policy qemu|one-pass] [--connect URI]\n"
"                         [--unix-dir DIR] [--transport tcp] [--timeout SEC]\n"
"                         [--protect encrypt|integrity|none] [--json]\n"
"                         [--peer-timeout SEC]\n"
"\n"
"Live-migrates the running libvirt domain DOMAIN to the libvirt at DESTURI\n"
"(e.g. qemu+tcp://dst/system) with libvirt's own migration (live, peer to\n"
"peer, parallel), its bytes carried over tlm lanes: the source QEMU's main\n"
"channel and each of its N multifd channels on a lane of its own to the\n"
"`tlm relay-in --unix-dir DIR` service on the destination host, which hands\n"
"them to the destination QEMU. libvirt rolls back on any failure; the domain\n"
"keeps running here. docs/libvirt.md sets up both hosts.\n"
"\n"
"  --psk FILE         pre-shared key (the relay-in service's; required)\n"
"  --protect MODE     encrypt (default), integrity or none: the relay-in\n"
"                     service's --protect (docs/security.md)\n"
"  --to HOST:PORT     the relay-in service (default: DESTURI's host, port "
RELAY_IN_PORT ")\n"
"  --lanes N          multifd channels (libvirt's parallel connections;\n"
"                     default 2)\n"
"  --policy P         qemu (QEMU's precopy; default) or one-pass (switch over\n"
"                     after the first full pass: bounded time, more downtime)\n"
"  --connect URI      the source libvirt (default: libvirt's default URI)\n"
"  --unix-dir DIR     where the migration sockets live on both hosts (default\n"
"                     /run/tlm; the relay-in service's --unix-dir)\n"
"  --transport NAME   lane transport (default tcp)\n"
TLM_CLI_TARGS_HELP
"  --timeout SEC      give up (libvirt rolls back) after SEC s (default 600)\n"
TLM_CLI_PEER_TIMEOUT_HELP("")
"  --json             print the report as one JSON object\n");
}

int tlm_cli_virsh_migrate(int argc, char **argv)
{
	static const struct option lopts[] = {
		TLM_CLI_RELAY_OPTIONS,
		{ "to", required_argument, NULL, 't' },
		{ "policy", required_argument, NULL, 'p' },
		{ "connect", required_argument, NULL, 'c' },
		{ "unix-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static volatile sig_atomic_t sig;
	const char *to = NULL, *conn_uri = NULL, *dir = "/run/tlm", *domname, *desturi;
	struct tlm_cli_relay ro = { .transport = "tcp", .multifd = 2, .timeout = 600,
				    .protect = TLM_PROTECT_ENCRYPT,
				    .psk_whose = "the relay-in service's key" };
	char host[256], port[32] = RELAY_IN_PORT, path[108], name[96], mig[128];
	char dst_state[32];
	struct vmig m = { .policy = VPOLICY_QEMU, .sig = &sig };
	virTypedParameterPtr params = NULL;
	int nparams = 0, maxparams = 0, c, rv = 1, mrc = -1;
	virConnectPtr conn = NULL;
	struct tlm_psk psk;
	bool abandoned = false;
	uint64_t t0, wall;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		int t = tlm_cli_relay_opt(&ro, c);

		if (t < 0)
			return 2;
		if (t > 0)
			continue;
		switch (c) {
		case 't': to = optarg; break;
		case 'c': conn_uri = optarg; break;
		case 'd': dir = optarg; break;
		case 'p':
			if (!strcmp(optarg, "qemu")) {
				m.policy = VPOLICY_QEMU;
			} else if (!strcmp(optarg, "one-pass")) {
				m.policy = VPOLICY_ONE_PASS;
			} else {
				tlm_cli_err("--policy: qemu or one-pass, not '%s'", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 2) {
		tlm_cli_err("give the domain and the destination's libvirt URI");
		usage(stderr);
		return 2;
	}
	domname = argv[optind];
	desturi = argv[optind + 1];
	if (to ? tlm_cli_parse_hostport(to, host, sizeof(host), port, sizeof(port)) :
		 uri_host(desturi, host, sizeof(host))) {
		tlm_cli_err(to ? "--to: HOST:PORT, not '%s'" :
			    "cannot find the host in '%s': give --to HOST:PORT", to ? to : desturi);
		return 2;
	}
	if (tlm_cli_relay_check(&ro, &psk))
		return 2;
	snprintf(name, sizeof(name), "tlm-%.40s-%d.sock", domname, (int)getpid());
	for (char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
			*p = '_';
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
		tlm_cli_err("--unix-dir %s: too long for a unix socket path", dir);
		goto out_psk;
	}
	virSetErrorFunc(NULL, quiet_libvirt);
	conn = virConnectOpen(conn_uri);
	if (!conn) {
		tlm_cli_err("cannot connect to libvirt%s%s: %s", conn_uri ? " at " : "",
			    conn_uri ? conn_uri : "", verr());
		goto out_psk;
	}
	m.dom = virDomainLookupByName(conn, domname);
	if (!m.dom) {
		tlm_cli_err("no domain '%s': %s", domname, verr());
		goto out_conn;
	}
	if (virDomainIsActive(m.dom) != 1) {
		tlm_cli_err("domain '%s' is not running", domname);
		goto out_dom;
	}

	pthread_mutex_init(&m.mu, NULL);
	pthread_cond_init(&m.cv, NULL);
	m.o = (struct tlm_relay_out_opts){
		.unix_path = path, .name = name, .socket_gid = -1, .transport = ro.transport,
		.transport_args = ro.targs, .host = host, .port = port, .psk = &psk,
		.protect = ro.protect, .multifd = (unsigned)ro.multifd,
		.accept_timeout_ms = (int)ro.timeout * 1000, .timeout_ms = (int)ro.timeout * 1000,
		.peer_timeout_ms = (int)ro.peer_timeout * 1000,
		.ready = relay_ready, .ready_arg = &m,
		.cancel = &m.relay_stop,
	};
	tlm_cli_relay_signals(&sig);
	t0 = tlm_cli_now_ms();
	if (pthread_create(&m.th, NULL, relay_thread, &m)) {
		tlm_cli_err("no thread for the relay");
		goto out_dom;
	}
	pthread_mutex_lock(&m.mu);
	while (!m.ready && !m.ended)
		pthread_cond_wait(&m.cv, &m.mu);
	pthread_mutex_unlock(&m.mu);
	if (m.ended)
		goto report;   /* relay-in unreachable, refused the key, ... */

	snprintf(mig, sizeof(mig), "unix://%s", path);
	if (virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_URI, mig) < 0 ||
	    virTypedParamsAddInt(&params, &nparams, &maxparams,
				 VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS, (int)ro.multifd) < 0) {
		tlm_cli_err("migration parameters: %s", verr());
		m.relay_stop = 1;
		goto join;
	}
	if (pthread_create(&m.wth, NULL, watch_thread, &m)) {
		tlm_cli_err("no thread for the progress display");
		m.relay_stop = 1;
		goto join;
	}
	m.desturi = desturi;
	m.params = params;
	m.nparams = nparams;
	if (pthread_create(&m.mth, NULL, migrate_thread, &m)) {
		tlm_cli_err("no thread for the migration call");
		m.watch_stop = true;
		pthread_join(m.wth, NULL);
		m.relay_stop = 1;
		goto join;
	}
	abandoned = wait_migration(&m);
	m.watch_stop = true;
	pthread_join(m.wth, NULL);
	if (abandoned) {
		mrc = -1;
		snprintf(m.mig_err, sizeof(m.mig_err), "the relay failed (%s); libvirt rolled the "
			 "domain back here, but the destination's libvirt has not answered for "
			 "%d s (its QEMU may be stuck: check the destination host)",
			 m.rr.error, ROLLBACK_GRACE_MS / 1000);
	} else {
		pthread_join(m.mth, NULL);
		mrc = m.mig_rc;
	}
	if (mrc < 0) {
		tlm_cli_err("libvirt: %s", m.mig_err);
		m.relay_stop = 1;   /* nothing more will come; the relay's channels close */
	}
join:
report:
	pthread_join(m.th, NULL);
	wall = tlm_cli_now_ms() - t0;
	rv = mrc == 0 && m.rrc == 0 ? 0 : 1;
	if (ro.json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_bool(&j, "completed", mrc == 0);
		tlm_json_str(&j, "domain", domname);
		if (mrc < 0 && m.ready)
			tlm_json_str(&j, "error", m.mig_err);
		else if (m.rr.error[0])
			tlm_json_str(&j, "error", m.rr.error);
		tlm_json_bool(&j, "relay_ok", m.rrc == 0);
		tlm_json_i64(&j, "wall_ms", (int64_t)wall);
		if (mrc == 0) {
			dest_stats(desturi, domname, &j, true, dst_state, sizeof(dst_state));
			tlm_json_str(&j, "destination", dst_state);
		}
		tlm_json_str(&j, "policy", m.policy == VPOLICY_ONE_PASS ? "one-pass" : "qemu");
		tlm_json_bool(&j, "forced_switchover", m.forced);
		tlm_json_str(&j, "transport", ro.transport);
		tlm_json_str(&j, "protect", tlm_protect_name(ro.protect));
		tlm_cli_json_lanes(&j, &m.rr);
		tlm_json_finish(&j);
	} else {
		printf("migration of %s %s", domname, mrc == 0 ? "completed" : "FAILED");
		if (mrc < 0 && m.ready)
			printf(": %s", m.mig_err);
		else if (m.rr.error[0])
			printf(": %s", m.rr.error);
		printf("\n  policy %s%s, transport %s, protect %s, %ld multifd lanes + main + "
		       "control\n", m.policy == VPOLICY_ONE_PASS ? "one-pass" : "qemu",
		       m.forced ? " (switched over after the first pass)" : "", ro.transport,
		       tlm_protect_name(ro.protect), ro.multifd);
		if (mrc == 0) {
			dest_stats(desturi, domname, NULL, false, dst_state, sizeof(dst_state));
			printf("  destination     %s\n", dst_state);
		} else {
			int st, reason;

			if (virDomainGetState(m.dom, &st, &reason, 0) == 0)
				printf("  domain here     %s\n", st == VIR_DOMAIN_RUNNING ?
				       "running (libvirt rolled back)" : "NOT running");
		}
		printf("  relayed         %.1f MiB in %llu ms%s%s\n", (double)m.rr.bytes / 1048576.0,
		       (unsigned long long)wall, m.rrc ? ", relay: " : "",
		       m.rrc ? m.rr.error : "");
	}
	if (abandoned)
		return rv;  /* libvirt's call still holds the domain and the connection */
	virTypedParamsFree(params, nparams);
	pthread_mutex_destroy(&m.mu);
	pthread_cond_destroy(&m.cv);
out_dom:
	virDomainFree(m.dom);
out_conn:
	virConnectClose(conn);
out_psk:
	memset(&psk, 0, sizeof(psk));
	return rv;
}
