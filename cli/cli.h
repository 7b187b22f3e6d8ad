/* SPDX-License-Identifier: MIT */
/* The `tlm` command: one file per subcommand, shared helpers in util.c. */
#ifndef TLM_CLI_H
#define TLM_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tlm/tlm.h"

/* Subcommands: each gets argv starting at its own name (argv[0] = "transport"
 * for `tlm bench transport`), returns the process exit status. */
int tlm_cli_bench_transport(int argc, char **argv);
int tlm_cli_bench_migrate(int argc, char **argv);
int tlm_cli_bench_checkpoint(int argc, char **argv);
int tlm_cli_bench_restore(int argc, char **argv);
int tlm_cli_checkpoint(int argc, char **argv);
int tlm_cli_restore(int argc, char **argv);
/* checkpoint.c: tlm receive --to-file; checkpoint_qemu.c: tlm checkpoint --qmp. */
int tlm_cli_receive_to_file(int argc, char **argv);
int tlm_cli_checkpoint_qemu(int argc, char **argv);
/* main.c: runs the optional subcommand tlm_cli_<cmd> (commands.h), or says
 * that `what` is not available in this build. */
int tlm_cli_run_optional(const char *cmd, const char *what, int argc, char **argv);
int tlm_cli_migrate(int argc, char **argv);
int tlm_cli_receive(int argc, char **argv);
int tlm_cli_demo(int argc, char **argv);
int tlm_cli_relay_out(int argc, char **argv);
int tlm_cli_relay_in(int argc, char **argv);
int tlm_cli_virsh_migrate(int argc, char **argv);
int tlm_cli_keygen(int argc, char **argv);

/* util.c APIs: */
extern int tlm_cli_verbose;
/* "64M", "1G", "4096", "1.5G" -> bytes. 0 or -EINVAL. */
int tlm_cli_parse_size(const char *s, uint64_t *out);
/* "host:port", "[v6]:port" -> host, port. 0 or -EINVAL. */
int tlm_cli_parse_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen);
/* The transport arguments of every command: --transport-args plus
 * --rdma-dev NAME / --rdma-gid N (the rdma transport's dev= and gid=) and
 * --dpdk-args "..." / --fault SPEC (dpdk's dpdk-args="..." and fault=),
 * each refused for other transports. Writes the combined string to out;
 * returns 0, or -1 after saying why. */
struct tlm_cli_targs { const char *args, *rdma_dev, *rdma_gid, *dpdk_args, *fault; };
int tlm_cli_targs_build(const struct tlm_cli_targs *t, const char *transport, char *out,
			size_t cap);
/* The options TLM_CLI_TARGS_HELP describes, for a getopt_long table, and
 * their parser: true if getopt's c was one of them (optarg kept in t). */
#define TLM_CLI_TARGS_OPTIONS \
	{ "transport-args", required_argument, NULL, 'A' }, \
	{ "rdma-dev", required_argument, NULL, 'D' }, \
	{ "rdma-gid", required_argument, NULL, 'G' }, \
	{ "dpdk-args", required_argument, NULL, 'E' }, \
	{ "fault", required_argument, NULL, 'F' }
bool tlm_cli_targs_opt(struct tlm_cli_targs *t, int c);

/* The options of the commands that carry QEMU's own migration over lanes
* (migrate, receive, relay-out, relay-in, virsh-migrate), for their
* getopt_long tables (--accept-timeout, 'a', is parsed too, for those
* that list it), the parser (1: c was one of them, 0: not, -1: a bad
* value, said) and the check once all are parsed (the transport is built
* in, its arguments, the key read: 0 or -1, said). cli/relay.c. */
struct tlm_cli_relay {
	const char *transport, *psk_path;
	struct tlm_cli_targs ta;
	char targs[512];
	long multifd, timeout, acc_timeout;
	long peer_timeout;      /* --peer-timeout, seconds; 0: the default */
	int protect;            /* --protect, enum tlm_protect */
	bool json;
	const char *psk_whose;  /* for "--psk FILE is required (...)" */
};
#define TLM_CLI_RELAY_OPTIONS \
	{ "transport", required_argument, NULL, 'T' }, \
	TLM_CLI_TARGS_OPTIONS, \
	{ "lanes", required_argument, NULL, 'n' }, \
	{ "psk", required_argument, NULL, 'k' }, \
	{ "protect", required_argument, NULL, 'Q' }, \
	{ "timeout", required_argument, NULL, 'o' }, \
	{ "peer-timeout", required_argument, NULL, 'K' }, \
	{ "json", no_argument, NULL, 'j' }
int tlm_cli_relay_opt(struct tlm_cli_relay *o, int c);
struct tlm_psk;
int tlm_cli_relay_check(struct tlm_cli_relay *o, struct tlm_psk *psk);
/* --peer-timeout's help, for usage texts whose option text starts at
 * column 21 + strlen(pad). */
#define TLM_CLI_PEER_TIMEOUT_HELP(pad) \
"  --peer-timeout SEC " pad "a peer silent this long on the control lane fails\n" \
"                     " pad "the migration; each end sends a keepalive at least\n" \
"                     " pad "every second (2..3600, default 30)\n"
/* ... and what it is in mode inside. */
#define TLM_CLI_PEER_TIMEOUT_INSIDE_HELP(pad) \
"                     " pad "inside: QEMU's timeout-ms, also each wait on the\n" \
"                     " pad "peer (default: the engine's, 30 s source, 10 s\n" \
"                     " pad "destination)\n"
#define TLM_CLI_TARGS_HELP \
"  --transport-args S   transport options (key=value,...; README.md)\n" \
"  --rdma-dev NAME      rdma: the device the address must resolve to\n" \
"  --rdma-gid N         rdma: the GID index it must use (RoCE v2)\n" \
"  --dpdk-args \"ARGS\"   dpdk: EAL arguments (default --no-huge --no-pci -m 512)\n" \
"  --fault SPEC         dpdk: drop=P,reorder=P,dup=P: lose, reorder, duplicate\n" \
"                       that share of the packets this end sends (P in 0..1)\n"
/* Prints "tlm: <msg>" to stderr; the library's log callback goes here too. */
void tlm_cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same for a whole line (the benchmark library's error hook). */
void tlm_cli_err_line(const char *msg);
void tlm_cli_install_log(void);
uint64_t tlm_cli_now_ms(void);
/* Load --psk FILE, or make a random key when none was given and both ends
 * run here (loopback). Prints the reason on failure. */
int tlm_cli_get_psk(const char *path, bool loopback_only, struct tlm_psk *out);
/* MemAvailable from /proc/meminfo in bytes, 0 if unknown. */
uint64_t tlm_cli_mem_available(void);
/* --protect encrypt|integrity|none into *out; -EINVAL (said why). */
int tlm_cli_parse_protect(const char *arg, int *out);
/* bench_peer.c APIs: --peer ib_write_bw and --in-vm of tlm bench transport. */
int tlm_cli_rdma_dev_for(const char *addr, const char *targs, char *dev, size_t cap);
int tlm_cli_ib_write_bw(const char *dev, const char *addr, unsigned qps, uint32_t size,
			uint64_t bytes, double *Bps);
/* Runs `tlm CMD argv...` (without flag, plus --local-addr vm_addr if
 * add_addr) inside tests/vm/run-in-vm.sh; returns only on failure. */
void tlm_cli_reexec_in_vm(const char *cmd, int argc, char **argv, const char *flag,
			  const char *vm_addr, bool add_addr);
/* Minimal JSON writer for --json reports (one object per run). */
struct tlm_json { FILE *f; int depth; bool first[16]; };
void tlm_json_begin(struct tlm_json *j, FILE *f);
/* A relay's "bytes", "lanes" (data lanes) and "lane_bytes" (each lane's
 * bytes both ways, control lane left out): every relay report has them
 * (cli/relay.c). */
struct tlm_relay_result;
void tlm_cli_json_lanes(struct tlm_json *j, const struct tlm_relay_result *r);
void tlm_json_obj(struct tlm_json *j, const char *key);      /* key may be NULL in arrays */
void tlm_json_arr(struct tlm_json *j, const char *key);
void tlm_json_end_obj(struct tlm_json *j);
void tlm_json_end_arr(struct tlm_json *j);
void tlm_json_str(struct tlm_json *j, const char *key, const char *v);
void tlm_json_u64(struct tlm_json *j, const char *key, uint64_t v);
void tlm_json_i64(struct tlm_json *j, const char *key, int64_t v);
void tlm_json_dbl(struct tlm_json *j, const char *key, double v);
void tlm_json_bool(struct tlm_json *j, const char *key, bool v);
void tlm_json_finish(struct tlm_json *j);  /* closes the top object, newline */

/* migrate.c APIs, shared by receive.c and demo.c: the relay's live
 * progress line, its report (human or JSON) and Ctrl-C handling. */
struct tlm_qmp_migstat;
struct tlm_relay_result;
void tlm_cli_relay_progress(const struct tlm_qmp_migstat *st, void *arg);
void tlm_cli_relay_progress_end(void);
void tlm_cli_relay_report(FILE *f, const struct tlm_relay_result *r, const char *transport,
			  int policy, int protect, bool json, struct tlm_json *j);
void tlm_cli_relay_signals(volatile sig_atomic_t *flag);

/* inside.c APIs: mode `inside`, a QEMU that runs the tlm engine. */
struct tlm_inside_result;
struct tlm_cli_inside {
	struct tlm_qmp *qmp;
	bool source, json;
	const char *host, *port, *transport, *transport_args, *psk_path, *policy;
	int protect;
	unsigned chk_lanes, ps_lanes, epoch_ms;
	int timeout_ms;
	int peer_timeout_ms;    /* the engine's (URI timeout-ms); 0: its default */
	volatile sig_atomic_t *cancel;
};
/* --mode: "auto", "inside" or "relay" into *mode; -EINVAL (said why). */
int tlm_cli_parse_mode(const char *arg, const char **mode);
/* --mode auto|inside|relay (NULL = auto) against what the QEMU is:
 * 1 inside, 0 relay, negative (said why) when they do not fit. */
int tlm_cli_pick_mode(struct tlm_qmp *q, const char *mode);
int tlm_cli_inside_run(const struct tlm_cli_inside *c);
struct tlm_inside_stat;
void tlm_cli_inside_progress(const struct tlm_inside_stat *st, void *arg);
void tlm_cli_inside_progress_end(void);
void tlm_cli_inside_report(FILE *f, const struct tlm_inside_result *r, const char *side,
			   bool json, struct tlm_json *j);
/* Connects to a QEMU's QMP socket; says why not (no socket, nobody there). */
struct tlm_qmp;
int tlm_cli_qmp_open(const char *path, struct tlm_qmp **q);

#endif
