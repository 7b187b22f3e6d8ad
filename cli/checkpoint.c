/* SPDX-License-Identifier: MIT */
/*
 * tlm checkpoint --check FILE: validate a checkpoint file (header, every
 * page against its digest, the device state) without restoring it; exit
 * status 0 only for a valid file, like `qemu-img check`.
 *
 * tlm receive --to-file FILE --listen ADDR:PORT --psk KEY: the file side
 * of a checkpoint on another host, over any transport: it accepts one
 * session and writes what it receives into FILE (core/ckpt.c).
 *
 * With --qmp, tlm checkpoint checkpoints a running QEMU (checkpoint_qemu.c,
 * built with qemu-glue).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm checkpoint --check FILE [--json]\n"
"       tlm checkpoint --qmp SRC.qmp --to FILE [--policy tlm|stop-copy] [--json]\n"
"       tlm checkpoint --qmp SRC.qmp --to-host HOST:PORT --psk KEY [...]\n"
"\n"
"Saves a running VM (a QEMU built with tlm's patch series) to FILE with the\n"
"TLM engine while it keeps running: a migration whose destination is the\n"
"file, after which the VM goes on. FILE is written as FILE.tmp and renamed\n"
"when complete, so it is either the new checkpoint or the previous one; a\n"
"checkpoint into a valid FILE of the same VM is incremental. --to-host\n"
"sends it to `tlm receive --to-file FILE` on another host instead.\n"
"\n"
"  --check FILE         validate FILE (header, every page, device state);\n"
"                       exit status 1 on any damage\n"
"  --qmp PATH           the running VM's QMP socket\n"
"  --to FILE            the checkpoint file (written here)\n"
"  --to-host HOST:PORT  the file side runs `tlm receive --to-file` there\n"
"  --psk FILE           key for --to-host (make one: tlm keygen, or\n"
"                       umask 077; openssl rand -hex 32 > tlm.psk)\n"
"  --policy P           tlm (default) or stop-copy\n"
"  --chk-lanes N, --ps-lanes N   lanes per stream (default 1 each)\n"
"  --transport NAME     tcp (default); --transport-args S\n"
"  --timeout S          give up after S seconds (default 600)\n"
"  --json               one JSON object on stdout\n");
}

static void json_info(struct tlm_json *j, const struct tlm_ckpt_info *in)
{
	tlm_json_u64(j, "version", in->version);
	tlm_json_u64(j, "epoch", in->epoch);
	tlm_json_u64(j, "page_size", in->lay.page_size);
	tlm_json_u64(j, "file_bytes", in->file_bytes);
	tlm_json_u64(j, "disk_bytes", in->disk_bytes);
	tlm_json_u64(j, "pages_data", in->pages_data);
	tlm_json_u64(j, "devstate_len", in->devstate_len);
	tlm_json_arr(j, "regions");
	for (unsigned i = 0; i < in->lay.n; i++) {
		tlm_json_obj(j, NULL);
		tlm_json_str(j, "name", in->lay.name[i]);
		tlm_json_u64(j, "bytes", in->lay.len[i]);
		tlm_json_end_obj(j);
	}
	tlm_json_end_arr(j);
}

static int check(const char *path, bool json)
{
	struct tlm_ckpt_info in;
	char why[200] = "";
	int err = tlm_ckpt_check(path, true, &in, why, sizeof(why));

	if (json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "file", path);
		tlm_json_bool(&j, "valid", !err);
		if (err)
			tlm_json_str(&j, "error", why);
		else
			json_info(&j, &in);
		tlm_json_finish(&j);
	} else if (err) {
		tlm_cli_err("%s: %s", path, why);
	} else {
		printf("%s: valid tlm checkpoint, format %u, epoch %llu: %u region(s), %llu pages with "
		       "data, device state %llu bytes; %.1f MiB (%.1f MiB on disk)\n", path,
		       in.version, (unsigned long long)in.epoch, in.lay.n,
		       (unsigned long long)in.pages_data, (unsigned long long)in.devstate_len,
		       (double)in.file_bytes / 1048576.0, (double)in.disk_bytes / 1048576.0);
		for (unsigned i = 0; i < in.lay.n; i++)
			printf("  %-32s %10.1f MiB\n", in.lay.name[i][0] ? in.lay.name[i] : "(unnamed)",
			       (double)in.lay.len[i] / 1048576.0);
	}
	return err ? 1 : 0;
}

int tlm_cli_checkpoint(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--check")) {
			bool json = false;

			if (i + 1 >= argc) {
				tlm_cli_err("--check needs a FILE");
				return 2;
			}
			for (int k = 1; k < argc; k++)
				if (k != i && k != i + 1) {
					if (strcmp(argv[k], "--json")) {
						tlm_cli_err("--check takes only FILE and --json");
						return 2;
					}
					json = true;
				}
			return check(argv[i + 1], json);
		}
	}
	return tlm_cli_run_optional("checkpoint_qemu", "checkpoint --qmp", argc, argv);
}

/* ---- tlm receive --to-file ---- */

int tlm_cli_receive_to_file(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "to-file", required_argument, NULL, 'o' },
		{ "listen", required_argument, NULL, 'l' },
		{ "psk", required_argument, NULL, 'P' },
		{ "transport", required_argument, NULL, 't' },
		{ "transport-args", required_argument, NULL, 'A' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *to = NULL, *listen = NULL, *pskp = NULL, *transport = "tcp", *targs = NULL;
	char host[256], port[16];
	struct tlm_ckpt_stats st;
	struct tlm_listener *li;
	struct tlm_session *s;
	struct tlm_psk psk;
	uint64_t timeout_s = 600, t0;
	bool json = false;
	int opt, err;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'o': to = optarg; break;
		case 'l': listen = optarg; break;
		case 'P': pskp = optarg; break;
		case 't': transport = optarg; break;
		case 'A': targs = optarg; break;
		case 'j': json = true; break;
		case 'T':
			if (tlm_cli_parse_size(optarg, &timeout_s) || !timeout_s) {
				tlm_cli_err("bad --timeout '%s'", optarg);
				return 2;
			}
			break;
		default:
			tlm_cli_err("usage: tlm receive --to-file FILE --listen ADDR:PORT --psk KEY "
				    "[--transport NAME] [--transport-args S] [--timeout S] [--json]");
			return 2;
		}
	}
	if (!to || !listen || tlm_cli_parse_hostport(listen, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--to-file FILE and --listen ADDR:PORT are required");
		return 2;
	}
	if (tlm_cli_get_psk(pskp, false, &psk))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	{
		struct tlm_session_cfg cfg = {
			.transport = transport, .transport_args = targs, .psk = &psk,
			.caps = TLM_CAP_ZERO_PAGE | TLM_CAP_XBZRLE | TLM_CAP_DEVSTATE,
			.timeout_ms = 20000,
		};

		err = tlm_listen(&cfg, host, port, &li);
		if (err) {
			tlm_cli_err("cannot listen on %s: %s", listen, tlm_strerror(err));
			return 1;
		}
		err = tlm_accept(li, (int)(timeout_s * 1000), &s);
		tlm_listener_close(li);
	}
	if (err) {
		tlm_cli_err("no checkpoint came: %s", tlm_strerror(err));
		return 1;
	}
	t0 = tlm_cli_now_ms();
	err = tlm_ckpt_receive(s, to, &st);
	tlm_session_close(s);
	if (json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "file", to);
		tlm_json_bool(&j, "completed", !err);
		if (err)
			tlm_json_str(&j, "error", st.why);
		tlm_json_bool(&j, "incremental", st.incremental);
		tlm_json_u64(&j, "epoch", st.epoch);
		tlm_json_u64(&j, "wall_ms", tlm_cli_now_ms() - t0);
		tlm_json_u64(&j, "file_bytes", st.file_bytes);
		tlm_json_u64(&j, "disk_bytes", st.disk_bytes);
		tlm_json_u64(&j, "pages_written", st.pages_written);
		tlm_json_u64(&j, "pages_total", st.pages_total);
		tlm_json_u64(&j, "devstate_len", st.devstate_len);
		tlm_json_finish(&j);
	} else if (err) {
		tlm_cli_err("checkpoint into %s failed: %s", to, st.why);
	} else {
		printf("checkpoint written to %s (epoch %llu, %s): %llu of %llu pages written, "
		       "%.1f MiB on disk\n", to, (unsigned long long)st.epoch,
		       st.incremental ? "incremental" : "new file",
		       (unsigned long long)st.pages_written, (unsigned long long)st.pages_total,
		       (double)st.disk_bytes / 1048576.0);
	}
	return err ? 1 : 0;
}
