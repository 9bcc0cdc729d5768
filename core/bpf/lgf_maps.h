/* What every lgf BPF program shares with lgf.bpf.loader, which reads it from Python:
 * the histogram and counter maps, their key layouts, and the two helpers that update them.
 * Put before uprobe.c and tracepoint.c by lgf.bpf.loader.load, as text: BCC rewrites map calls
 * (`hist.lookup_or_try_init`) only in the program text it is given, never in an #include.
 *
 * hist:     every duration, under the threshold too, as log2 buckets of microseconds per
 *           (process, stall kind, reason); /metrics turns them into Prometheus histograms.
 * counters: per-process counters (ring-buffer losses, netpoll activity...), by a `which` index.
 */
#ifndef LGF_MAPS_H
#define LGF_MAPS_H

struct hkey {
    u32 tgid;
    u16 kind;
    u16 reason;
    u32 slot; /* log2 of the duration in microseconds */
    u32 pad;
};

struct ckey {
    u32 tgid;
    u32 which;
};

BPF_HASH(hist, struct hkey, u64, 65536);
BPF_HASH(counters, struct ckey, s64, 16384);

static __always_inline void counter_add(u32 tgid, u32 which, s64 n)
{
    struct ckey k = {.tgid = tgid, .which = which};
    s64 zero = 0;
    s64 *v = counters.lookup_or_try_init(&k, &zero);
    if (v)
        __sync_fetch_and_add(v, n);
}

static __always_inline void hist_add(u32 tgid, u32 kind, u32 reason, u64 dur_ns)
{
    struct hkey k = {.tgid = tgid, .kind = kind, .reason = reason, .slot = bpf_log2l(dur_ns / 1000)};
    u64 zero = 0;
    u64 *v = hist.lookup_or_try_init(&k, &zero);
    if (v)
        __sync_fetch_and_add(v, 1);
}

#endif
