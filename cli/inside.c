/* SPDX-License-Identifier: MIT */
/*
 * `tlm migrate` / `tlm receive` in mode `inside`: the QEMUs run the tlm
 * engine themselves (qemu-glue/inside.c drives them through QMP); this
 * file shows progress and prints the report. Mode `relay` is migrate.c /
 * receive.c with qemu-glue/relay.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "inside.h"

static bool shown;

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* A live line on a terminal; nothing otherwise. */
void tlm_cli_inside_progress(const struct tlm_inside_stat *st, void *arg)
{
	(void)arg;
	if (!isatty(STDERR_FILENO))
		return;
	fprintf(stderr, "\r\033[K%-10s CHK %8.1f MiB  PS %8.1f MiB  epochs %-5llu"
		"  zero %llu pg  %6.1f s", st->mig.status[0] ? st->mig.status : "starting",
		mib(st->chk_bytes), mib(st->ps_bytes), (unsigned long long)st->epochs,
		(unsigned long long)st->zero_pages, (double)st->mig.total_time_ms / 1000.0);
	fflush(stderr);
	shown = true;
}

void tlm_cli_inside_progress_end(void)
{
	if (shown)
		fputc('\n', stderr);
	shown = false;
}

void tlm_cli_inside_report(FILE *f, const struct tlm_inside_result *r, const char *side,
			   bool json, struct tlm_json *j)
{
	const struct tlm_inside_stat *s = &r->st;

	if (json) {
		tlm_json_str(j, "mode", "inside");
		tlm_json_str(j, "side", side);
		tlm_json_bool(j, "completed", r->completed);
		tlm_json_str(j, "status", s->mig.status);
		if (r->error[0])
			tlm_json_str(j, "error", r->error);
		tlm_json_str(j, "vm", r->vm_status);
		tlm_json_i64(j, "wall_ms", (int64_t)r->wall_ms);
		tlm_json_bool(j, "engine_figures", s->has_tlm);
		tlm_json_i64(j, "total_ms", s->mig.total_time_ms);
		tlm_json_i64(j, "downtime_ms", s->mig.downtime_ms);
		tlm_json_i64(j, "engine_downtime_ms", s->engine_downtime_ms);
		tlm_json_i64(j, "setup_ms", s->mig.setup_time_ms);
		tlm_json_str(j, "transport", s->transport);
		tlm_json_str(j, "policy", s->policy);
		tlm_json_u64(j, "chk_lanes", s->chk_lanes);
		tlm_json_u64(j, "ps_lanes", s->ps_lanes);
		tlm_json_u64(j, "epochs", s->epochs);
		tlm_json_obj(j, "chk");
		tlm_json_u64(j, "pages", s->chk_pages);
		tlm_json_u64(j, "bytes", s->chk_bytes);
		tlm_json_end_obj(j);
		tlm_json_obj(j, "ps");
		tlm_json_u64(j, "pages", s->ps_pages);
		tlm_json_u64(j, "bytes", s->ps_bytes);
		tlm_json_end_obj(j);
		tlm_json_u64(j, "zero_pages", s->zero_pages);
		tlm_json_bool(j, "zero_copy", s->zero_copy);
		tlm_json_u64(j, "ram_total", s->mig.ram_total);
		tlm_json_arr(j, "lane_bytes");
		for (unsigned i = 0; i < s->n_lanes; i++)
			tlm_json_u64(j, NULL, s->lane_bytes[i]);
		tlm_json_end_arr(j);
		return;
	}
	fprintf(f, "migration %s", r->completed ? "completed" : "FAILED");
	if (r->error[0])
		fprintf(f, ": %s", r->error);
	fprintf(f, "\n  mode inside (QEMU runs the tlm engine), %s side, VM %s\n", side,
		r->vm_status[0] ? r->vm_status : "?");
	if (!s->has_tlm)
		return;
	fprintf(f, "  policy %s, transport %s, %u CHK + %u PS lanes%s\n", s->policy,
		s->transport, s->chk_lanes, s->ps_lanes, s->zero_copy ? ", zero copy" : "");
	fprintf(f, "  total time      %lld ms (setup %lld ms)\n",
		(long long)s->mig.total_time_ms, (long long)s->mig.setup_time_ms);
	fprintf(f, "  downtime        %lld ms (QEMU, source-side; engine %lld ms)\n",
		(long long)s->mig.downtime_ms, (long long)s->engine_downtime_ms);
	fprintf(f, "  CHK stream      %llu pages, %.1f MiB\n", (unsigned long long)s->chk_pages,
		mib(s->chk_bytes));
	fprintf(f, "  PS stream       %llu pages, %.1f MiB over %llu epochs\n",
		(unsigned long long)s->ps_pages, mib(s->ps_bytes),
		(unsigned long long)s->epochs);
	fprintf(f, "  zero pages      %llu (no data sent)\n", (unsigned long long)s->zero_pages);
	for (unsigned i = 0; i < s->n_lanes; i++)
		fprintf(f, "    lane %-2u %-4s %10.1f MiB\n", i + 1, i < s->chk_lanes ? "CHK" : "PS",
			mib(s->lane_bytes[i]));
}

/* The key file's absolute path: QEMU reads it, from its own directory. */
static int abs_psk(const char *path, char *out)
{
	if (!path) {
		tlm_cli_err("--psk FILE is required (QEMU reads the key itself)");
		return -EINVAL;
	}
	if (!realpath(path, out)) {
		tlm_cli_err("--psk %s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int tlm_cli_inside_run(const struct tlm_cli_inside *c)
{
	struct tlm_inside_opts o = {
		.qmp = c->qmp, .host = c->host, .port = c->port, .transport = c->transport,
		.transport_args = c->transport_args, .chk_lanes = c->chk_lanes,
		.ps_lanes = c->ps_lanes, .policy = c->policy, .epoch_ms = c->epoch_ms,
		.timeout_ms = c->timeout_ms, .peer_timeout_ms = c->peer_timeout_ms,
		.progress = tlm_cli_inside_progress,
		.cancel = c->cancel,
	};
	struct tlm_inside_result r;
	char psk[PATH_MAX];
	int rc;

	if (abs_psk(c->psk_path, psk))
		return 2;
	o.psk_path = psk;
	o.protect = c->protect;
	if (c->source) {
		rc = tlm_inside_migrate(&o, &r);
	} else {
		if (isatty(STDERR_FILENO))
			fprintf(stderr, "tlm: QEMU listens on %s port %s (mode inside)\n",
				c->host, c->port);
		rc = tlm_inside_receive(&o, &r);
	}
	tlm_cli_inside_progress_end();
	if (c->json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_cli_inside_report(stdout, &r, c->source ? "source" : "destination", true, &j);
		tlm_json_str(&j, "protect", tlm_protect_name(c->protect));
		tlm_json_finish(&j);
	} else {
		tlm_cli_inside_report(stdout, &r, c->source ? "source" : "destination", false,
				      NULL);
		printf("  protect         %s\n", tlm_protect_name(c->protect));
	}
	return rc ? 1 : 0;
}

int tlm_cli_parse_mode(const char *arg, const char **mode)
{
	if (strcmp(arg, "auto") && strcmp(arg, "inside") && strcmp(arg, "relay")) {
		tlm_cli_err("--mode: auto, inside or relay, not '%s'", arg);
		return -EINVAL;
	}
	*mode = arg;
	return 0;
}

int tlm_cli_pick_mode(struct tlm_qmp *q, const char *mode)
{
	int has;

	if (mode && !strcmp(mode, "relay"))
		return 0;
	has = tlm_inside_detect(q);
	if (has < 0) {
		tlm_cli_err("cannot tell whether QEMU runs the tlm engine: %s",
			    tlm_qmp_last_error(q));
		return has;
	}
	if (mode && !strcmp(mode, "inside") && !has) {
		tlm_cli_err("--mode inside: this QEMU has no tlm engine (stock QEMU); build "
			    "the patched one with scripts/build-qemu.sh, or use --mode relay");
		return -EINVAL;
	}
	return has;
}
