/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

int tlm_cli_verbose;

int tlm_cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	uint64_t mul = 1;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	/* strtod takes "nan", "inf" and hex floats: sizes are plain numbers. */
	if (errno || end == s || !(v >= 0) || v == HUGE_VAL || !strchr("0123456789.", *s) ||
	    strpbrk(s, "xX"))
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	default: break;
	}
	if (*end == 'i' && mul > 1)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -EINVAL;
	if (v * (double)mul > 1.8e19)
		return -ERANGE;
	*out = (uint64_t)(v * (double)mul);
	return 0;
}

/* --fault SPEC: drop=P,reorder=P,dup=P, each P in 0..1. */
static int fault_ok(const char *spec)
{
	char buf[128], *save = NULL;

	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
		return 0;
	for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '='), *end;
		double p;

		if (!v)
			return 0;
		*v++ = 0;
		p = strtod(v, &end);
		if ((strcmp(kv, "drop") && strcmp(kv, "reorder") && strcmp(kv, "dup")) ||
		    end == v || *end || !(p >= 0 && p <= 1))
			return 0;
	}
	return *spec != 0;
}

bool tlm_cli_targs_opt(struct tlm_cli_targs *t, int c)
{
	switch (c) {
	case 'A': t->args = optarg; return true;
	case 'D': t->rdma_dev = optarg; return true;
	case 'G': t->rdma_gid = optarg; return true;
	case 'E': t->dpdk_args = optarg; return true;
	case 'F': t->fault = optarg; return true;
	default: return false;
	}
}

int tlm_cli_targs_build(const struct tlm_cli_targs *t, const char *transport, char *out,
			size_t cap)
{
	const char *keys[] = { "", "dev=", "gid=", "dpdk-args=", "fault=" };
	const char *vals[] = { t->args, t->rdma_dev, t->rdma_gid, t->dpdk_args, t->fault };
	size_t len = 0;
	char *end;

	if ((t->rdma_dev || t->rdma_gid) && strcmp(transport, "rdma")) {
		tlm_cli_err("--rdma-dev and --rdma-gid need --transport rdma");
		return -1;
	}
	if ((t->dpdk_args || t->fault) && strcmp(transport, "dpdk")) {
		tlm_cli_err("--dpdk-args and --fault need --transport dpdk");
		return -1;
	}
	if (t->rdma_gid && (strtol(t->rdma_gid, &end, 10) < 0 || *end || !*t->rdma_gid)) {
		tlm_cli_err("--rdma-gid %s: want a GID index (0, 1, ...)", t->rdma_gid);
		return -1;
	}
	if (t->fault && !fault_ok(t->fault)) {
		tlm_cli_err("--fault %s: want drop=P,reorder=P,dup=P (any of them), P in 0..1",
			    t->fault);
		return -1;
	}
	/* EAL arguments hold spaces and maybe commas: quoted, with whichever
	 * quote they do not contain (core/kv.c strips either kind). */
	if (t->dpdk_args && strchr(t->dpdk_args, '"') && strchr(t->dpdk_args, '\'')) {
		tlm_cli_err("--dpdk-args: cannot hold both kinds of quotes");
		return -1;
	}
	out[0] = 0;
	for (int i = 0; i < 5; i++) {
		const char *q = "";
		int n;

		if (!vals[i] || !*vals[i])
			continue;
		if (vals[i] == t->dpdk_args)
			q = strchr(vals[i], '"') ? "'" : "\"";
		n = snprintf(out + len, cap - len, "%s%s%s%s%s", len ? "," : "", keys[i], q,
			     vals[i], q);
		if (n < 0 || (size_t)n >= cap - len) {
			tlm_cli_err("transport arguments too long");
			return -1;
		}
		len += (size_t)n;
	}
	return 0;
}

int tlm_cli_parse_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon;
	size_t n;

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':')
			return -EINVAL;
		n = (size_t)(rb - s - 1);
		colon = rb + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		n = (size_t)(colon - s);
	}
	if (n == 0 || n >= hlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= plen)
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = 0;
	strcpy(port, colon + 1);
	for (const char *p = port; *p; p++)
		if (*p < '0' || *p > '9')
			return -EINVAL;
	/* getaddrinfo would take 99999 and listen on 99999 mod 65536. */
	if (strlen(port) > 5 || atoi(port) > 65535)
		return -EINVAL;
	return 0;
}

void tlm_cli_err(const char *fmt, ...)
{
	va_list ap;

	fputs("tlm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tlm_cli_err_line(const char *msg)
{
	fprintf(stderr, "tlm: %s\n", msg);
}

static void log_cb(int level, const char *msg, void *arg)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };

	(void)arg;
	if (level > TLM_LOG_WARN + tlm_cli_verbose)
		return;
	fprintf(stderr, "tlm: %s: %s\n", names[level & 3], msg);
}

void tlm_cli_install_log(void)
{
	tlm_set_log_fn(log_cb, NULL);
}

uint64_t tlm_cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t tlm_cli_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

int tlm_cli_parse_protect(const char *arg, int *out)
{
	int p = tlm_protect_parse(arg);

	if (p < 0) {
		tlm_cli_err("--protect %s: want encrypt (the default), integrity or none",
			    arg ? arg : "");
		return -EINVAL;
	}
	*out = p;
	return 0;
}

int tlm_cli_get_psk(const char *path, bool loopback_only, struct tlm_psk *out)
{
	int err;

	if (path) {
		err = tlm_psk_load(path, out);
		if (err)
			tlm_cli_err("cannot use --psk %s: %s", path, tlm_strerror(err));
		return err;
	}
	if (!loopback_only) {
		tlm_cli_err("--psk FILE is required when the peer is on another host "
			    "(make one with: tlm keygen tlm.psk)");
		return -TLM_EPSK;
	}
	err = tlm_psk_random(out);
	if (err)
		tlm_cli_err("cannot make a random key: %s", tlm_strerror(err));
	return err;
}

/* ---- JSON writer ---- */

static void sep(struct tlm_json *j, const char *key)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (key) {
		fputc('"', j->f);
		for (const char *p = key; *p; p++)
			fputc(*p, j->f);
		fputs("\":", j->f);
	}
}

static void push(struct tlm_json *j, char c)
{
	fputc(c, j->f);
	if (j->depth < 15)
		j->depth++;
	j->first[j->depth] = true;
}

void tlm_json_begin(struct tlm_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->first[0] = true;
	push(j, '{');
}

void tlm_json_obj(struct tlm_json *j, const char *key) { sep(j, key); push(j, '{'); }
void tlm_json_arr(struct tlm_json *j, const char *key) { sep(j, key); push(j, '['); }
void tlm_json_end_obj(struct tlm_json *j) { fputc('}', j->f); j->depth--; }
void tlm_json_end_arr(struct tlm_json *j) { fputc(']', j->f); j->depth--; }

void tlm_json_str(struct tlm_json *j, const char *key, const char *v)
{
	sep(j, key);
	if (!v) {
		fputs("null", j->f);
		return;
	}
	fputc('"', j->f);
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(j->f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(j->f, "\\u%04x", *p);
		else
			fputc(*p, j->f);
	}
	fputc('"', j->f);
}

void tlm_json_u64(struct tlm_json *j, const char *key, uint64_t v)
{
	sep(j, key);
	fprintf(j->f, "%llu", (unsigned long long)v);
}

void tlm_json_i64(struct tlm_json *j, const char *key, int64_t v)
{
	sep(j, key);
	fprintf(j->f, "%lld", (long long)v);
}

void tlm_json_dbl(struct tlm_json *j, const char *key, double v)
{
	sep(j, key);
	if (v != v || v > 1e300 || v < -1e300)
		fputs("null", j->f);
	else
		/* ten significant digits: a stage-3 step of seconds still
		 * reads to the microsecond its rounding kept */
		fprintf(j->f, "%.10g", v);
}

void tlm_json_bool(struct tlm_json *j, const char *key, bool v)
{
	sep(j, key);
	fputs(v ? "true" : "false", j->f);
}

void tlm_json_finish(struct tlm_json *j)
{
	while (j->depth > 0)
		tlm_json_end_obj(j);
	fputc('\n', j->f);
	fflush(j->f);
}
