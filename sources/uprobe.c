/* uprobe.c - the BPF half of lgf's uprobe source. Loaded, configured and attached by uprobe.py
 * (beside this file); read that module's docstring for the design, the tiers and their cost.
 *
 * Every uprobe sits on the emulatable `push %rbp` after a function's stack check (never on the
 * first instruction, never a uretprobe). Go >= 1.17 amd64 ABI: the current g is in R14, the
 * arguments in RAX, RBX, RCX, ...
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
 *                             netpoll(delay)      optional: netpoller call counter
 *
 * The kernel side decides: durations are measured here, every duration lands in a log2(us)
 * histogram map, and only stalls of at least THRESHOLD_NS cross the ring buffer to Python.
 *
 * Constants come in as -D flags from uprobe.py (Go struct offsets read from the target binary,
 * never from a table here): THRESHOLD_NS; runtime.g offsets G_GOID, G_STATUS, G_WAITREASON, G_M,
 * G_STARTPC, G_SCHED and G_SPAN_LO/G_SPAN_LEN (the bytes holding m, atomicstatus and waitreason,
 * read at once); GOBUF_PC, GOBUF_BP; wait reason numbers REASON_IO_WAIT, REASON_PREEMPTED (labels
 * scheduling latency after a preemption) and INTERNAL_LO/INTERNAL_HI (bit masks of the runtime's
 * own wait reasons, 0-63 and 64-127); MAX_FRAMES, RINGBUF_PAGES, MAX_GOROUTINES (a power of two),
 * MAX_RUNTIME_FUNCS; G_LABELS (g.labels, the goroutine's pprof labels pointer; -1 = not read).
 */
#include <uapi/linux/ptrace.h>

#define STALL_PARK 1     /* blocked until made runnable (or until running, when woken by netpoll) */
#define STALL_RUNNABLE 2 /* runnable until running: scheduling latency */
#define STALL_STW 3      /* stop-the-world window of the whole process */

#define C_NETPOLL_CALLS 0
#define C_NETPOLL_READY 1
#define C_NETPOLL_WAITING 2
#define C_GC_CYCLES 3
#define C_STW_COUNT 4
#define C_RINGBUF_LOST 5
#define C_WAIT_SLOT_REUSED 6

struct gkey {
    u32 tgid;
    u32 pad;
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
    u32 pad;
    u64 labels; /* g.labels when the stall ended: the goroutine's pprof labels (trace_context) */
    char comm[16];
    u64 pcs[MAX_FRAMES];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(stw_starts, u32, struct since, 4096);
/* hist, counters, hist_add() and counter_add() come from lgf_maps.h, which lgf.bpf.loader.load puts
 * before this file (BCC rewrites map calls only in the program text, never in an #include). */

static __always_inline int is_internal(u32 reason)
{
    if (reason < 64)
        return (INTERNAL_LO >> reason) & 1;
    if (reason < 128)
        return (INTERNAL_HI >> (reason - 64)) & 1;
    return 0;
}

/* The parked goroutine's own user stack, from the context mcall saved in g.sched: its pc, then
 * the return addresses up the frame-pointer chain. Read only for events over the threshold. */
static __always_inline u32 walk_saved_stack(u64 gp, u64 *pcs)
{
    u64 pc = 0, bp = 0;
    bpf_probe_read_user(&pc, sizeof(pc), (void *)(gp + G_SCHED + GOBUF_PC));
    bpf_probe_read_user(&bp, sizeof(bp), (void *)(gp + G_SCHED + GOBUF_BP));
    if (!pc)
        return 0;
    pcs[0] = pc;
    u32 n = 1;
#pragma unroll
    for (int i = 1; i < MAX_FRAMES; i++) {
        u64 frame[2] = {0, 0}; /* saved bp, return address */
        if (!bp || bpf_probe_read_user(frame, sizeof(frame), (void *)bp) < 0 || !frame[1])
            break;
        pcs[i] = frame[1];
        n = i + 1;
        bp = frame[0];
    }
    return n;
}

static __always_inline void emit(u32 kind, u32 tgid, u32 tid, u64 gp, u64 start, u64 end, u32 reason)
{
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        counter_add(tgid, C_RINGBUF_LOST, 1);
        return;
    }
    e->start_ns = start;
    e->end_ns = end;
    e->pid = tgid;
    e->tid = tid;
    e->kind = kind;
    e->reason = reason;
    e->goid = 0;
    e->nframes = 0;
    e->pad = 0;
    e->labels = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    if (gp) {
        bpf_probe_read_user(&e->goid, sizeof(e->goid), (void *)(gp + G_GOID));
        e->nframes = walk_saved_stack(gp, e->pcs);
#if G_LABELS >= 0
        /* One 8-byte read per reported stall: the labels may change once the goroutine runs. */
        bpf_probe_read_user(&e->labels, sizeof(e->labels), (void *)(gp + G_LABELS));
#endif
    }
    events.ringbuf_submit(e, 0);
}

/* ---- goroutine tier ------------------------------------------------------------------------ */

/* Go's goroutine states (runtime2.go; unchanged since Go 1.0). */
#define G_RUNNABLE 1
#define G_WAITING 4
#define G_SCAN 0x1000

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

#define WAIT_PARK 1
#define WAIT_RUNNABLE 2
struct wait {
    u64 g;
    u64 start_ns;
    u32 tgid;
    u32 tid;
    u16 reason;
    u16 kind;  /* 0 = no wait open */
    u32 owner; /* the thread that last started running g: only its notes about g count */
};
BPF_ARRAY(waits, struct wait, MAX_GOROUTINES); /* MAX_GOROUTINES: a power of two */

static __always_inline struct wait *wait_slot(u32 tgid, u64 g)
{
    u32 idx = (u32)((g >> 6) ^ (g >> 22) ^ ((u64)tgid << 7)) & (MAX_GOROUTINES - 1);
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
    w->g = k->g;
    w->tgid = k->tgid;
    w->start_ns = now;
    w->tid = tid;
    w->reason = reason;
    w->kind = kind;
}

/* The runtime's own goroutines (GC workers, sweeper, scavenger, finalizer, GOMAXPROCS updater...)
 * are told apart as Go's isSystemGoroutine does: their start function (g.startpc) is in package
 * runtime (runtime.main excepted). uprobe.py fills runtime_funcs with those entry addresses, per
 * binary, and procs with which binary (and PIE load bias) each process runs. */
struct proc {
    u32 bin;
    u32 pad;
    u64 bias;
};
struct fkey {
    u32 bin;
    u32 pad;
    u64 addr;
};
BPF_HASH(procs, u32, struct proc, 16384);
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

static __always_inline void end_park(struct gkey *k, struct wait *p, u64 now)
{
    u64 dur = now - p->start_ns;
    if (dur >= RUNTIME_CHECK_NS && is_runtime_goroutine(k->tgid, k->g))
        return;
    hist_add(k->tgid, STALL_PARK, p->reason, dur);
    if (p->reason == REASON_IO_WAIT) {
        counter_add(k->tgid, C_NETPOLL_WAITING, -1);
        counter_add(k->tgid, C_NETPOLL_READY, 1);
    }
    if (dur >= THRESHOLD_NS)
        emit(STALL_PARK, k->tgid, p->tid, k->g, p->start_ns, now, p->reason);
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
     * g.waitreason: one user read of the span holding all three (uprobe.py sets G_SPAN_LO/LEN) */
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
        counter_add(k.tgid, C_NETPOLL_WAITING, 1);
}

/* Attached by uprobe.py only while some process has its goroutine tier on (not the
 * RAW_TRACEPOINT_PROBE macro: BCC would attach that at load, host-wide, for nothing). */
int on_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
    /* current = the task being switched out; no storage = not a traced Go thread */
    struct gkey *state = running.task_storage_get((void *)bpf_get_current_task_btf(), 0, 0);
    if (state)
        note_switch_out(state, (u32)bpf_get_current_pid_tgid(), bpf_ktime_get_ns(), 0, 1);
    return 0;
}

int on_execute(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct gkey k = {.tgid = id >> 32, .g = ctx->ax};
    u64 now = bpf_ktime_get_ns();
    struct gkey *state = running.task_storage_get((void *)bpf_get_current_task_btf(), 0,
                                                  BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (state) {
        note_switch_out(state, tid, now, k.g, 0);
        state->tgid = k.tgid;
        state->g = k.g;
    }
    struct wait *w = wait_slot(k.tgid, k.g);
    if (!w)
        return 0;
    struct wait ww = *w;
    if (w->kind && (w->g != k.g || w->tgid != k.tgid))
        counter_add(k.tgid, C_WAIT_SLOT_REUSED, 1); /* another goroutine's open wait is lost */
    w->g = k.g; /* claim the slot: this thread runs g now */
    w->tgid = k.tgid;
    w->owner = tid;
    w->kind = 0;
    if (!ww.kind || ww.g != k.g || ww.tgid != k.tgid)
        return 0;
    if (ww.kind == WAIT_RUNNABLE) {
        u64 dur = now - ww.start_ns;
        if (dur >= RUNTIME_CHECK_NS && is_runtime_goroutine(k.tgid, k.g))
            return 0;
        hist_add(k.tgid, STALL_RUNNABLE, ww.reason, dur);
        if (dur >= THRESHOLD_NS)
            emit(STALL_RUNNABLE, k.tgid, tid, k.g, ww.start_ns, now, ww.reason);
        return 0;
    }
    /* Still parked: woken without ready() (the netpoller's and the GC's injectglist), or ready()
     * is not probed (sched_latency = false). The park ends now that it runs. */
    end_park(&k, &ww, now);
    return 0;
}

int on_ready(struct pt_regs *ctx)
{
    struct gkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .g = ctx->ax};
    struct wait *w = wait_slot(k.tgid, k.g);
    if (!w || w->kind != WAIT_PARK || w->g != k.g || w->tgid != k.tgid)
        return 0;
    struct wait ww = *w;
    u64 now = bpf_ktime_get_ns();
    end_park(&k, &ww, now);
    w->kind = WAIT_RUNNABLE; /* scheduling latency starts: made runnable, not yet running */
    w->start_ns = now;
    return 0;
}

int on_netpoll(struct pt_regs *ctx)
{
    counter_add(bpf_get_current_pid_tgid() >> 32, C_NETPOLL_CALLS, 1);
    return 0;
}

/* ---- cheap tier: rare runtime functions ---------------------------------------------------- */

int on_stw_stop(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct since s = {.start_ns = bpf_ktime_get_ns(), .reason = ctx->ax & 0xff, .tid = (u32)id};
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
    if (dur >= THRESHOLD_NS)
        emit(STALL_STW, tgid, s.tid, 0, s.start_ns, now, s.reason);
    return 0;
}

int on_gc_start(struct pt_regs *ctx)
{
    counter_add(bpf_get_current_pid_tgid() >> 32, C_GC_CYCLES, 1);
    return 0;
}
