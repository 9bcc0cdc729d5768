/* uprobe.c - the BPF half of lgf's uprobe source. Loaded by program.py beside this file (the
 * lgf.sources.uprobe package: program.py compiles it with its -D constants, targets.py and tiers.py
 * attach it, events.py and metrics.py read it); the package's docstring (__init__.py) has the
 * design, the tiers and their cost.
 *
 * Every uprobe sits on the emulatable `push %rbp` after a function's stack check (never on the
 * first instruction, never a uretprobe). Go >= 1.17 amd64 ABI: the current g is in R14, the
 * arguments in RAX, RBX, RCX, RDI, ...
 *
 *   cheap tier (always on)    stopTheWorldWithSema(reason) -> startTheWorldWithSema: GC and other
 *                             stop-the-world windows, goid 0; gcStart counts GC cycles
 *   goroutine tier            execute(gp)         a goroutine runs; the one the thread ran before
 *   (armed per process)                           parked (g.atomicstatus, g.waitreason) or was
 *                                                 preempted; one hit per goroutine switch
 *                             sched_switch        (raw tracepoint) the thread blocks in the kernel:
 *                                                 same check, so a park is dated even when the
 *                                                 thread goes idle after it
 *                             ready(gp)           optional: park ends, scheduling latency starts
 *                             exitsyscall0, injectglist, gosched_m, gopreempt_m, newproc's runqput
 *                                                 with ready: the other ways a goroutine becomes
 *                                                 runnable (lgf.sources.uprobe.runnable)
 *                             netpoll(delay)      optional: netpoller call counter
 *                             serverHandler.ServeHTTP(sh, rw, req)   when the binary has it: the
 *                                                 goroutine's current *http.Request (RDI)
 *
 * The kernel side decides: durations are measured here, every duration lands in a log2(us)
 * histogram map, and only stalls of at least THRESHOLD_NS cross the ring buffer to Python. A wait
 * over the threshold is judged here too (judge_stack): its goroutine's stack is walked to its
 * start and matched against the idle sites and request markers of lgf.idle (the `sites` LPM
 * trie); an idle wait is counted (histogram kind STALL_IDLE, counter C_IDLE_WAITS), not reported.
 *
 * Constants come in as -D flags from program.py (Go struct offsets read from the target binary,
 * never from a table here): THRESHOLD_NS; runtime.g offsets G_GOID, G_STATUS, G_WAITREASON, G_M,
 * G_STARTPC, G_SCHED, G_SCHEDLINK (and MAX_INJECT: lgf.sources.uprobe.runnable) and G_SPAN_LO/G_SPAN_LEN (the bytes holding m, atomicstatus and waitreason,
 * read at once); GOBUF_PC, GOBUF_BP; wait reason numbers REASON_IO_WAIT, REASON_PREEMPTED (labels
 * scheduling latency after a preemption) and INTERNAL_LO/INTERNAL_HI (bit masks of the runtime's
 * own wait reasons, 0-63 and 64-127); MAX_FRAMES, RINGBUF_PAGES, MAX_GOROUTINES (a power of two),
 * MAX_RUNTIME_FUNCS, MAX_HIST_PROCS (fast_hists blocks), MAX_SITES (prefixes in the sites trie), REPORT_IDLE (1: emit idle waits too,
 * flagged EV_IDLE), REASON_NO_CASES and LOOP_HEAD_LO/LOOP_HEAD_HI (lgf.idle's select {} and
 * loop-head wait reasons); G_LABELS (g.labels, the goroutine's pprof labels pointer; -1 = not read);
 * STW_REASON_ARG (1: stopTheWorldWithSema takes its stwReason in AX, Go 1.21 on; 0: no argument).
 */
#include <uapi/linux/ptrace.h>

/* STALL_PARK, STALL_RUNNABLE, STALL_STW, STALL_IDLE (stall kinds; STALL_IDLE: histogram only, a
 * park over the threshold judged idle), C_* (counter indexes: C_IDLE_WAITS, C_STACK_CUT...),
 * G_RUNNABLE, G_WAITING, G_SCAN and WAIT_SLOT_SHIFT_0..2 come as -D constants from
 * lgf/bpf/constants.py. */

/* event.flags, -D constants from lgf/bpf/constants.py: EV_STACK_CUT (the walk stopped before the
 * goroutine's start: MAX_FRAMES, a bad read), EV_SCOPE_REQUEST (a frame is a request marker, net/http
 * serverHandler.ServeHTTP...), EV_IDLE (judged idle: emitted only with REPORT_IDLE), EV_LOOP_HEAD
 * (maybe idle by lgf.idle's loop-head rule: Python confirms it on the symbolized stack, where an
 * inlined call shows, and counts it). */

struct gkey {
    u32 tgid;
    u32 hslot; /* in the thread's `running` record: its process's fast_hists block (0: none) */
    u64 g;
};

struct since {
    u64 start_ns;
    u32 reason;
    u32 tid;
};

struct event {
    u64 start_ns;
    u64 end_ns;
    u64 goid;
    u32 pid;
    u32 tid;
    u32 kind;
    u32 reason; /* the wait reason (park, runnable) or the stop-the-world reason */
    u32 nframes;
    u32 flags;    /* EV_* */
    u64 http_req; /* with EV_SCOPE_REQUEST: the *http.Request being served (0: not known) */
    u64 labels;   /* g.labels when the stall ended: the goroutine's pprof labels (trace_context) */
    char comm[16];
    u64 pcs[MAX_FRAMES];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(stw_starts, u32, struct since, 4096);
/* hist, counters, hist_add() and counter_add() come from lgf_maps.h, which the loader puts
 * before this file (BCC rewrites map calls only in the program text, never in an #include). */

static __always_inline int is_internal(u32 reason)
{
    if (reason < 64)
        return (INTERNAL_LO >> reason) & 1;
    if (reason < 128)
        return (INTERNAL_HI >> (reason - 64)) & 1;
    return 0;
}

/* Which binary (and PIE load bias) each process runs; targets.py fills it. `bin` indexes the
 * per-binary tables (runtime_funcs, sites), `hslot` the process's fast_hists block. */
struct proc {
    u32 bin;
    u32 hslot;
    u64 bias;
};
BPF_HASH(procs, u32, struct proc, 16384);

/* The per-switch path's histograms and netpoll counters, without a hash: one array block per
 * process (MAX_HIST_PROCS - 1 of them per program, handed out by program.py), indexed by (kind,
 * wait reason, log2 bucket). The thread's `running` record caches its block's index, so a short
 * wait costs an array lookup and an atomic add where the shared `hist` hash cost a hashed lookup
 * (about 30 ns less per wait end, twice per switch with ready() probed). Anything outside the
 * block (a process without one, a reason >= 64, a wait of over half an hour) goes to `hist`. */
/* FH_KINDS (3: STALL_PARK, STALL_RUNNABLE, STALL_IDLE), FH_REASONS, FH_SLOTS and FH_CELLS (their
 * product) are -D constants from lgf/bpf/constants.py, which decodes the blocks with them. */
struct fast_hist {
    u64 cells[FH_CELLS];
    s64 netpoll_waiting;
    s64 netpoll_ready;
};
BPF_ARRAY(fast_hists, struct fast_hist, MAX_HIST_PROCS);

static __always_inline void hist_fast(u32 tgid, u32 hslot, u32 kind, u32 reason, u64 dur_ns)
{
    u32 slot = bpf_log2l(dur_ns / 1000);
    u32 k = kind == STALL_PARK ? 0 : kind == STALL_RUNNABLE ? 1 : 2;
    struct fast_hist *h = hslot ? fast_hists.lookup(&hslot) : 0;
    if (!h || (kind != STALL_PARK && kind != STALL_RUNNABLE && kind != STALL_IDLE) ||
        reason >= FH_REASONS || slot >= FH_SLOTS) {
        hist_add(tgid, kind, reason, dur_ns);
        return;
    }
    u32 i = (k * FH_REASONS + reason) * FH_SLOTS + slot;
    if (i < FH_CELLS)
        __sync_fetch_and_add(&h->cells[i], 1);
}

static __always_inline void netpoll_add(u32 tgid, u32 hslot, s64 waiting, s64 ready)
{
    struct fast_hist *h = hslot ? fast_hists.lookup(&hslot) : 0;
    if (!h) {
        counter_add(tgid, C_NETPOLL_WAITING, waiting);
        if (ready)
            counter_add(tgid, C_NETPOLL_READY, ready);
        return;
    }
    __sync_fetch_and_add(&h->netpoll_waiting, waiting);
    if (ready)
        __sync_fetch_and_add(&h->netpoll_ready, ready);
}

/* ---- the kernel-side verdict: idle or stall, from the goroutine's own stack ------------------ */

/* Code sites per binary (lgf.bpf.sites: the idle sites and request markers of lgf.idle's
 * IdleRules.pc_ranges), as an LPM trie over (binary, pc) in big-endian bytes: each function's
 * range is split into the fewest aligned prefixes (about 100 per net/http binary), so one lookup
 * classifies a pc, with no loop in BPF (a sorted array would need a binary search nested in the
 * frame loop, and the verifier walks every path of it). The leaf is a bit: SITE_IDLE or
 * SITE_REQUEST, OR-ed over the frames without a branch. */
/* SITE_IDLE, SITE_REQUEST: -D constants from lgf/bpf/constants.py (lgf.bpf.sites fills the trie). */
struct site_key {
    u32 prefixlen; /* 32 (bin) + significant bits of pc */
    u32 bin;       /* big-endian */
    u64 pc;        /* big-endian, unbiased (ELF address) */
};
BPF_LPM_TRIE(sites, struct site_key, u8, MAX_SITES);

static __always_inline int is_loop_head_reason(u32 reason)
{
    if (reason < 64)
        return (LOOP_HEAD_LO >> reason) & 1;
    if (reason < 128)
        return (LOOP_HEAD_HI >> (reason - 64)) & 1;
    return 0;
}

/* The parked goroutine's own user stack, from the context mcall saved in g.sched: its pc, then
 * the return addresses up the frame-pointer chain, each classified by the sites trie; then
 * lgf.idle's rule, in its order:
 *   1. a request marker anywhere: a stall, EV_SCOPE_REQUEST;
 *   2. the walk stopped before the goroutine's start (MAX_FRAMES, a bad read): a stall,
 *      EV_STACK_CUT (the missing frames may be the deciding ones);
 *   3. an idle site anywhere: EV_IDLE;
 *   4. select {} (REASON_NO_CASES): EV_IDLE;
 *   5. a loop-head reason (chan receive, select, sleep, Cond.Wait): EV_LOOP_HEAD, for Python to
 *      judge on the symbolized stack (whether the waiter is the goroutine's start function: an
 *      inlined call is invisible in return addresses);
 *   6. otherwise a stall.
 * Returns the frame count. Run only for waits over the threshold: per frame one user read and one
 * trie lookup; the only state carried across frames is `seen` (4 values), which keeps the
 * verifier's walk of the loop small. */
static __always_inline u32 judge_stack(u32 tgid, u64 gp, u32 reason, u64 *pcs, u32 *flags)
{
    u64 pc = 0, bp = 0;
    bpf_probe_read_user(&pc, sizeof(pc), (void *)(gp + G_SCHED + GOBUF_PC));
    bpf_probe_read_user(&bp, sizeof(bp), (void *)(gp + G_SCHED + GOBUF_BP));
    if (!pc) {
        *flags |= EV_STACK_CUT;
        return 0;
    }
    struct proc *p = procs.lookup(&tgid);
    struct site_key key = {.prefixlen = 96, .bin = __builtin_bswap32(p ? p->bin : 0)};
    u64 bias = p ? p->bias : 0;
    u32 seen = 0;
    u32 n = 0;
    for (int i = 0; i < MAX_FRAMES; i++) {
        pcs[i] = pc;
        n = i + 1;
        /* a return address: pc - 1 lies in the calling function even after a tail call */
        key.pc = __builtin_bswap64(pc - bias - 1);
        u8 *cls = sites.lookup(&key);
        if (cls)
            seen |= *cls;
        if (!bp || i == MAX_FRAMES - 1)
            break;
        u64 frame[2] = {0, 0}; /* saved bp, return address */
        if (bpf_probe_read_user(frame, sizeof(frame), (void *)bp) < 0)
            break; /* bp stays set: the stack is cut */
        if (!frame[1]) {
            bp = 0;
            break;
        }
        pc = frame[1];
        bp = frame[0];
    }
    if (seen & SITE_REQUEST)
        *flags |= EV_SCOPE_REQUEST;
    else if (bp)
        *flags |= EV_STACK_CUT;
    else if ((seen & SITE_IDLE) || reason == REASON_NO_CASES)
        *flags |= EV_IDLE;
    else if (is_loop_head_reason(reason))
        *flags |= EV_LOOP_HEAD;
    return n;
}

static __always_inline void fill_event(struct event *e, u32 kind, u32 tgid, u32 tid, u64 start, u64 end,
                                       u32 reason)
{
    e->start_ns = start;
    e->end_ns = end;
    e->pid = tgid;
    e->tid = tid;
    e->kind = kind;
    e->reason = reason;
    e->goid = 0;
    e->nframes = 0;
    e->flags = 0;
    e->http_req = 0;
    e->labels = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

/* A goroutine's wait of at least THRESHOLD_NS ended: judge it from its stack; an idle park is
 * counted under STALL_IDLE (and dropped unless REPORT_IDLE), anything else is a stall event.
 * `http_req` is the goroutine's latest *http.Request, kept only when the stack proves it is
 * serving one. Returns the kind the histogram should count the wait under, 0 for a loop-head
 * candidate (Python counts it once it has judged it). */
static __always_inline u32 report_wait(u32 kind, u32 tgid, u32 tid, u64 gp, u64 start, u64 end,
                                       u32 reason, u64 http_req)
{
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        counter_add(tgid, C_RINGBUF_LOST, 1);
        return kind;
    }
    fill_event(e, kind, tgid, tid, start, end, reason);
    bpf_probe_read_user(&e->goid, sizeof(e->goid), (void *)(gp + G_GOID));
    u32 flags = 0;
    e->nframes = judge_stack(tgid, gp, reason, e->pcs, &flags);
    if (flags & EV_STACK_CUT)
        counter_add(tgid, C_STACK_CUT, 1);
    u32 hist_kind = kind;
    if (kind != STALL_PARK) {
        flags &= ~(EV_IDLE | EV_LOOP_HEAD); /* scheduling latency is a stall whatever g waits for */
    } else if (flags & EV_LOOP_HEAD) {
        hist_kind = 0;
    } else if (flags & EV_IDLE) {
        counter_add(tgid, C_IDLE_WAITS, 1);
        hist_kind = STALL_IDLE;
        if (!REPORT_IDLE) {
            events.ringbuf_discard(e, 0);
            return hist_kind;
        }
    }
    if (flags & EV_SCOPE_REQUEST)
        e->http_req = http_req;
    e->flags = flags;
#if G_LABELS >= 0
    /* One 8-byte read per reported stall: the labels may change once the goroutine runs. */
    bpf_probe_read_user(&e->labels, sizeof(e->labels), (void *)(gp + G_LABELS));
#endif
    events.ringbuf_submit(e, 0);
    return hist_kind;
}

/* ---- goroutine tier ------------------------------------------------------------------------ */

/* One uprobe hit per goroutine switch: runtime.execute(gp) is where every goroutine starts or
 * resumes running. What the thread ran before is kept in task-local storage (`running`); at the
 * next execute on that thread, or when the thread blocks in the kernel (sched_switch), that
 * goroutine's state says what happened to it: _Gwaiting = it parked (reason in g.waitreason),
 * _Grunnable = it was preempted. So a park's start is known to within the few microseconds it
 * takes the thread to pick other work or go to sleep, with no probe on gopark itself.
 *
 * Cost was measured per piece on this host (bpf_stats): a hash update ~290 ns, a hash lookup
 * ~100 ns, task storage ~100 ns, a user read ~170 ns, an array slot a few ns. Hence task storage
 * for the thread's goroutine and an array of wait slots indexed by a hash of (pid, g) rather
 * than hash maps; a slot taken by another live wait is overwritten and counted
 * (C_WAIT_SLOT_REUSED: raise max_goroutines). */
BPF_TASK_STORAGE(running, struct gkey);

/* The goroutine tier's probe hits per process: lgf's overhead budget (budget.py) prices them.
 * A uprobe hit costs the target about 1 us in the kernel's trap whatever the program does, so
 * hits x the per-hit cost measured on this host is the tier's price; counting must add little to
 * it. Per-CPU maps: no atomic, no cache line bounced between CPUs. on_execute, most of the hits,
 * counts in an array slot indexed by its process's fast_hists block (cached in the thread's
 * `running` record: no hash lookup); the other probes, and processes without a block, count in
 * a per-CPU hash by tgid. Python sums both per process and only ever takes differences. */
BPF_PERCPU_ARRAY(tier_hits_fast, u64, MAX_HIST_PROCS);
BPF_PERCPU_HASH(tier_hits, u32, u64, 16384);

static __always_inline void tier_hit(u32 tgid, u32 hslot)
{
    u64 *n = hslot ? tier_hits_fast.lookup(&hslot) : tier_hits.lookup(&tgid);
    if (n) {
        *n += 1;
        return;
    }
    u64 one = 1; /* a process's first hit on the hash (a race loses one count, never more) */
    if (!hslot)
        tier_hits.update(&tgid, &one);
}

/* ---- the sampler's wake signal (lgf.sources.uprobe.wakes) ----------------------------------
 * In a process of 100,000 goroutines the sampler reads every pass the pages of the gs that changed
 * lately, and the others in turn, seconds apart: a goroutine idle since start-up that wakes and
 * stalls at once was seen only at its page's turn. on_ready, on_injectglist and on_newproc (below:
 * ready, the netpoller's injectglist, a new goroutine) note each goroutine made runnable in its
 * process's ring, one per CPU; the sampler reads the ring every pass and those gs at once. A
 * process has a ring only while wakes.py listens to it (WAKE_PROCS at most), and then those three
 * probes stay on while the rest of the goroutine tier is off (their wait-slot notes are cleared at
 * the next arming, as every note is). WAKE_SLOTS (a power of two) comes as a -D constant. A
 * wake noted as g 0 is one the probes could not name (the netpoller's first goroutine): a quiet
 * process, read in full only now and then, is read in full at once.
 * The heads of every ring are kept together, in `wake_heads` (the ring's `slot` says which): the
 * sampler reads them all in one lookup each pass, and a process's ring only when its head moved,
 * so a process where nothing woke costs no system call between its full passes. */
struct wake_ring {
    u64 slot;           /* this ring's head in wake_heads (wakes.py gives each listened process one) */
    u64 g[WAKE_SLOTS];
};
BPF_PERCPU_HASH(wakes, u32, struct wake_ring, WAKE_PROCS);
struct wake_heads {
    u64 head[WAKE_PROCS]; /* wakes noted on this CPU so far, per slot: the latest is at (head - 1) % WAKE_SLOTS */
};
BPF_PERCPU_ARRAY(wake_heads, struct wake_heads, 1);

static __always_inline void note_wake(struct wake_ring *r, u64 g)
{
    u32 zero = 0;
    struct wake_heads *h = wake_heads.lookup(&zero);
    u64 slot = r->slot;
    if (!h || slot >= WAKE_PROCS)
        return;
    u64 i = h->head[slot]; /* per CPU, and a BPF program is not preempted by another on its CPU here */
    r->g[i & (WAKE_SLOTS - 1)] = g;
    h->head[slot] = i + 1; /* after the slot: the sampler reads the heads first, then the ring */
}

static __always_inline void note_wake_of(u32 tgid, u64 g)
{
    struct wake_ring *r = wakes.lookup(&tgid);
    if (r)
        note_wake(r, g);
}

/* struct wait.kind: WAIT_PARK, WAIT_RUNNABLE (-D constants from lgf/bpf/constants.py; 0 = none) */
struct wait {
    u64 g;
    u64 start_ns;
    u32 tgid;
    u32 tid;
    u16 reason;
    u16 kind;  /* 0 = no wait open */
    u32 owner; /* the thread that last started running g: only its notes about g count */
    u64 http_req; /* the *http.Request g last began serving (on_serve_http), 0: none */
    u32 hslot;    /* g's process's fast_hists block, copied when the slot is claimed */
    u32 pad;
};
BPF_ARRAY(waits, struct wait, MAX_GOROUTINES); /* MAX_GOROUTINES: a power of two */

static __always_inline struct wait *wait_slot(u32 tgid, u64 g)
{
    u32 idx = (u32)((g >> WAIT_SLOT_SHIFT_0) ^ (g >> WAIT_SLOT_SHIFT_1) ^ ((u64)tgid << WAIT_SLOT_SHIFT_2))
              & (MAX_GOROUTINES - 1);
    return waits.lookup(&idx);
}

static __always_inline void open_wait(struct gkey *k, u16 kind, u16 reason, u32 tid, u64 now)
{
    struct wait *w = wait_slot(k->tgid, k->g);
    if (!w)
        return;
    if (w->g != k->g || w->tgid != k->tgid || w->owner != tid)
        return; /* this thread's record of the goroutine is stale: it has run elsewhere since */
    if (w->kind) {
        /* Already open: keep the earlier record, except that a park now seen replaces a
         * runnable record (the goroutine must have run in between). */
        if (!(kind == WAIT_PARK && w->kind == WAIT_RUNNABLE))
            return;
    }
    w->start_ns = now;
    w->tid = tid;
    w->reason = reason;
    w->kind = kind;
}

/* The runtime's own goroutines (GC workers, sweeper, scavenger, finalizer, GOMAXPROCS updater...)
 * are told apart as Go's isSystemGoroutine does: their start function (g.startpc) is in package
 * runtime (runtime.main excepted). program.py fills runtime_funcs with those entry addresses, per
 * binary, and targets.py fills procs with which binary (and PIE load bias) each process runs. */
struct fkey {
    u32 bin;
    u32 pad;
    u64 addr;
};
BPF_HASH(runtime_funcs, struct fkey, u8, MAX_RUNTIME_FUNCS);

static __always_inline int is_runtime_goroutine(u32 tgid, u64 g)
{
    struct proc *p = procs.lookup(&tgid);
    if (!p)
        return 0;
    u64 startpc = 0;
    bpf_probe_read_user(&startpc, sizeof(startpc), (void *)(g + G_STARTPC));
    struct fkey k = {.bin = p->bin, .addr = startpc - p->bias};
    return runtime_funcs.lookup(&k) != 0;
}

/* The runtime's own goroutines that wait with an ordinary reason (a "sleep", a channel) are
 * dropped when their wait ends, and only for waits of RUNTIME_CHECK_NS or more: the check costs
 * three lookups and a user read, and it is short waits that are frequent. */
#define RUNTIME_CHECK_NS 1000000

/* A wait of g (kind WAIT_PARK -> STALL_PARK, WAIT_RUNNABLE -> STALL_RUNNABLE) ends now. The
 * common case, a short wait, costs one histogram update; everything else is behind the
 * threshold check. */
static __always_inline void end_wait(u32 stall, struct gkey *k, u32 hslot, struct wait *w, u32 tid,
                                     u64 now)
{
    u64 dur = now - w->start_ns;
    if (dur >= RUNTIME_CHECK_NS && is_runtime_goroutine(k->tgid, k->g))
        return;
    u32 hist_kind = stall;
    if (dur >= THRESHOLD_NS)
        hist_kind = report_wait(stall, k->tgid, tid, k->g, w->start_ns, now, w->reason, w->http_req);
    if (hist_kind)
        hist_fast(k->tgid, hslot, hist_kind, w->reason, dur);
    if (stall == STALL_PARK && w->reason == REASON_IO_WAIT)
        netpoll_add(k->tgid, hslot, -1, 1);
}

/* Lays down the goroutine the thread ran before, if it parked or was preempted. `state` is the
 * thread's task-local record; it is cleared once its goroutine has left the thread. */
static __always_inline void note_switch_out(struct gkey *state, u32 tid, u64 now, u64 next_g,
                                            int in_kernel_switch)
{
    struct gkey k = *state;
    if (!k.g || k.g == next_g)
        return; /* nothing recorded, or the same goroutine again */
    /* g.m (to tell a real park from a GC wait on the goroutine's own thread), g.atomicstatus and
     * g.waitreason: one user read of the span holding all three (program.py sets G_SPAN_LO/LEN) */
    u8 span[G_SPAN_LEN];
    if (bpf_probe_read_user(span, sizeof(span), (void *)(k.g + G_SPAN_LO)) < 0)
        return;
    u32 status = *(u32 *)(span + G_STATUS - G_SPAN_LO);
    u64 m = *(u64 *)(span + G_M - G_SPAN_LO);
    u8 reason = span[G_WAITREASON - G_SPAN_LO];
    status &= ~G_SCAN;
    if (m)
        return; /* still on its thread: _Gwaiting set around a GC wait on its own stack (stopping
                 * the world, mark termination), not a park; a real park drops g.m first */
    if (status != G_WAITING && status != G_RUNNABLE)
        return; /* _Grunning (the kernel preempted the thread) or _Gsyscall: still its thread */
    if (status == G_RUNNABLE && in_kernel_switch)
        return; /* Most likely the kernel switched the thread out inside execute() itself, after
                 * our probe and before execute marks the goroutine running (returning from the
                 * uprobe trap is a preemption point). A goroutine preempted by Go is seen at the
                 * thread's next execute instead. */
    state->g = 0;
    if (status == G_RUNNABLE) {
        open_wait(&k, WAIT_RUNNABLE, REASON_PREEMPTED, tid, now);
        return;
    }
    if (is_internal(reason))
        return; /* GC workers, sweeper, scavenger, finalizer...: the runtime's own idling */
    open_wait(&k, WAIT_PARK, reason, tid, now);
    if (reason == REASON_IO_WAIT)
        netpoll_add(k.tgid, k.hslot, 1, 0);
}

/* Attached by tiers.py only while some process has its goroutine tier on (not the
 * RAW_TRACEPOINT_PROBE macro: BCC would attach that at load, host-wide, for nothing). */
int on_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
    /* current = the task being switched out; no storage = not a traced Go thread */
    struct gkey *state = running.task_storage_get((void *)bpf_get_current_task_btf(), 0, 0);
    if (state)
        note_switch_out(state, (u32)bpf_get_current_pid_tgid(), bpf_ktime_get_ns(), 0, 1);
    return 0;
}

/* ---- scheduling latency from every way a goroutine becomes runnable ------------------------
 * ready() above is one way; these are the others (lgf.sources.uprobe.runnable lists the functions per Go
 * version and why). Each dates the start of g's wait for a P; on_execute ends it as it ends one
 * after ready(), and reports it with `from` in the high byte of the reason. */
/* FROM_READY, FROM_SYSCALL_EXIT, FROM_NETPOLL, FROM_PREEMPT, FROM_GOSCHED, FROM_NEWPROC and NO_REASON
 * (the goroutine had not parked: no wait reason) are -D constants from lgf/bpf/constants.py
 * (RUNNABLE_FROM), which lgf.sources.uprobe.runnable decodes with. */

/* Opens g's wait for a P in its slot `w`, from now, with `reason` (NO_REASON: it had not parked).
 * Any record of another goroutine in the slot is replaced (and counted, if it was open). */
static __always_inline void open_runnable(struct wait *w, u32 tgid, u64 g, u16 from, u16 reason, u64 now)
{
    if (w->g != g || w->tgid != tgid) {
        if (w->kind)
            counter_add(tgid, C_WAIT_SLOT_REUSED, 1);
        struct proc *p = procs.lookup(&tgid); /* its histogram block, as on_execute claims a slot */
        w->g = g;
        w->tgid = tgid;
        w->http_req = 0;
        w->hslot = p ? p->hslot : 0;
        w->owner = 0;
    }
    w->start_ns = now;
    w->tid = (u32)bpf_get_current_pid_tgid();
    w->reason = reason | (from << 8);
    w->kind = WAIT_RUNNABLE;
}

/* g had no park open (it was running, in a syscall, or is new): its wait for a P starts now. */
static __always_inline void made_runnable_quiet(struct wait *w, u32 tgid, u64 g, u16 from, u64 now)
{
    open_runnable(w, tgid, g, from, NO_REASON, now);
}

/* g of process tgid is runnable from now, made so by `from`. A park still open for it ends now
 * (as in on_ready); any other record of g is stale (g was running, in a syscall, or new). */
static __always_inline void made_runnable(u32 tgid, u64 g, u16 from, u64 now)
{
    struct gkey k = {.tgid = tgid, .g = g};
    struct wait *w = wait_slot(tgid, g);
    if (!w || !g)
        return;
    u16 reason = NO_REASON;
    if (w->g == g && w->tgid == tgid && w->kind == WAIT_PARK) {
        struct wait ww = *w;
        end_wait(STALL_PARK, &k, ww.hslot, &ww, ww.tid, now);
        reason = ww.reason & 0xff;
    }
    open_runnable(w, tgid, g, from, reason, now);
}

/* exitsyscall0(gp) / exitsyscallNoP(gp): exitsyscall found no P; gp goes to the global queue. */
int on_exitsyscall_slow(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->ax, FROM_SYSCALL_EXIT, bpf_ktime_get_ns());
    return 0;
}

/* injectglist(glist *gList): every goroutine on the list (gList.head, then g.schedlink) becomes
 * runnable; at most MAX_INJECT of one list are dated here. The loop stays small for the verifier
 * (made_runnable, with the stack walk it may report, unrolled 64 times took 1.6 s to load, and
 * BCC 0.26 cannot pass bpf_loop a callback): a goroutine with a park open only gets the instant
 * noted in `woken`; on_execute ends the park there and reports the wait for a P from there. */
BPF_HASH(woken, struct gkey, u64, 16384);

int on_injectglist(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 now = bpf_ktime_get_ns();
    u64 g = 0;
    bpf_probe_read_user(&g, sizeof(g), (void *)ctx->ax);
    struct wake_ring *r = wakes.lookup(&tgid);
    if (r && !g) /* findRunnable pops the netpoller's first goroutine before it injects the rest:
                  * one woke, unnamed (0: the sampler reads a quiet process in full at once) */
        note_wake(r, 0);
    for (int i = 0; i < MAX_INJECT && g; i++) {
        if (r)
            note_wake(r, g);
        struct gkey k = {.tgid = tgid, .g = g};
        struct wait *w = wait_slot(tgid, g);
        if (w && w->g == g && w->tgid == tgid && w->kind == WAIT_PARK)
            woken.update(&k, &now);
        else if (w)
            made_runnable_quiet(w, tgid, g, FROM_NETPOLL, now);
        u64 next = 0;
        if (bpf_probe_read_user(&next, sizeof(next), (void *)(g + G_SCHEDLINK)) < 0)
            break;
        g = next;
    }
    return 0;
}

/* on_execute's half: g still parked but woken by injectglist at *t: the park ended there, and the
 * wait for a P ran from there to now. Returns 0 when injectglist did not see g. */
static __always_inline int end_woken(struct gkey *k, u32 hslot, struct wait *ww, u32 tid, u64 now)
{
    u64 *t = woken.lookup(k);
    if (!t)
        return 0;
    u64 at = *t;
    woken.delete(k);
    if (at < ww->start_ns || at > now)
        return 0; /* a note from an earlier park of g */
    end_wait(STALL_PARK, k, hslot, ww, ww->tid, at);
    u16 reason = ww->reason & 0xff;
    ww->start_ns = at;
    ww->reason = reason | ((reason == REASON_IO_WAIT ? FROM_NETPOLL : FROM_READY) << 8);
    end_wait(STALL_RUNNABLE, k, hslot, ww, tid, now);
    return 1;
}

int on_execute(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct gkey k = {.tgid = id >> 32, .g = ctx->ax};
    u64 now = bpf_ktime_get_ns();
    struct gkey *state = running.task_storage_get((void *)bpf_get_current_task_btf(), 0,
                                                  BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!state)
        tier_hit(k.tgid, 0);
    u32 hslot = 0;
    if (state) {
        if (state->tgid != k.tgid) { /* the thread's first switch: which histogram block */
            struct proc *p = procs.lookup(&k.tgid);
            state->hslot = p ? p->hslot : 0;
        }
        tier_hit(k.tgid, state->hslot);
        note_switch_out(state, tid, now, k.g, 0);
        state->tgid = k.tgid;
        state->g = k.g;
        hslot = state->hslot;
    }
    struct wait *w = wait_slot(k.tgid, k.g);
    if (!w)
        return 0;
    struct wait ww = *w;
    if (ww.g != k.g || ww.tgid != k.tgid) {
        if (ww.kind)
            counter_add(k.tgid, C_WAIT_SLOT_REUSED, 1); /* another goroutine's open wait is lost */
        w->g = k.g; /* claim the slot: this thread runs g now */
        w->tgid = k.tgid;
        w->http_req = 0;
        w->hslot = hslot;
        w->owner = tid;
        w->kind = 0;
        return 0;
    }
    w->owner = tid;
    w->kind = 0;
    if (ww.kind == WAIT_RUNNABLE)
        end_wait(STALL_RUNNABLE, &k, hslot, &ww, tid, now);
    else if (ww.kind == WAIT_PARK && !end_woken(&k, hslot, &ww, tid, now))
        /* Still parked: woken without ready() (the netpoller's and the GC's injectglist), or
         * ready() is not probed (sched_latency = false). The park ends now that it runs. */
        end_wait(STALL_PARK, &k, hslot, &ww, ww.tid, now);
    return 0;
}

int on_ready(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    struct gkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .g = ctx->ax};
    note_wake_of(k.tgid, k.g);
    struct wait *w = wait_slot(k.tgid, k.g);
    if (!w || w->kind != WAIT_PARK || w->g != k.g || w->tgid != k.tgid)
        return 0;
    struct wait ww = *w;
    u64 now = bpf_ktime_get_ns();
    end_wait(STALL_PARK, &k, ww.hslot, &ww, ww.tid, now);
    w->kind = WAIT_RUNNABLE; /* scheduling latency starts: made runnable, not yet running */
    w->start_ns = now;
    return 0;
}

/* gosched_m(gp), goschedguarded_m(gp): runtime.Gosched; gopreempt_m(gp): a preemption. */
int on_gosched(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->ax, FROM_GOSCHED, bpf_ktime_get_ns());
    return 0;
}

int on_gosched_guarded(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->ax, FROM_GOSCHED, bpf_ktime_get_ns());
    return 0;
}

int on_preempt(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->ax, FROM_PREEMPT, bpf_ktime_get_ns());
    return 0;
}

/* goschedImpl(gp, preempted bool), where gopreempt_m was inlined: BL is `preempted`. */
int on_gosched_impl(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->ax, (ctx->bx & 0xff) ? FROM_PREEMPT : FROM_GOSCHED,
                  bpf_ktime_get_ns());
    return 0;
}

/* At newproc.func1's `CALL runtime.runqput(pp, newg, next)`: RBX = the new goroutine. */
int on_newproc(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    note_wake_of(bpf_get_current_pid_tgid() >> 32, ctx->bx);
    made_runnable(bpf_get_current_pid_tgid() >> 32, ctx->bx, FROM_NEWPROC, bpf_ktime_get_ns());
    return 0;
}

int on_netpoll(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    counter_add(bpf_get_current_pid_tgid() >> 32, C_NETPOLL_CALLS, 1);
    return 0;
}

/* net/http's serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request): sh (one
 * pointer) in RAX, rw (an interface: two words) in RBX and RCX, req in RDI (checked against the
 * disassembly of Go 1.21 to 1.27: the function reads req.Method at 0(DI)). One array slot write
 * per request, in the goroutine's own wait slot: a stall whose stack holds this frame is serving
 * that request. Attached only while the goroutine tier is. */
int on_serve_http(struct pt_regs *ctx)
{
    tier_hit(bpf_get_current_pid_tgid() >> 32, 0);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 g = ctx->r14;
    struct wait *w = wait_slot(tgid, g);
    if (w && w->g == g && w->tgid == tgid)
        w->http_req = ctx->di;
    return 0;
}

/* Calibration, not the tier (budget.py): attached for a moment to a `push %rbp` in lgf's own
 * process (the instruction every Go probe sits on) to measure what one hit costs on this host.
 * Besides the trap it does what a typical on_execute does, so the figure prices the tier's work
 * and not only the trap: the count, a task-storage lookup, one user read of the span of runtime.g
 * a switch reads (here from the caller's stack), a wait slot's lookup and a histogram add. It
 * leaves no trace: no slot is written, the histogram is block 0 (never read), and lgf's own count
 * is deleted after. */
int on_calibrate(struct pt_regs *ctx)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    tier_hit(tgid, 0);
    running.task_storage_get((void *)bpf_get_current_task_btf(), 0, 0);
    u8 span[G_SPAN_LEN];
    bpf_probe_read_user(span, sizeof(span), (void *)ctx->sp);
    struct wait *w = wait_slot(tgid, ctx->sp);
    u32 zero = 0;
    struct fast_hist *h = fast_hists.lookup(&zero);
    if (w && h)
        __sync_fetch_and_add(&h->cells[span[0] & 7], 1);
    return 0;
}

/* ---- cheap tier: rare runtime functions ---------------------------------------------------- */

int on_stw_stop(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    /* Go 1.20 and older call it without a reason: AX is whatever the caller left there. */
    struct since s = {.start_ns = bpf_ktime_get_ns(), .reason = STW_REASON_ARG ? ctx->ax & 0xff : 0,
                      .tid = (u32)id};
    stw_starts.update(&tgid, &s);
    return 0;
}

int on_stw_start(struct pt_regs *ctx)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct since *found = stw_starts.lookup(&tgid);
    if (!found)
        return 0;
    struct since s = *found;
    stw_starts.delete(&tgid);
    u64 now = bpf_ktime_get_ns();
    u64 dur = now - s.start_ns;
    counter_add(tgid, C_STW_COUNT, 1);
    hist_add(tgid, STALL_STW, s.reason, dur);
    if (dur < THRESHOLD_NS)
        return 0;
    /* the whole process: no goroutine, no stack, always a stall */
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        counter_add(tgid, C_RINGBUF_LOST, 1);
        return 0;
    }
    fill_event(e, STALL_STW, tgid, s.tid, s.start_ns, now, s.reason);
    events.ringbuf_submit(e, 0);
    return 0;
}

int on_gc_start(struct pt_regs *ctx)
{
    counter_add(bpf_get_current_pid_tgid() >> 32, C_GC_CYCLES, 1);
    return 0;
}
