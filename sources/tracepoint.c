/* tracepoint.c - the BPF half of lgf's tracepoint source: blocking syscalls of target Go processes.
 * Loaded, configured and attached by tracepoint.py (beside this file); its docstring has the
 * design and the cost.
 *
 * The sys_enter / sys_exit raw tracepoints (raw: cheaper than raw_syscalls:*, and they need no
 * tracefs for their format), filtered in the kernel by the `targets` map (tgid -> how to
 * find the goroutine). At exit, the thread's current g is read from thread-local storage:
 * task->thread.fsbase - 8 for a pure-Go binary (FSBASE_OFF comes from the running kernel's BTF,
 * never from headers), and goid from g at the per-process offset in `targets`. A thread on g0
 * (goid 0) is the runtime's own: an idle M in futex, the netpoller in epoll_wait, sysmon's
 * nanosleep. Those are not stalls and are neither reported nor counted.
 *
 * Constants (-D): THRESHOLD_NS, FSBASE_OFF, MAX_FRAMES, RINGBUF_PAGES.
 */
#include <uapi/linux/ptrace.h>

/* STALL_SYSCALL and C_RINGBUF_LOST come as -D constants from lgf/bpf/constants.py. */

struct target {
    u32 g_goid;   /* offset of goid in runtime.g for this process's Go version */
    u32 tls_g;    /* 1: g is at fsbase - 8 (pure Go); 0: unknown (cgo), goid not read */
};

struct enter {
    u64 start_ns;
    u32 nr;
    u32 restarting; /* interrupted by a signal; the kernel restarts it after the handler */
};

/* Kernel-internal "restart me" returns, visible at sys_exit before signal delivery. A signal
 * (Go sends SIGURG to preempt) splits one blocking call into two: keep the first start. */
#define NR_RESTART_SYSCALL 219
#define NR_RT_SIGRETURN 15 /* ends the signal handler in between: part of the same wait */
static __always_inline int will_restart(long ret)
{
    return ret == -512 || ret == -513 || ret == -514 || ret == -516;
}

struct event {
    u64 start_ns;
    u64 end_ns;
    u64 goid;
    u32 pid;
    u32 tid;
    u32 kind;
    u32 reason; /* syscall number */
    u32 nframes;
    s32 ret;
    char comm[16];
    u64 pcs[MAX_FRAMES];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(targets, u32, struct target, 16384);
/* The syscall in flight, per thread, in task storage: ~100 ns against ~300 ns for a hash update
 * and ~200 ns for the delete, paid on every syscall of a target (measured with bpf_stats). */
BPF_TASK_STORAGE(inflight, struct enter);
/* hist, counters, hist_add() and counter_add() come from lgf_maps.h, which lgf.bpf.loader.load puts
 * before this file (BCC rewrites map calls only in the program text, never in an #include). */

RAW_TRACEPOINT_PROBE(sys_enter)
{
    /* args: (struct pt_regs *regs, long id) */
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!targets.lookup(&tgid))
        return 0;
    u32 nr = ctx->args[1];
    struct enter *e = inflight.task_storage_get((void *)bpf_get_current_task_btf(), 0,
                                                BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!e)
        return 0;
    if (e->start_ns && e->restarting) {
        if (nr == NR_RT_SIGRETURN)
            return 0; /* the handler returns; the interrupted call comes next */
        if (nr == e->nr || nr == NR_RESTART_SYSCALL) {
            e->restarting = 0; /* the same call, resumed after the signal handler */
            return 0;
        }
    }
    e->start_ns = bpf_ktime_get_ns();
    e->nr = nr;
    e->restarting = 0;
    return 0;
}

static __always_inline u64 current_goid(struct target *t)
{
    if (!t->tls_g)
        return 0;
    void *task = (void *)bpf_get_current_task(); /* fields at BTF offsets only, never via headers */
    u64 fsbase = 0, g = 0, goid = 0;
    bpf_probe_read_kernel(&fsbase, sizeof(fsbase), task + FSBASE_OFF);
    if (!fsbase)
        return 0;
    bpf_probe_read_user(&g, sizeof(g), (void *)(fsbase - 8));
    if (!g)
        return 0;
    bpf_probe_read_user(&goid, sizeof(goid), (void *)(g + t->g_goid));
    return goid;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    /* args: (struct pt_regs *regs, long ret) */
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct enter *found = inflight.task_storage_get((void *)bpf_get_current_task_btf(), 0, 0);
    if (!found || !found->start_ns)
        return 0;
    if (found->restarting)
        return 0; /* rt_sigreturn's exit, while the interrupted call waits to be restarted */
    if (will_restart((long)ctx->args[1])) {
        found->restarting = 1;
        return 0;
    }
    struct enter e = *found;
    found->start_ns = 0;
    u32 tgid = id >> 32;
    struct target *t = targets.lookup(&tgid);
    if (!t)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 dur = now - e.start_ns;
    u64 goid = current_goid(t);
    if (!goid && t->tls_g)
        return 0; /* on g0: the runtime's own thread idling, not a goroutine waiting */
    hist_add(tgid, STALL_SYSCALL, e.nr, dur);
    if (dur < THRESHOLD_NS)
        return 0;
    struct event *ev = events.ringbuf_reserve(sizeof(struct event));
    if (!ev) {
        counter_add(tgid, C_RINGBUF_LOST, 1);
        return 0;
    }
    ev->start_ns = e.start_ns;
    ev->end_ns = now;
    ev->goid = goid;
    ev->pid = tgid;
    ev->tid = tid;
    ev->kind = STALL_SYSCALL;
    ev->reason = e.nr;
    ev->ret = (s32)ctx->args[1];
    bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
    long got = bpf_get_stack(ctx, ev->pcs, sizeof(ev->pcs), BPF_F_USER_STACK);
    ev->nframes = got > 0 ? got / sizeof(u64) : 0;
    events.ringbuf_submit(ev, 0);
    return 0;
}
