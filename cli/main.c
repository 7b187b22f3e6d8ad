/* SPDX-License-Identifier: MIT */
/* The `tlm` command: dispatch to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tlm-bench.h"

/* The subcommands a build may leave out (the QEMU ones need qemu-glue),
 * from the generated commands.h: a build without one says "not available
 * in this build". */
static const struct {
	const char *name;
	int (*fn)(int, char **);
} optional[] = {
#define TLM_CLI_COMMAND(n) { #n, tlm_cli_##n },
#include "commands.h"
#undef TLM_CLI_COMMAND
	{ NULL, NULL },
};

static int (*optional_fn(const char *name))(int, char **)
{
	for (unsigned i = 0; optional[i].name; i++)
		if (!strcmp(optional[i].name, name))
			return optional[i].fn;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm [--version] [-v] <command> [options]\n"
"\n"
"Live migration of QEMU/KVM virtual machines over RDMA, DPDK and parallel TCP\n"
"lanes, using Thread-based Live Migration (TLM).\n"
"\n"
"commands:\n"
"  demo               migrate a running test VM between two local QEMUs\n"
"  migrate            source side: carry a QEMU's migration over tlm lanes\n"
"  receive            destination side: hand the lanes to the waiting QEMU\n"
"  virsh-migrate      migrate a libvirt domain (virsh migrate) over tlm lanes\n"
"  relay-out          source host of a libvirt migration: QEMU's socket -> lanes\n"
"  relay-in           destination host of a libvirt migration: lanes -> QEMU\n"
"  bench transport    move page records over lanes and measure goodput\n"
"  bench migrate      migrate in-process memory under a workload (TLM engine)\n"
"  checkpoint         save a running VM to a file, live (or --check a file)\n"
"  restore            bring a VM back from a checkpoint file\n"
"  bench checkpoint   checkpoint in-process memory under a workload to a file\n"
"  bench restore      restore a checkpoint file into memory and verify it\n"
"  keygen FILE        write a fresh random 256-bit pre-shared key (mode 600)\n"
"\n"
"transports built in:");
	for (unsigned i = 0; tlm_transport_name(i); i++)
		fprintf(f, " %s", tlm_transport_name(i));
	fprintf(f, "\n\n'tlm <command> --help' describes each command.\n");
}

static int run(int (*fn)(int, char **), const char *name, int argc, char **argv);

int tlm_cli_run_optional(const char *cmd, const char *what, int argc, char **argv)
{
	return run(optional_fn(cmd), what, argc, argv);
}

static int run(int (*fn)(int, char **), const char *name, int argc, char **argv)
{
	if (!fn) {
		tlm_cli_err("'%s' is not available in this build", name);
		return 2;
	}
	return fn(argc, argv);
}

int main(int argc, char **argv)
{
	int i = 1;

	tlm_cli_install_log();
	tlm_bench_set_err_fn(tlm_cli_err_line);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--version")) {
			printf("tlm %s\n", TLM_VERSION_STRING);
			return 0;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
			tlm_cli_verbose++;
		} else {
			tlm_cli_err("unknown option %s", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	argc -= i;
	argv += i;
	if (!strcmp(argv[0], "bench")) {
		if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
			fprintf(argc < 2 ? stderr : stdout,
				"usage: tlm bench transport|migrate|checkpoint|restore [options]\n");
			return argc < 2 ? 2 : 0;
		}
		if (!strcmp(argv[1], "transport"))
			return run(tlm_cli_bench_transport, "bench transport", argc - 1, argv + 1);
		if (!strcmp(argv[1], "migrate"))
			return run(tlm_cli_bench_migrate, "bench migrate", argc - 1, argv + 1);
		if (!strcmp(argv[1], "checkpoint"))
			return run(tlm_cli_bench_checkpoint, "bench checkpoint", argc - 1, argv + 1);
		if (!strcmp(argv[1], "restore"))
			return run(tlm_cli_bench_restore, "bench restore", argc - 1, argv + 1);
		tlm_cli_err("unknown benchmark '%s' (transport, migrate, checkpoint, restore)", argv[1]);
		return 2;
	}
	if (!strcmp(argv[0], "keygen"))
		return tlm_cli_keygen(argc, argv);
	if (!strcmp(argv[0], "migrate"))
		return run(optional_fn("migrate"), "migrate", argc, argv);
	if (!strcmp(argv[0], "receive")) {
		/* The file side of a checkpoint (checkpoint.c) needs no QEMU. */
		for (int k = 1; k < argc; k++)
			if (!strcmp(argv[k], "--to-file") || !strncmp(argv[k], "--to-file=", 10))
				return tlm_cli_receive_to_file(argc, argv);
		return run(optional_fn("receive"), "receive", argc, argv);
	}
	if (!strcmp(argv[0], "checkpoint"))
		return run(tlm_cli_checkpoint, "checkpoint", argc, argv);
	if (!strcmp(argv[0], "restore"))
		return run(optional_fn("restore"), "restore", argc, argv);
	if (!strcmp(argv[0], "demo"))
		return run(optional_fn("demo"), "demo", argc, argv);
	if (!strcmp(argv[0], "relay-out"))
		return run(optional_fn("relay_out"), "relay-out", argc, argv);
	if (!strcmp(argv[0], "relay-in"))
		return run(optional_fn("relay_in"), "relay-in", argc, argv);
	if (!strcmp(argv[0], "virsh-migrate"))
		return run(optional_fn("virsh_migrate"), "virsh-migrate", argc, argv);
	tlm_cli_err("unknown command '%s'", argv[0]);
	usage(stderr);
	return 2;
}
