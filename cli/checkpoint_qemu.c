/* SPDX-License-Identifier: MIT */
/*
 * tlm checkpoint --qmp / tlm restore --qmp: live checkpointing of a VM
 * whose QEMU runs the tlm engine (qemu-glue/qemu-7.2/), with no change to
 * QEMU: a checkpoint is a migration to a destination that is a file.
 *
 *   checkpoint                               restore
 *   listen here (random key, 0600 file)      validate FILE whole (refuse
 *   QEMU: migrate uri=tlm:127.0.0.1:PORT      before the VM is touched)
 *   writer thread: tlm_ckpt_receive()        QEMU (-incoming defer):
 *   query-migrate every 5 ms until             migrate-incoming uri=tlm:...
 *     completed -> cont at once (the VM      connect; the file as a memory
 *     runs again; QEMU allows postmigrate      source, stop-copy (it never
 *     -> running)                              changes), device state with it
 *   the writer commits (fsync, rename)       wait until the VM runs
 *
 * The downtime is the span between QEMU's STOP and RESUME events, read
 * from their timestamps. If this process dies once the migration is asked
 * for, a guardian process (qemu-glue/guard.c) cancels it and resumes the
 * VM, a completed one too (the destination is a file: nothing else runs the
 * guest); otherwise a VM stopped by a finished checkpoint would stay
 * stopped until somebody sent cont.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "cli.h"
#include "guard.h"
#include "inside.h"
#include "qmp.h"
#include "tlm-internal.h"
#include "tlm/engine.h"

static volatile int interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

static void sleep_ms(long ms)
{
	nanosleep(&(struct timespec){ .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L }, NULL);
}

/* A random key in a private directory, for QEMU to read. */
static int make_key(char *dir, size_t dl, char *path, size_t pl, struct tlm_psk *psk)
{
	char hex[2 * TLM_PSK_MAX + 2];
	FILE *f;
	mode_t old;

	snprintf(dir, dl, "/tmp/tlm-ckpt-XXXXXX");
	if (!mkdtemp(dir))
		return -errno;
	snprintf(path, pl, "%s/psk", dir);
	if (tlm_psk_random(psk) || tlm_psk_to_hex(psk, hex, sizeof(hex)) < 0)
		return -EIO;
	old = umask(077);
	f = fopen(path, "w");
	umask(old);
	if (!f)
		return -errno;
	fprintf(f, "%s\n", hex);
	fclose(f);
	/* What QEMU reads must be what we hold. */
	return tlm_psk_load(path, psk);
}

static void drop_key(const char *dir, const char *path)
{
	if (path[0])
		unlink(path);
	if (dir[0])
		rmdir(dir);
}

/* Microseconds since the epoch of an event's timestamp. */
static int64_t event_us(struct json_object *ev)
{
	struct json_object *ts;

	if (!ev || !json_object_object_get_ex(ev, "timestamp", &ts))
		return -1;
	return tlm_qmp_get_i64(ts, "seconds") * 1000000 + tlm_qmp_get_i64(ts, "microseconds");
}

/* ---- the writer thread ---- */

struct writer {
	struct tlm_listener *li;
	const char *path;
	int timeout_ms;
	volatile int stop;
	int err;
	bool got_session;
	struct tlm_ckpt_stats st;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	uint64_t end = tlm_cli_now_ms() + (uint64_t)w->timeout_ms;
	struct tlm_session *s = NULL;

	w->err = -ETIMEDOUT;
	while (!w->stop && tlm_cli_now_ms() < end) {
		w->err = tlm_accept(w->li, 200, &s);
		if (w->err != -ETIMEDOUT)
			break;
	}
	if (w->err) {
		snprintf(w->st.why, sizeof(w->st.why), "no session from QEMU: %s",
			 tlm_strerror(w->err));
		return NULL;
	}
	w->got_session = true;
	w->err = tlm_ckpt_receive(s, w->path, &w->st);
	tlm_session_close(s);
	return NULL;
}

/* ---- tlm checkpoint --qmp ---- */

struct ck_opts {
	const char *qmp, *to, *to_host, *psk_path, *policy, *transport, *targs;
	unsigned chk, ps;
	uint64_t timeout_s;
	bool json;
};

struct ck_result {
	bool completed, resumed, was_running;
	int64_t downtime_ms, qemu_downtime_ms, total_ms, cont_after_ms;
	struct tlm_inside_stat ist;
	struct tlm_ckpt_stats st;
	char vm[32], error[400];
};

static void report_checkpoint(const struct ck_opts *o, const struct ck_result *r)
{
	if (o->json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "file", o->to ? o->to : "");
		tlm_json_str(&j, "to_host", o->to_host ? o->to_host : "");
		tlm_json_bool(&j, "completed", r->completed);
		if (r->error[0])
			tlm_json_str(&j, "error", r->error);
		tlm_json_str(&j, "policy", o->policy);
		tlm_json_str(&j, "vm", r->vm);
		tlm_json_bool(&j, "resumed", r->resumed);
		tlm_json_i64(&j, "downtime_ms", r->downtime_ms);
		tlm_json_i64(&j, "qemu_downtime_ms", r->qemu_downtime_ms);
		tlm_json_i64(&j, "cont_after_ms", r->cont_after_ms);
		tlm_json_i64(&j, "elapsed_ms", r->ist.mig.total_time_ms);
		tlm_json_i64(&j, "total_ms", r->total_ms);
		tlm_json_u64(&j, "chk_pages", r->ist.chk_pages);
		tlm_json_u64(&j, "ps_pages", r->ist.ps_pages);
		tlm_json_u64(&j, "zero_pages", r->ist.zero_pages);
		tlm_json_u64(&j, "epochs", r->ist.epochs);
		tlm_json_bool(&j, "incremental", r->st.incremental);
		tlm_json_u64(&j, "epoch", r->st.epoch);
		tlm_json_u64(&j, "file_bytes", r->st.file_bytes);
		tlm_json_u64(&j, "disk_bytes", r->st.disk_bytes);
		tlm_json_u64(&j, "pages_total", r->st.pages_total);
		tlm_json_u64(&j, "pages_written", r->st.pages_written);
		tlm_json_u64(&j, "pages_data", r->st.pages_data);
		tlm_json_u64(&j, "devstate_len", r->st.devstate_len);
		tlm_json_dbl(&j, "commit_ms", r->st.commit_ms);
		tlm_json_finish(&j);
		return;
	}
	if (!r->completed) {
		tlm_cli_err("checkpoint FAILED: %s (the VM is %s)", r->error, r->vm);
		return;
	}
	printf("checkpoint %s (epoch %llu, %s): VM %s\n", o->to ? o->to : o->to_host,
	       (unsigned long long)r->st.epoch, r->st.incremental ? "incremental" : "new file",
	       r->vm);
	printf("  downtime %lld ms (STOP to RESUME), total %lld ms, policy %s\n",
	       (long long)r->downtime_ms, (long long)r->total_ms, o->policy);
	printf("  %llu CHK + %llu PS pages sent (%llu zero); %llu of %llu pages written to the "
	       "file; %.1f MiB, %.1f MiB on disk; device state %llu bytes\n",
	       (unsigned long long)r->ist.chk_pages, (unsigned long long)r->ist.ps_pages,
	       (unsigned long long)r->ist.zero_pages, (unsigned long long)r->st.pages_written,
	       (unsigned long long)r->st.pages_total, (double)r->st.file_bytes / 1048576.0,
	       (double)r->st.disk_bytes / 1048576.0, (unsigned long long)r->st.devstate_len);
}

static int checkpoint_vm(const struct ck_opts *o, struct ck_result *r)
{
	struct tlm_inside_opts io = {
		.transport = o->transport, .transport_args = o->targs, .chk_lanes = o->chk,
		.ps_lanes = o->ps, .policy = o->policy,
	};
	struct writer w = { .path = o->to, .timeout_ms = (int)(o->timeout_s * 1000) };
	char dir[64] = "", keyp[PATH_MAX] = "", uri[1024], port[16], host[256], why[256];
	struct tlm_psk psk;
	struct tlm_qmp *q = NULL;
	struct json_object *ev = NULL;
	struct tlm_guardian guard = { .pid = -1, .wr = -1 };
	pthread_t t;
	bool thread = false;
	uint64_t t0 = tlm_cli_now_ms(), end = t0 + o->timeout_s * 1000, seen = 0;
	int64_t stop_us = -1, resume_us = -1;
	int err, running = 0;

	err = tlm_qmp_connect(o->qmp, 5000, &q);
	if (err) {
		snprintf(r->error, sizeof(r->error), "cannot talk to QEMU at %s: %s", o->qmp,
			 tlm_strerror(err));
		return err;
	}
	err = tlm_inside_detect(q);
	if (err != 1) {
		snprintf(r->error, sizeof(r->error), "the QEMU at %s does not run the tlm engine "
			 "(it needs tlm's patch series: scripts/build-qemu.sh)", o->qmp);
		err = err < 0 ? err : -EOPNOTSUPP;
		goto out;
	}
	(void)tlm_qmp_query_status(q, r->vm, sizeof(r->vm), &running);
	r->was_running = running;
	/* before any thread or lane: the guardian is a fork of this process */
	{
		struct tlm_guardian_cfg gc = {
			.qmp_path = o->qmp, .was_running = running, .resume_completed = true,
			.who = "checkpoint",
		};

		err = tlm_guardian_start(&guard, &gc);
		if (err) {
			snprintf(r->error, sizeof(r->error), "cannot start the guardian process: %s",
				 tlm_strerror(err));
			goto out;
		}
	}
	if (o->to_host) {
		if (tlm_cli_parse_hostport(o->to_host, host, sizeof(host), port, sizeof(port)) ||
		    !o->psk_path || !realpath(o->psk_path, keyp)) {
			snprintf(r->error, sizeof(r->error), "--to-host HOST:PORT needs --psk KEY (an "
				 "existing file, the one `tlm receive --to-file` has)");
			err = -EINVAL;
			goto out;
		}
		io.host = host;
	} else {
		struct tlm_session_cfg cfg = {
			.transport = o->transport, .transport_args = o->targs, .psk = &psk,
			.caps = TLM_CAP_ZERO_PAGE | TLM_CAP_XBZRLE | TLM_CAP_DEVSTATE,
			.timeout_ms = 20000,
		};

		err = make_key(dir, sizeof(dir), keyp, sizeof(keyp), &psk);
		if (!err)
			err = tlm_listen(&cfg, "127.0.0.1", "0", &w.li);
		if (err) {
			snprintf(r->error, sizeof(r->error), "cannot set up the file side: %s",
				 tlm_strerror(err));
			goto out;
		}
		snprintf(port, sizeof(port), "%d", tlm_listener_port(w.li));
		io.host = "127.0.0.1";
		if (pthread_create(&t, NULL, writer_thread, &w)) {
			err = -ENOMEM;
			goto out;
		}
		thread = true;
	}
	io.port = port;
	io.psk_path = keyp;
	err = tlm_inside_uri(&io, true, uri, sizeof(uri), why, sizeof(why));
	if (err) {
		snprintf(r->error, sizeof(r->error), "%s", why);
		goto out;
	}
	(void)tlm_qmp_drop_events(q);
	err = tlm_qmp_migrate(q, uri);
	if (err) {
		snprintf(r->error, sizeof(r->error), "QEMU refused the checkpoint: %s",
			 tlm_qmp_last_error(q));
		goto out;
	}
	/* Follow closely: the VM stays stopped from the engine's pause until
	 * our cont, so the poll interval adds to the downtime. */
	for (;;) {
		err = tlm_inside_query(q, &r->ist);
		if (err) {
			snprintf(r->error, sizeof(r->error), "query-migrate: %s", tlm_qmp_last_error(q));
			goto out;
		}
		if (!strcmp(r->ist.mig.status, "completed")) {
			seen = tlm_cli_now_ms();
			break;
		}
		if (!strcmp(r->ist.mig.status, "failed") || !strcmp(r->ist.mig.status, "cancelled")) {
			snprintf(r->error, sizeof(r->error), "the checkpoint %s: %s", r->ist.mig.status,
				 r->ist.mig.error_desc);
			err = -ECANCELED;
			goto out;
		}
		if (interrupted || !tlm__left_ms(end)) {
			(void)tlm_qmp_migrate_cancel(q);
			interrupted = 1;
		}
		sleep_ms(5);
	}
	if (r->was_running) {
		err = tlm_qmp_exec(q, "cont", NULL, NULL, TLM_QMP_TIMEOUT_MS);
		if (err) {
			snprintf(r->error, sizeof(r->error), "cont after the checkpoint: %s",
				 tlm_qmp_last_error(q));
			goto out;
		}
		r->resumed = true;
		r->cont_after_ms = (int64_t)(tlm_cli_now_ms() - seen);
	}
	/* QEMU fills in its figures a moment after "completed". */
	for (int i = 0; i < 50 && !r->ist.mig.total_time_ms; i++) {
		sleep_ms(20);
		(void)tlm_inside_query(q, &r->ist);
	}
	r->qemu_downtime_ms = r->ist.mig.downtime_ms;
	if (!tlm_qmp_wait_event(q, "STOP", 2000, &ev)) {
		stop_us = event_us(ev);
		json_object_put(ev);
	}
	if (r->resumed && !tlm_qmp_wait_event(q, "RESUME", 2000, &ev)) {
		resume_us = event_us(ev);
		json_object_put(ev);
	}
	r->downtime_ms = stop_us >= 0 && resume_us >= stop_us ? (resume_us - stop_us + 500) / 1000
							      : r->qemu_downtime_ms + r->cont_after_ms;
	if (thread) {
		pthread_join(t, NULL);
		thread = false;
		r->st = w.st;
		if (w.err) {
			err = w.err;
			snprintf(r->error, sizeof(r->error), "the file side: %s", w.st.why);
			goto out;
		}
	}
	r->completed = true;
	err = 0;
out:
	if (thread) {
		w.stop = 1;
		pthread_join(t, NULL);
		if (!r->error[0] && w.err)
			snprintf(r->error, sizeof(r->error), "the file side: %s", w.st.why);
	}
	if (w.li)
		tlm_listener_close(w.li);
	if (q) {
		(void)tlm_qmp_query_status(q, r->vm, sizeof(r->vm), NULL);
		tlm_qmp_close(q);
	}
	/* the VM is as it should be (running, if it ran), or QEMU's engine
	 * resumed it when the migration failed */
	tlm_guardian_done(&guard);
	drop_key(dir, o->to_host ? "" : keyp);
	r->total_ms = (int64_t)(tlm_cli_now_ms() - t0);
	return err;
}

int tlm_cli_checkpoint_qemu(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "to", required_argument, NULL, 'o' },
		{ "to-host", required_argument, NULL, 'H' },
		{ "psk", required_argument, NULL, 'k' },
		{ "policy", required_argument, NULL, 'p' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "ps-lanes", required_argument, NULL, 's' },
		{ "transport", required_argument, NULL, 't' },
		{ "transport-args", required_argument, NULL, 'A' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct ck_opts o = { .policy = "tlm", .transport = "tcp", .chk = 1, .ps = 1,
			     .timeout_s = 600 };
	struct ck_result r = { 0 };
	int opt, err;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		uint64_t v = 0;

		switch (opt) {
		case 'q': o.qmp = optarg; break;
		case 'o': o.to = optarg; break;
		case 'H': o.to_host = optarg; break;
		case 'k': o.psk_path = optarg; break;
		case 'p': o.policy = optarg; break;
		case 't': o.transport = optarg; break;
		case 'A': o.targs = optarg; break;
		case 'j': o.json = true; break;
		case 'c': case 's': case 'T':
			if (tlm_cli_parse_size(optarg, &v) || !v || v > 60000) {
				tlm_cli_err("bad value '%s'", optarg);
				return 2;
			}
			if (opt == 'c') o.chk = (unsigned)v;
			else if (opt == 's') o.ps = (unsigned)v;
			else o.timeout_s = v;
			break;
		default:
			tlm_cli_err("see tlm checkpoint --help");
			return 2;
		}
	}
	if (!o.qmp || !!o.to == !!o.to_host || optind < argc) {
		tlm_cli_err("tlm checkpoint needs --qmp PATH and one of --to FILE, --to-host HOST:PORT");
		return 2;
	}
	if (tlm_policy_parse(o.policy) < 0) {
		tlm_cli_err("unknown policy '%s' (tlm, stop-copy)", o.policy);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_sigint);
	err = checkpoint_vm(&o, &r);
	report_checkpoint(&o, &r);
	return err ? 1 : 0;
}

/* ---- tlm restore ---- */

static void usage_restore(FILE *f)
{
	fprintf(f,
"usage: tlm restore --qmp DST.qmp --from FILE [--chk-lanes N] [--json] [--timeout S]\n"
"\n"
"Brings a VM back from a checkpoint file into a QEMU started with\n"
"-incoming defer (built with tlm's patch series, the same machine type,\n"
"devices and memory as the VM checkpointed). FILE is validated whole first\n"
"(header, every page, device state); a damaged file is refused before the\n"
"VM is touched. The VM runs when it returns.\n");
}

int tlm_cli_restore(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "qmp", required_argument, NULL, 'q' },
		{ "from", required_argument, NULL, 'f' },
		{ "transport", required_argument, NULL, 't' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *qmp = NULL, *from = NULL, *transport = "tcp";
	uint64_t timeout_s = 300, t0, check_ms = 0, send_ms = 0, end, chk = 1;
	char why[256] = "", dir[64] = "", keyp[PATH_MAX] = "", uri[1024], port[16], vm[32] = "";
	char error[400] = "";
	struct tlm_migrate_stats st = { 0 };
	struct tlm_session *s = NULL;
	struct tlm_ckpt_r *r = NULL;
	struct tlm_qmp *q = NULL;
	struct tlm_psk psk;
	bool json = false, completed = false;
	int opt, err, running = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'q': qmp = optarg; break;
		case 'f': from = optarg; break;
		case 't': transport = optarg; break;
		case 'j': json = true; break;
		case 'h': usage_restore(stdout); return 0;
		case 'c':
			if (tlm_cli_parse_size(optarg, &chk) || !chk || chk >= TLM_MAX_LANES - 1) {
				tlm_cli_err("bad --chk-lanes '%s'", optarg);
				return 2;
			}
			break;
		case 'T':
			if (tlm_cli_parse_size(optarg, &timeout_s) || !timeout_s) {
				tlm_cli_err("bad --timeout '%s'", optarg);
				return 2;
			}
			break;
		default: usage_restore(stderr); return 2;
		}
	}
	if (!qmp || !from || optind < argc) {
		usage_restore(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_sigint);
	t0 = tlm_cli_now_ms();
	/* The whole file is checked before QEMU hears of it. */
	err = tlm_ckpt_open(from, &r, why, sizeof(why));
	check_ms = tlm_cli_now_ms() - t0;
	if (err) {
		snprintf(error, sizeof(error), "%s: refused: %s", from, why);
		goto out;
	}
	err = tlm_qmp_connect(qmp, 5000, &q);
	if (err) {
		snprintf(error, sizeof(error), "cannot talk to QEMU at %s: %s", qmp, tlm_strerror(err));
		goto out;
	}
	if (tlm_inside_detect(q) != 1) {
		snprintf(error, sizeof(error), "the QEMU at %s does not run the tlm engine", qmp);
		err = -EOPNOTSUPP;
		goto out;
	}
	(void)tlm_qmp_query_status(q, vm, sizeof(vm), NULL);
	if (strcmp(vm, "inmigrate")) {
		snprintf(error, sizeof(error), "the VM is %s; restore needs a QEMU started with "
			 "-incoming defer", vm);
		err = -EINVAL;
		goto out;
	}
	err = make_key(dir, sizeof(dir), keyp, sizeof(keyp), &psk);
	if (err) {
		snprintf(error, sizeof(error), "cannot make a key: %s", tlm_strerror(err));
		goto out;
	}
	{
		const struct tlm_ckpt_info *in = tlm_ckpt_r_info(r);
		struct tlm_inside_opts io = { .host = "127.0.0.1", .port = port,
					      .transport = transport, .psk_path = keyp };
		struct tlm_session_cfg cfg = {
			.transport = transport, .n_lanes = (unsigned)chk + 1,
			.page_size = in->lay.page_size,
			.n_regions = in->lay.n, .caps = TLM_CAP_ZERO_PAGE | TLM_CAP_DEVSTATE,
			.psk = &psk, .timeout_ms = 20000,
		};
		struct tlm_migrate_opts mo = {
			.policy = TLM_POLICY_STOPCOPY, .chk_lanes = (unsigned)chk, .ps_lanes = 1,
			.epoch_ms = 100,
			.zero_pages = true, .timeout_ms = (int)(timeout_s * 1000),
			.abort_flag = &interrupted,
		};
		uint64_t t1;

		for (unsigned i = 1; i <= cfg.n_lanes; i++)
			cfg.lane_modes[i] = TLM_MODE_PAGES;
		for (unsigned i = 0; i < in->lay.n; i++) {
			cfg.region_len[i] = in->lay.len[i];
			cfg.region_name[i] = in->lay.name[i];
		}
		/* A port nobody uses now, for QEMU to listen on. */
		{
			struct tlm_session_cfg lc = { .transport = "tcp", .psk = &psk };
			struct tlm_listener *li;

			err = tlm_listen(&lc, "127.0.0.1", "0", &li);
			if (err) {
				snprintf(error, sizeof(error), "no free port: %s", tlm_strerror(err));
				goto out;
			}
			snprintf(port, sizeof(port), "%d", tlm_listener_port(li));
			tlm_listener_close(li);
		}
		err = tlm_inside_uri(&io, false, uri, sizeof(uri), why, sizeof(why));
		if (!err)
			err = tlm_qmp_migrate_incoming(q, uri);
		if (err) {
			snprintf(error, sizeof(error), "QEMU refused migrate-incoming: %s",
				 why[0] ? why : tlm_qmp_last_error(q));
			goto out;
		}
		t1 = tlm_cli_now_ms();
		end = t1 + 10000;
		do {
			err = tlm_connect(&cfg, "127.0.0.1", port, &s);
			if (err == -ECONNREFUSED)
				sleep_ms(50);
		} while (err == -ECONNREFUSED && tlm__left_ms(end));
		if (err) {
			snprintf(error, sizeof(error), "cannot connect to QEMU's tlm listener: %s",
				 tlm_strerror(err));
			goto out;
		}
		err = tlm_migrate_source(s, tlm_ckpt_memsrc(r), &mo, &st);
		send_ms = tlm_cli_now_ms() - t1;
		if (err) {
			snprintf(error, sizeof(error), "sending the checkpoint failed: %s", st.why);
			goto out;
		}
	}
	end = tlm_cli_now_ms() + 30000;
	do {
		err = tlm_qmp_query_status(q, vm, sizeof(vm), &running);
		if (err || running)
			break;
		sleep_ms(20);
	} while (tlm__left_ms(end));
	if (!running) {
		struct tlm_qmp_migstat ms;

		(void)tlm_qmp_query_migrate(q, &ms);
		snprintf(error, sizeof(error), "the VM is %s after the restore%s%s", vm,
			 ms.error_desc[0] ? ": " : "", ms.error_desc);
		err = -EIO;
		goto out;
	}
	completed = true;
out:
	if (s)
		tlm_session_close(s);
	if (q)
		tlm_qmp_close(q);
	drop_key(dir, keyp);
	if (json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "file", from);
		tlm_json_bool(&j, "completed", completed);
		if (error[0])
			tlm_json_str(&j, "error", error);
		tlm_json_str(&j, "vm", vm);
		tlm_json_u64(&j, "check_ms", check_ms);
		tlm_json_u64(&j, "send_ms", send_ms);
		tlm_json_u64(&j, "total_ms", tlm_cli_now_ms() - t0);
		tlm_json_u64(&j, "epoch", r ? tlm_ckpt_r_info(r)->epoch : 0);
		tlm_json_u64(&j, "file_bytes", r ? tlm_ckpt_r_info(r)->file_bytes : 0);
		tlm_json_u64(&j, "pages_chk", st.pages_chk);
		tlm_json_u64(&j, "pages_zero", st.pages_zero);
		tlm_json_u64(&j, "bytes_chk", st.bytes_chk);
		tlm_json_finish(&j);
	} else if (completed) {
		printf("restored %s into the VM at %s in %llu ms (check %llu ms, send %llu ms): VM %s\n",
		       from, qmp, (unsigned long long)(tlm_cli_now_ms() - t0),
		       (unsigned long long)check_ms, (unsigned long long)send_ms, vm);
	}
	if (!completed)
		tlm_cli_err("%s", error);
	tlm_migrate_stats_free(&st);
	tlm_ckpt_close(r);
	return completed ? 0 : 1;
}
