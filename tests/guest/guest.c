/*
 * tlm test guest: a freestanding multiboot kernel that dirties its memory in
 * a known pattern at a set rate and verifies every page it re-reads against
 * the stamp it last wrote, so a page lost or left stale by a live migration
 * is caught by the guest itself.
 *
 * Kernel command line (QEMU -append), space-separated key=value:
 *   pattern=mg|sp|random|idle   default mg
 *   mem=<MiB>        working set; default: all usable RAM above the kernel
 *   fill=1           also write every usable page past the working set once
 *                    (not verified), so RAM is not mostly zero: an
 *                    application that initialised all its memory and keeps
 *                    rewriting a part of it
 *   rate=<pages/s>   page writes per second, 0 = as fast as possible (default);
 *                    for idle it is the verification rate (0 means 4096/s)
 *   seed=<n>         random pattern and content salt, default 1
 *   verify=<n>       one background verification per n writes, 0 = off; default 4
 *   report_ms=<n>    status line period in guest ms, default 1000
 * Numbers are decimal or 0x-hex.  Tokens without '=' (QEMU passes the kernel
 * file name first) are ignored.
 *
 * Serial output (COM1, 115200 8N1), one line each, all starting "TLMG ",
 * then space-separated key=value; parsers must ignore unknown keys (fields
 * may be added at the end, never removed or reordered):
 *   TLMG start pattern=P pages=N base=0xADDR table=0xADDR rate=R seed=S
 *        verify=V tsc_khz=K
 *       once, after calibration.  base = physical address of page 0 of the
 *       working set (page p lives at base + p*4096); table = physical address
 *       of the u32 generation table (entry p = last generation written to p).
 *   TLMG filled pages=N ms=T
 *       once, when every page has been written (generation 1).  The fill runs
 *       unthrottled and is counted in writes.
 *   TLMG status sweep=S writes=W verified=V errors=E vpasses=X ms=T
 *       every report_ms of guest time (also while waiting for rate budget).
 *       sweep = completed passes of the pattern (mg: V-cycles, sp: x+y+z
 *       sweeps, random: N writes, idle: verification passes); writes/verified
 *       = page writes/page verifications since boot; errors = mismatches
 *       since boot; vpasses = completed background verification passes;
 *       ms = guest time since start.
 *   TLMG error page=P expected_gen=G found_gen=H found_page=Q bad_words=B
 *        addr=0xADDR hdr_bad=0xM first_bad=F last_bad=L again=A ms=T
 *       a verification mismatch; at most 16 per status period (the rest are
 *       still counted in errors).  The page is then rewritten with a new
 *       generation (counted in writes) so one corruption counts once.
 *       hdr_bad: bit i set = header word i (magic, page, gen, checksum) is
 *       wrong; first_bad/last_bad: first/last wrong content word (4..1023),
 *       0 if none; again: bad_words of an immediate second read (0 = the
 *       first read was wrong, not RAM); ms: guest time of the check.
 *       found_gen > expected_gen means the page is newer than the guest's
 *       own table: the table (or the stack) lost writes, not the page.
 *   TLMG warn ...       a command-line problem; the guest goes on with defaults.
 *   TLMG fault vec=N err=0xE eip=0xADDR
 *       a CPU exception (a guest bug); the guest halts.
 *
 * Page stamp: words 0..3 of a page are magic "TLMG", page number, generation,
 * checksum; words 4..1023 are a sequence derived from (page, generation,
 * seed).  The checksum covers the header and the content.  Verification
 * regenerates the expected page for the generation in the table and compares
 * every word.
 */
#include "hw.h"

#define PAGE_SIZE 4096u
#define PAGE_WORDS (PAGE_SIZE / 4)
#define STAMP_MAGIC 0x474d4c54u    /* "TLMG" little-endian */
#define ERR_LINES_PER_PERIOD 16
#define IDLE_DEFAULT_RATE 4096u
#define MG_MAX_LEVELS 12

enum pattern { PAT_MG, PAT_SP, PAT_RANDOM, PAT_IDLE };
static const char *const pattern_names[] = { "mg", "sp", "random", "idle" };

struct mb_info {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
	uint32_t mods_count, mods_addr, syms[4], mmap_length, mmap_addr;
};

struct mb_mmap {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;
} __attribute__((packed));

extern char __kernel_end[];
void guest_main(uint32_t magic, const struct mb_info *mbi);

static struct {
	enum pattern pattern;
	uint32_t mem_mib, rate, seed, verify, report_ms, fill;
} cfg = { PAT_MG, 0, 0, 1, 4, 1000, 0 };

/* All guest state is in this one place; nothing else is global but hw.c's. */
static struct {
	uint8_t *base;          /* working set, page-aligned */
	uint32_t *gentab;       /* last generation written, per page; 0 = never */
	uint32_t npages;
	uint32_t rest;          /* pages past the working set filled (fill=1) */

	uint64_t sweeps, writes, verified, errors;
	uint32_t vpasses, vcursor, vcount;

	uint64_t tsc0, next_report, report_step;
	uint64_t deadline, pace_step, burst;
	uint32_t err_lines;

	uint32_t rng;
	uint32_t mg_off[MG_MAX_LEVELS], mg_n[MG_MAX_LEVELS], mg_levels;
	uint32_t sp_nx, sp_ny, sp_nz;
} g;

static char cmdline[1024];

/* ---- time, pacing and status ---- */

static uint64_t guest_ms(uint64_t now)
{
	return div64_32(now - g.tsc0, tsc_per_ms, NULL);
}

static void report_status(uint64_t now)
{
	ln_str("TLMG status sweep=");
	ln_u64(g.sweeps);
	ln_str(" writes=");
	ln_u64(g.writes);
	ln_str(" verified=");
	ln_u64(g.verified);
	ln_str(" errors=");
	ln_u64(g.errors);
	ln_str(" vpasses=");
	ln_u64(g.vpasses);
	ln_str(" ms=");
	ln_u64(guest_ms(now));
	ln_end();
}

static void report_if_due(void)
{
	uint64_t now = rdtsc();

	if ((int64_t)(now - g.next_report) < 0)
		return;
	report_status(now);
	g.err_lines = 0;
	g.next_report += g.report_step;
	/* After a pause (migration downtime) report once, not once per missed period. */
	if ((int64_t)(now - g.next_report) >= 0)
		g.next_report = now + g.report_step;
}

static void pace_set(uint32_t rate)
{
	g.pace_step = rate ? div64_32((uint64_t)tsc_per_ms * 1000u, rate, NULL) : 0;
	g.burst = (uint64_t)tsc_per_ms * 10u;
	g.deadline = rdtsc();
}

/*
 * Wait for the budget of one page.  Lateness of up to 10 ms is caught up in
 * a burst; beyond that (a paused VM, a busy host) the budget restarts, so the
 * rate is never exceeded by more than 10 ms worth of pages.
 */
static void pace(void)
{
	uint64_t now;

	report_if_due();
	if (!g.pace_step)
		return;
	now = rdtsc();
	if ((int64_t)(g.deadline - now) > 0) {
		do {
			cpu_idle();
			report_if_due();
			now = rdtsc();
		} while ((int64_t)(g.deadline - now) > 0);
	} else if (now - g.deadline > g.burst) {
		g.deadline = now - g.burst;
	}
	g.deadline += g.pace_step;
}

/* ---- page stamps ---- */

static uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return x;
}

static uint32_t rotl5(uint32_t x)
{
	return (x << 5) | (x >> 27);
}

static uint32_t content_seed(uint32_t page, uint32_t gen)
{
	return mix32(page * 0x9e3779b1u ^ mix32(gen ^ (cfg.seed * 0x85ebca77u)));
}

static uint32_t *page_ptr(uint32_t p)
{
	return (uint32_t *)(g.base + (size_t)p * PAGE_SIZE);
}

static uint32_t next_gen(uint32_t gen)
{
	return gen + 1 ? gen + 1 : 1;
}

static void write_page(uint32_t p, uint32_t gen)
{
	uint32_t *w = page_ptr(p);
	uint32_t x = content_seed(p, gen);
	uint32_t sum = STAMP_MAGIC ^ p ^ rotl5(gen);

	for (uint32_t i = 4; i < PAGE_WORDS; i++) {
		x = x * 1664525u + 1013904223u;
		w[i] = x;
		sum = rotl5(sum) ^ x;
	}
	w[0] = STAMP_MAGIC;
	w[1] = p;
	w[2] = gen;
	w[3] = sum;
	g.gentab[p] = gen;
	g.writes++;
}

struct mismatch {
	uint32_t gen, page, bad;
	uint32_t hdr;           /* bit i: header word i wrong */
	uint32_t first, last;   /* first/last wrong content word, 0 if none */
};

static void report_error(uint32_t p, uint32_t want, const struct mismatch *m,
			 uint32_t again)
{
	g.errors++;
	if (g.err_lines >= ERR_LINES_PER_PERIOD)
		return;
	g.err_lines++;
	ln_str("TLMG error page=");
	ln_u64(p);
	ln_str(" expected_gen=");
	ln_u64(want);
	ln_str(" found_gen=");
	ln_u64(m->gen);
	ln_str(" found_page=");
	ln_u64(m->page);
	ln_str(" bad_words=");
	ln_u64(m->bad);
	ln_str(" addr=");
	ln_hex((uint32_t)(uintptr_t)page_ptr(p));
	ln_str(" hdr_bad=");
	ln_hex(m->hdr);
	ln_str(" first_bad=");
	ln_u64(m->first);
	ln_str(" last_bad=");
	ln_u64(m->last);
	ln_str(" again=");
	ln_u64(again);
	ln_str(" ms=");
	ln_u64(guest_ms(rdtsc()));
	ln_end();
}

/*
 * Compare page p with the stamp of generation want; returns the number of
 * wrong words (0 = match) and fills *m.  Reads are volatile: the point is to
 * see what is in RAM now, after a migration or an outside write, never what
 * the compiler remembers storing.
 */
static uint32_t compare_page(uint32_t p, uint32_t want, struct mismatch *m)
{
	const volatile uint32_t *w = page_ptr(p);
	uint32_t x, sum, bad = 0;
	uint32_t magic, page, gen, stored_sum;

	magic = w[0];
	page = w[1];
	gen = w[2];
	stored_sum = w[3];
	x = content_seed(p, want);
	sum = magic ^ page ^ rotl5(gen);
	m->first = m->last = 0;
	for (uint32_t i = 4; i < PAGE_WORDS; i++) {
		uint32_t v = w[i];

		x = x * 1664525u + 1013904223u;
		if (v != x) {
			bad++;
			if (!m->first)
				m->first = i;
			m->last = i;
		}
		sum = rotl5(sum) ^ v;
	}
	m->hdr = (uint32_t)(magic != STAMP_MAGIC) | (uint32_t)(page != p) << 1 |
		 (uint32_t)(gen != want) << 2 | (uint32_t)(stored_sum != sum) << 3;
	m->gen = gen;
	m->page = page;
	m->bad = bad + (m->hdr & 1) + (m->hdr >> 1 & 1) + (m->hdr >> 2 & 1) + (m->hdr >> 3);
	return m->bad;
}

/*
 * Check page p against the generation the table says we wrote last.  Returns
 * 0 if it matches or was never written, -1 (after reporting) if not.
 */
static int verify_page(uint32_t p)
{
	uint32_t want = g.gentab[p];
	struct mismatch m, m2;

	if (!want)
		return 0;
	g.verified++;
	if (!compare_page(p, want, &m))
		return 0;
	/*
	 * Read it again.  If the second read matches, RAM was right and the first
	 * comparison was not (e.g. its locals came back stale after a migration
	 * that lost stack writes); the report tells the two apart.
	 */
	report_error(p, want, &m, compare_page(p, want, &m2));
	return -1;
}

static void verify_and_repair(uint32_t p)
{
	if (verify_page(p))
		write_page(p, next_gen(g.gentab[p]));
}

/* One background verification per cfg.verify writes, walking the whole set. */
static void background_verify(void)
{
	if (!cfg.verify || ++g.vcount < cfg.verify)
		return;
	g.vcount = 0;
	verify_and_repair(g.vcursor);
	if (++g.vcursor == g.npages) {
		g.vcursor = 0;
		g.vpasses++;
	}
}

/* Read-modify-write of one page: the unit every writing pattern is made of. */
static void touch(uint32_t p)
{
	pace();
	verify_page(p);
	write_page(p, next_gen(g.gentab[p]));
	background_verify();
}

/* ---- patterns ---- */

/*
 * mg: a hierarchy of grids, each 1/8 the size of the one above (as a 3-D
 * grid halved in every dimension), laid out one after another.  A V-cycle
 * smooths every level going down, then every level but the coarsest going
 * up; going up, each fine page also reads its coarse parent (prolongation).
 */
static void mg_setup(void)
{
	uint32_t n = g.npages - g.npages / 8, total = 0, off = 0;

	g.mg_levels = 0;
	while (n && g.mg_levels < MG_MAX_LEVELS) {
		g.mg_n[g.mg_levels++] = n;
		total += n;
		n /= 8;
	}
	g.mg_n[0] += g.npages - total;
	for (uint32_t k = 0; k < g.mg_levels; k++) {
		g.mg_off[k] = off;
		off += g.mg_n[k];
	}
}

static void mg_smooth(uint32_t k, int up)
{
	int has_coarse = up && k + 1 < g.mg_levels;

	for (uint32_t i = 0; i < g.mg_n[k]; i++) {
		touch(g.mg_off[k] + i);
		if (has_coarse && i % 8 == 0 && i / 8 < g.mg_n[k + 1])
			verify_and_repair(g.mg_off[k + 1] + i / 8);
	}
}

static void mg_cycle(void)
{
	for (uint32_t k = 0; k < g.mg_levels; k++)
		mg_smooth(k, 0);
	for (uint32_t k = g.mg_levels - 1; k-- > 0;)
		mg_smooth(k, 1);
}

/*
 * sp: the set as an nx*ny*nz array of pages (x fastest), swept line by line
 * along x (stride 1 page), then y (stride nx), then z (stride nx*ny), like
 * SP's ADI factors.  Pages past nx*ny*nz are touched once per sweep.
 */
static void sp_setup(void)
{
	uint32_t c = 1;

	while ((c + 1) * (c + 1) * (c + 1) <= g.npages)
		c++;
	g.sp_nx = c;
	g.sp_ny = c;
	g.sp_nz = g.npages / (c * c);
}

static void sp_sweep(void)
{
	uint32_t nx = g.sp_nx, ny = g.sp_ny, nz = g.sp_nz, plane = nx * ny;

	for (uint32_t z = 0; z < nz; z++)
		for (uint32_t y = 0; y < ny; y++)
			for (uint32_t x = 0; x < nx; x++)
				touch(z * plane + y * nx + x);
	for (uint32_t z = 0; z < nz; z++)
		for (uint32_t x = 0; x < nx; x++)
			for (uint32_t y = 0; y < ny; y++)
				touch(z * plane + y * nx + x);
	for (uint32_t y = 0; y < ny; y++)
		for (uint32_t x = 0; x < nx; x++)
			for (uint32_t z = 0; z < nz; z++)
				touch(z * plane + y * nx + x);
	for (uint32_t p = plane * nz; p < g.npages; p++)
		touch(p);
}

static uint32_t xorshift32(void)
{
	uint32_t x = g.rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	g.rng = x;
	return x;
}

static void random_pass(void)
{
	for (uint32_t i = 0; i < g.npages; i++)
		touch(xorshift32() % g.npages);
}

static void idle_pass(void)
{
	for (uint32_t p = 0; p < g.npages; p++) {
		pace();
		verify_and_repair(p);
	}
}

/* ---- boot: command line, memory layout ---- */

static int str_eq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

static void warn(const char *what, const char *arg)
{
	ln_str("TLMG warn ");
	ln_str(what);
	ln_str(arg);
	ln_end();
}

static int parse_u32(const char *s, uint32_t *out)
{
	uint32_t v = 0, base = 10;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (; *s; s++) {
		uint32_t d;

		if (*s >= '0' && *s <= '9')
			d = (uint32_t)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (uint32_t)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (uint32_t)(*s - 'A' + 10);
		else
			return -1;
		if (v > (0xffffffffu - d) / base)
			return -1;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

static void parse_option(char *key, char *val)
{
	static const struct {
		const char *name;
		uint32_t *dst;
	} nums[] = {
		{ "mem", &cfg.mem_mib }, { "rate", &cfg.rate }, { "seed", &cfg.seed },
		{ "verify", &cfg.verify }, { "report_ms", &cfg.report_ms },
		{ "fill", &cfg.fill },
	};

	if (str_eq(key, "pattern")) {
		for (uint32_t i = 0; i < sizeof(pattern_names) / sizeof(pattern_names[0]); i++) {
			if (str_eq(val, pattern_names[i])) {
				cfg.pattern = (enum pattern)i;
				return;
			}
		}
		warn("bad pattern=", val);
		return;
	}
	for (uint32_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		if (str_eq(key, nums[i].name)) {
			if (parse_u32(val, nums[i].dst))
				warn("bad number for ", key);
			return;
		}
	}
	warn("unknown option ", key);
}

static void parse_cmdline(char *s)
{
	while (*s) {
		char *tok, *eq = NULL;

		while (*s == ' ')
			s++;
		tok = s;
		while (*s && *s != ' ') {
			if (*s == '=' && !eq)
				eq = s;
			s++;
		}
		if (*s)
			*s++ = 0;
		if (eq) {
			*eq = 0;
			parse_option(tok, eq + 1);
		}
	}
	if (!cfg.report_ms)
		cfg.report_ms = 1000;
}

/* End of the usable RAM region that holds the kernel (below 4 GiB). */
static uint32_t ram_end(const struct mb_info *mbi)
{
	uint32_t kend = (uint32_t)(uintptr_t)__kernel_end;

	if (mbi->flags & (1u << 6)) {
		uint32_t a = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;

		while (a < end) {
			const struct mb_mmap *m = (const struct mb_mmap *)(uintptr_t)a;
			uint64_t top = m->addr + m->len;

			if (m->type == 1 && m->addr <= kend && top > kend)
				return top > 0xfffff000ull ? 0xfffff000u : (uint32_t)top;
			a += m->size + 4;
		}
	}
	if (mbi->flags & 1u)
		return 0x100000u + mbi->mem_upper * 1024u;
	return 0;
}

static uint32_t align_up(uint32_t v, uint32_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static void layout(uint32_t end)
{
	uint32_t start = align_up((uint32_t)(uintptr_t)__kernel_end, PAGE_SIZE);
	uint32_t avail = end > start + (64u << 10) ? end - start - (64u << 10) : 0;
	uint32_t max = avail / (PAGE_SIZE + 4);
	uint32_t n = cfg.mem_mib ? cfg.mem_mib * (1024u * 1024u / PAGE_SIZE) : max;

	if (cfg.mem_mib > 4095 || n > max) {
		ln_str("TLMG warn mem too large, using MiB=");
		ln_u64(max / 256);
		ln_end();
		n = max;
	}
	if (!n) {
		ln_str("TLMG warn no memory for a working set");
		ln_end();
		hw_halt();
	}
	g.npages = n;
	g.gentab = (uint32_t *)(uintptr_t)start;
	g.base = (uint8_t *)(uintptr_t)align_up(start + n * 4u, PAGE_SIZE);
	memset(g.gentab, 0, n * 4u);
}

void guest_main(uint32_t magic, const struct mb_info *mbi)
{
	uint32_t end = 0;

	/* Copy what we need from the boot info before anything can overwrite it. */
	if (magic == 0x2badb002u && (mbi->flags & (1u << 2))) {
		const char *s = (const char *)(uintptr_t)mbi->cmdline;
		size_t i = 0;

		while (s[i] && i < sizeof(cmdline) - 1) {
			cmdline[i] = s[i];
			i++;
		}
		cmdline[i] = 0;
	}
	if (magic == 0x2badb002u)
		end = ram_end(mbi);

	hw_init();
	if (magic != 0x2badb002u) {
		ln_str("TLMG warn not booted by multiboot, magic=");
		ln_hex(magic);
		ln_end();
		end = 0x100000u + (16u << 20);
	}
	parse_cmdline(cmdline);
	layout(end);

	g.rng = cfg.seed ? cfg.seed : 0x2545f491u;
	g.tsc0 = rdtsc();
	g.report_step = (uint64_t)tsc_per_ms * cfg.report_ms;
	g.next_report = g.tsc0 + g.report_step;

	ln_str("TLMG start pattern=");
	ln_str(pattern_names[cfg.pattern]);
	ln_str(" pages=");
	ln_u64(g.npages);
	ln_str(" base=");
	ln_hex((uint32_t)(uintptr_t)g.base);
	ln_str(" table=");
	ln_hex((uint32_t)(uintptr_t)g.gentab);
	ln_str(" rate=");
	ln_u64(cfg.rate);
	ln_str(" seed=");
	ln_u64(cfg.seed);
	ln_str(" verify=");
	ln_u64(cfg.verify);
	ln_str(" tsc_khz=");
	ln_u64(tsc_per_ms);
	ln_end();

	pace_set(0);
	for (uint32_t p = 0; p < g.npages; p++) {
		report_if_due();
		write_page(p, 1);
	}
	if (cfg.fill) {
		/* Past the working set: one non-zero word per 64 bytes is enough
		 * to make every page non-zero for a migration's zero check. */
		uint32_t *w = (uint32_t *)(void *)(g.base + (size_t)g.npages * PAGE_SIZE);

		for (; (uint32_t)(uintptr_t)w + PAGE_SIZE <= end; w += PAGE_SIZE / 4) {
			report_if_due();
			for (uint32_t i = 0; i < PAGE_SIZE / 4; i += 16)
				w[i] = (uint32_t)(uintptr_t)w ^ 0x9e3779b9u ^ i;
			g.rest++;
		}
	}
	ln_str("TLMG filled pages=");
	ln_u64(g.npages);
	ln_str(" ms=");
	ln_u64(guest_ms(rdtsc()));
	ln_str(" rest=");
	ln_u64(g.rest);
	ln_end();

	mg_setup();
	sp_setup();
	pace_set(cfg.pattern == PAT_IDLE && !cfg.rate ? IDLE_DEFAULT_RATE : cfg.rate);
	for (;;) {
		switch (cfg.pattern) {
		case PAT_MG:
			mg_cycle();
			break;
		case PAT_SP:
			sp_sweep();
			break;
		case PAT_RANDOM:
			random_pass();
			break;
		case PAT_IDLE:
			idle_pass();
			break;
		}
		g.sweeps++;
	}
}
