/* lgf.golang._pcvalue: the pclntab's pc-value tables decoded in C, a whole binary at a time.
 *
 * Why native: a pc-value table is a run of varints (a zig-zag value delta, then a PC delta), and
 * decoding them one byte at a time in Python made the symbolizer's first pass over a binary 15x
 * slower than `go tool addr2line`. Here one call decodes the file, line and inline-index tables of
 * every function into a flat *index* (a bytes object, or the same bytes mapped from lgf's on-disk
 * cache), and lookups are a bisect in it; the whole of `lgf symbolize --addr2line`'s work for a
 * batch of input lines, parsing and printing included, is one call (addr2line_text).
 *
 * Semantics are those of lgf.golang.pclntab_format.value_at / decode_table (debug/gosym's pcvalue)
 * exactly, so answers are byte for byte those of the pure-Python path and of addr2line.
 *
 * Untrusted input: the binary is someone else's file and the index may come from a damaged cache
 * file, so every read of either is bounds-checked; check_index validates an index's structure once
 * (every range inside the arrays) so that lookups need no further checks on it. Damage in the
 * binary becomes a per-table status (the table is unreadable from some PC on), reported as
 * ValueError when a PC there is looked up -- never a crash or an out-of-bounds read.
 *
 * Index layout (native-endian, written and read on the same machine only; the cache file records
 * the byte order through MAGIC):
 *   header  (struct ix_header)
 *   nfunc   struct ix_func records
 *   nranges uint32 range ends (PC offset from the function's entry, exclusive)
 *   nranges int64  values (the value below that end)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAGIC 0x3158494350464c47ULL /* "GLFPCIX1" read as little-endian */
#define NTABLES 3                   /* file, line, inline-tree index */
#define MAX_VARINT_BYTES 5
#define MAX_TABLE_STEPS (1 << 20)   /* as pclntab_format._MAX_TABLE_STEPS */
#define MAX_NPCDATA 1024
#define PCDATA_INLTREEINDEX 2

/* Status of one decoded table: what a PC past its last range gets. */
enum {
    ST_END = 0,      /* the table ended (terminator) or covered the function: -1 */
    ST_CORRUPT = 1,  /* a varint ran off the pctab, or the walk hit the step cap: error */
    ST_OUTSIDE = 2,  /* the table's offset is outside the pctab: error on any lookup */
    ST_WALK = 3,     /* not decoded (the index's size cap was reached): walked at lookup */
    ST_NONE = 4,     /* the function has no such table (inline index only): -1 */
    ST_BADFUNC = 5,  /* the function's record is outside the table or has corrupt counts */
};

typedef struct {
    uint64_t magic;
    uint64_t text_start;  /* vaddr the function table's entry offsets are relative to */
    uint64_t pctab, pctab_end, cutab, limit; /* file offsets in the binary */
    uint32_t nfunc, nranges, quantum, pad;
} ix_header;

typedef struct {
    uint32_t entry_off, end_off;     /* [entry, end) relative to text_start */
    uint32_t cu_offset, name_off;    /* compilation unit; name in the funcnametab */
    uint32_t table_off[NTABLES];     /* pctab offset of each table (for ST_WALK) */
    uint32_t start[NTABLES], count[NTABLES];
    uint8_t status[NTABLES], pad;
} ix_func;

static const char *status_message(int st)
{
    switch (st) {
    case ST_CORRUPT: return "pc-value table runs off its table: corrupt pclntab";
    case ST_OUTSIDE: return "pc-value table offset outside pctab: corrupt pclntab";
    case ST_BADFUNC: return "function record outside the table or with corrupt counts: corrupt pclntab";
    default: return "corrupt pclntab";
    }
}

/* --- reading the binary ------------------------------------------------------------------- */

static inline uint32_t rd32(const uint8_t *b) { uint32_t v; memcpy(&v, b, 4); return v; }

/* One varint at *p (below limit), masked to 32 bits as Go reads it; 0 on success, -1 if it runs
 * off the table or is longer than MAX_VARINT_BYTES. */
static inline int varint(const uint8_t *buf, uint64_t *p, uint64_t limit, uint64_t *out)
{
    if (*p >= limit) return -1;
    uint8_t b = buf[(*p)++];
    if (b < 0x80) { *out = b; return 0; }
    uint64_t v = b & 0x7f;
    unsigned shift = 7;
    for (;;) {
        if (*p >= limit || shift >= 7 * MAX_VARINT_BYTES) return -1;
        b = buf[(*p)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (b < 0x80) break;
    }
    *out = v & 0xffffffffu;
    return 0;
}

/* The walk both decoding and a lazy lookup do. Calls emit(end, val) per range until the table
 * ends (ST_END) or a range reaches `stop`; emit returning nonzero stops early (ST_END). */
typedef int (*emit_fn)(void *ctx, uint64_t pc, int64_t val);

static int walk(const uint8_t *buf, const ix_header *h, uint64_t off, uint64_t entry, uint64_t stop,
                emit_fn emit, void *ctx)
{
    uint64_t p = h->pctab + off;
    if (off >= h->pctab_end - h->pctab) return ST_OUTSIDE;
    int64_t val = -1;
    uint64_t pc = entry, uv, pd;
    int first = 1;
    for (long step = 0; step < MAX_TABLE_STEPS; step++) {
        if (varint(buf, &p, h->pctab_end, &uv) < 0) return ST_CORRUPT;
        if (uv == 0 && !first) return ST_END;
        first = 0;
        val += (uv & 1) ? -(int64_t)(uv >> 1) - 1 : (int64_t)(uv >> 1);
        if (varint(buf, &p, h->pctab_end, &pd) < 0) return ST_CORRUPT;
        pc += pd * h->quantum;
        int r = emit(ctx, pc, val);
        if (r < 0) return -1;  /* out of memory, Python error set */
        if (r > 0 || pc >= stop) return ST_END;
    }
    return ST_CORRUPT;
}

/* --- building an index --------------------------------------------------------------------- */

typedef struct {
    uint32_t *ends;
    int64_t *vals;
    uint64_t n, cap, max;  /* max: the size cap; past it tables are left to ST_WALK */
    uint64_t entry;
} ranges;

static int emit_range(void *ctx, uint64_t pc, int64_t val)
{
    ranges *r = ctx;
    if (r->n >= r->max) return 0;  /* caller sees n == max and marks the table ST_WALK */
    if (r->n == r->cap) {
        uint64_t cap = r->cap ? r->cap * 2 : 4096;
        if (cap > r->max) cap = r->max;
        uint32_t *e = PyMem_Realloc(r->ends, cap * sizeof *e);
        if (e) r->ends = e;
        int64_t *v = e ? PyMem_Realloc(r->vals, cap * sizeof *v) : NULL;
        if (v) r->vals = v;
        if (!e || !v) { PyErr_NoMemory(); return -1; }
        r->cap = cap;
    }
    uint64_t rel = pc - r->entry;
    r->ends[r->n] = rel > 0xffffffffu ? 0xffffffffu : (uint32_t)rel;
    r->vals[r->n] = val;
    r->n++;
    return 0;
}

PyDoc_STRVAR(build_index_doc,
"build_index(buf, text_start, pcln, limit, nfunc, func_hdr, pctab, pctab_end, cutab, quantum) -> bytes\n\n"
"Decode the file, line and inline-index tables of every function of the pclntab in buf.");

static PyObject *build_index(PyObject *self, PyObject *args)
{
    Py_buffer view;
    unsigned long long text_start, pcln, limit, nfunc, func_hdr, pctab, pctab_end, cutab, quantum;
    if (!PyArg_ParseTuple(args, "y*KKKKKKKKK", &view, &text_start, &pcln, &limit, &nfunc, &func_hdr,
                          &pctab, &pctab_end, &cutab, &quantum))
        return NULL;
    const uint8_t *buf = view.buf;
    uint64_t size = (uint64_t)view.len;
    PyObject *result = NULL;
    ix_func *funcs = NULL;
    ranges r = {0};
    if (limit > size || pctab > pctab_end || pctab_end > limit || pcln > limit || nfunc == 0
        || nfunc > (limit - pcln) / 8 || nfunc >= 0xffffffffu || quantum == 0 || quantum > 4) {
        PyErr_SetString(PyExc_ValueError, "pclntab layout outside the file: corrupt pclntab");
        goto out;
    }
    if (pcln + (2 * nfunc + 1) * 4 > limit) {
        PyErr_SetString(PyExc_ValueError, "function table runs off the pclntab: corrupt pclntab");
        goto out;
    }
    ix_header h = {MAGIC, text_start, pctab, pctab_end, cutab, limit, (uint32_t)nfunc, 0,
                   (uint32_t)quantum, 0};
    funcs = PyMem_Calloc(nfunc, sizeof *funcs);
    if (!funcs) { PyErr_NoMemory(); goto out; }
    /* A real table has one range per few bytes of pctab, shared tables counted once per user;
     * this cap bounds what a hostile one can make us allocate. */
    r.max = 4 * (pctab_end - pctab) + 64 * nfunc;
    if (r.max > 0xfffffff0u) r.max = 0xfffffff0u;
    for (uint64_t i = 0; i < nfunc; i++) {
        ix_func *f = &funcs[i];
        f->entry_off = rd32(buf + pcln + 8 * i);
        f->end_off = rd32(buf + pcln + 8 * (i + 1));
        uint32_t func_off = rd32(buf + pcln + 8 * i + 4);
        uint64_t p = pcln + func_off;
        uint32_t npcdata = 0;
        uint8_t nfuncdata = 0;
        int bad = p + func_hdr > limit;
        if (!bad) {
            npcdata = rd32(buf + p + 28);
            nfuncdata = buf[p + func_hdr - 1];
            bad = npcdata > MAX_NPCDATA || p + func_hdr + 4 * ((uint64_t)npcdata + nfuncdata) > limit;
        }
        if (bad) {
            for (int t = 0; t < NTABLES; t++) f->status[t] = ST_BADFUNC;
            continue;
        }
        f->cu_offset = rd32(buf + p + 32);
        f->name_off = rd32(buf + p + 4);
        f->table_off[0] = rd32(buf + p + 20);  /* pcfile */
        f->table_off[1] = rd32(buf + p + 24);  /* pcln */
        f->table_off[2] = npcdata > PCDATA_INLTREEINDEX ? rd32(buf + p + func_hdr + 4 * PCDATA_INLTREEINDEX) : 0;
        uint64_t entry = text_start + f->entry_off, end = text_start + f->end_off;
        for (int t = 0; t < NTABLES; t++) {
            f->start[t] = (uint32_t)r.n;
            if (t == 2 && f->table_off[t] == 0) {
                f->status[t] = ST_NONE;
                continue;
            }
            r.entry = entry;
            int st = walk(buf, &h, f->table_off[t], entry, end, emit_range, &r);
            if (st < 0) goto out;
            if (r.n >= r.max) {  /* over the cap: this table is walked at each lookup instead */
                r.n = f->start[t];
                st = ST_WALK;
            }
            f->status[t] = (uint8_t)st;
            f->count[t] = (uint32_t)(r.n - f->start[t]);
        }
    }
    h.nranges = (uint32_t)r.n;
    uint64_t ends_at = sizeof h + nfunc * sizeof *funcs;
    uint64_t vals_at = (ends_at + 4 * r.n + 7) & ~(uint64_t)7;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(vals_at + 8 * r.n));
    if (!result) goto out;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(result);
    memset(o, 0, vals_at);
    memcpy(o, &h, sizeof h);
    memcpy(o + sizeof h, funcs, nfunc * sizeof *funcs);
    if (r.n) {
        memcpy(o + ends_at, r.ends, 4 * r.n);
        memcpy(o + vals_at, r.vals, 8 * r.n);
    }
out:
    PyMem_Free(funcs);
    PyMem_Free(r.ends);
    PyMem_Free(r.vals);
    PyBuffer_Release(&view);
    return result;
}

/* --- reading an index ------------------------------------------------------------------------ */

typedef struct {
    const ix_header *h;
    const ix_func *funcs;
    const uint32_t *ends;
    const int64_t *vals;
} ix;

/* Point x into an index already checked by check_index (or just built). */
static int ix_open(ix *x, const Py_buffer *v)
{
    const uint8_t *b = v->buf;
    if ((uint64_t)v->len < sizeof(ix_header) || ((uintptr_t)b & 7)) {
        PyErr_SetString(PyExc_ValueError, "not a pc-value index");
        return -1;
    }
    x->h = (const ix_header *)b;
    uint64_t ends_at = sizeof(ix_header) + (uint64_t)x->h->nfunc * sizeof(ix_func);
    uint64_t vals_at = (ends_at + 4 * (uint64_t)x->h->nranges + 7) & ~(uint64_t)7;
    if (x->h->magic != MAGIC || vals_at + 8 * (uint64_t)x->h->nranges != (uint64_t)v->len) {
        PyErr_SetString(PyExc_ValueError, "not a pc-value index (bad magic or size)");
        return -1;
    }
    x->funcs = (const ix_func *)(b + sizeof(ix_header));
    x->ends = (const uint32_t *)(b + ends_at);
    x->vals = (const int64_t *)(b + vals_at);
    return 0;
}

PyDoc_STRVAR(check_index_doc,
"check_index(index, buf) -> None\n\n"
"Raise ValueError unless index is a well-formed pc-value index of the pclntab in buf (its sizes,\n"
"every function's ranges inside the arrays, entries in order): run on every index read from disk.");

static PyObject *check_index(PyObject *self, PyObject *args)
{
    Py_buffer v, bv;
    if (!PyArg_ParseTuple(args, "y*y*", &v, &bv)) return NULL;
    ix x;
    const char *err = NULL;
    if (ix_open(&x, &v) < 0) goto fail;
    const ix_header *h = x.h;
    if (h->nfunc == 0 || h->limit > (uint64_t)bv.len || h->pctab > h->pctab_end || h->pctab_end > h->limit
        || h->quantum == 0 || h->quantum > 4) {
        err = "index does not fit the binary";
    }
    for (uint32_t i = 0; !err && i < h->nfunc; i++) {
        const ix_func *f = &x.funcs[i];
        if (f->end_off < f->entry_off) err = "function entries out of order";
        for (int t = 0; !err && t < NTABLES; t++) {
            if (f->status[t] > ST_BADFUNC || (uint64_t)f->start[t] + f->count[t] > h->nranges
                || (f->status[t] == ST_WALK && h->pctab_end > (uint64_t)bv.len))
                err = "function ranges outside the index";
        }
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&bv);
    if (err) {
        PyErr_Format(PyExc_ValueError, "corrupt pc-value index: %s", err);
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&v);
    PyBuffer_Release(&bv);
    return NULL;
}

typedef struct { uint64_t target; int64_t val; int found; } seek;

static int emit_seek(void *ctx, uint64_t pc, int64_t val)
{
    seek *s = ctx;
    if (s->target < pc) { s->val = val; s->found = 1; return 1; }
    return 0;
}

/* The value of table t of function i at pc (inside the function): 0 and *out, or -1 with a
 * Python ValueError set. */
static int lookup(const ix *x, const uint8_t *buf, uint64_t bufsize, uint32_t i, int t, uint64_t pc,
                  int64_t *out)
{
    const ix_func *f = &x->funcs[i];
    int st = f->status[t];
    uint64_t entry = x->h->text_start + f->entry_off;
    if (st == ST_WALK) {
        if (x->h->pctab_end > bufsize) { st = ST_OUTSIDE; goto error; }
        seek s = {pc, -1, 0};
        st = walk(buf, x->h, f->table_off[t], entry, UINT64_MAX, emit_seek, &s);
        if (s.found) { *out = s.val; return 0; }
        if (st == ST_END) { *out = -1; return 0; }
        goto error;
    }
    uint64_t rel = pc - entry;
    const uint32_t *e = x->ends + f->start[t];
    uint32_t lo = 0, hi = f->count[t];
    while (lo < hi) {  /* bisect_right: the first range whose end is above rel */
        uint32_t mid = lo + (hi - lo) / 2;
        if (rel < e[mid]) hi = mid; else lo = mid + 1;
    }
    if (lo < f->count[t]) { *out = x->vals[f->start[t] + lo]; return 0; }
    if (st == ST_END || st == ST_NONE) { *out = -1; return 0; }
error:
    PyErr_SetString(PyExc_ValueError, status_message(st));
    return -1;
}

PyDoc_STRVAR(value_doc,
"value(index, buf, i, table, pc) -> int\n\n"
"Table `table` (0 file, 1 line, 2 inline index) of function i at pc, as debug/gosym's pcvalue:\n"
"-1 past the table's end; ValueError when the table is damaged there.");

static PyObject *value(PyObject *self, PyObject *args)
{
    Py_buffer v, bv;
    unsigned int i;
    int t;
    unsigned long long pc;
    if (!PyArg_ParseTuple(args, "y*y*IiK", &v, &bv, &i, &t, &pc)) return NULL;
    ix x;
    int64_t out = 0;
    int rc = ix_open(&x, &v);
    if (rc == 0 && (i >= x.h->nfunc || t < 0 || t >= NTABLES)) {
        PyErr_SetString(PyExc_IndexError, "function or table number out of range");
        rc = -1;
    }
    if (rc == 0) rc = lookup(&x, bv.buf, (uint64_t)bv.len, i, t, pc, &out);
    PyBuffer_Release(&v);
    PyBuffer_Release(&bv);
    return rc < 0 ? NULL : PyLong_FromLongLong(out);
}

/* --- addr2line's whole job, text in, text out ------------------------------------------------ */

typedef struct { char *p; size_t n, cap; } out_buf;

static int put(out_buf *o, const char *s, size_t n)
{
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 1 << 16;
        while (o->n + n > cap) cap *= 2;
        char *p = PyMem_Realloc(o->p, cap);
        if (!p) { PyErr_NoMemory(); return -1; }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    return 0;
}

/* strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64), error ignored, as cmd/addr2line reads a
 * PC: 0 on a syntax error, 2^64-1 on overflow (ParseUint returns at the first digit that
 * overflows, even if a bad character follows). */
static uint64_t parse_pc(const char *s, size_t n)
{
    if (n >= 2 && s[0] == '0' && s[1] == 'x') { s += 2; n -= 2; }
    if (n == 0) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        if (v >> 60) return UINT64_MAX;
        v = v * 16 + d;
    }
    return v;
}

/* A NUL-terminated name at off in [lo, hi), at most 64 KiB: its length, or -1. */
static long long cstring(const uint8_t *buf, uint64_t lo, uint64_t hi, uint64_t off)
{
    if (off < lo || off >= hi) return -1;
    uint64_t max = hi - off < 65536 ? hi - off : 65536;
    const uint8_t *z = memchr(buf + off, 0, max);
    return z ? (long long)(z - (buf + off)) : -1;
}

PyDoc_STRVAR(addr2line_text_doc,
"addr2line_text(index, buf, lines, funcnames, funcnames_end, filetab, filetab_end) -> (out, error)\n\n"
"What `go tool addr2line` prints for input lines (bytes, each ended by a newline): two lines per\n"
"PC, \"?\" and \"?:0\" outside any function, its reply to a \"file:line\" query. Stops at the first\n"
"PC in a damaged function: out then holds the answers before it and error says why (else None).");

static PyObject *addr2line_text(PyObject *self, PyObject *args)
{
    Py_buffer v, bv, in;
    unsigned long long names_lo, names_hi, files_lo, files_hi;
    if (!PyArg_ParseTuple(args, "y*y*y*KKKK", &v, &bv, &in, &names_lo, &names_hi, &files_lo, &files_hi))
        return NULL;
    out_buf o = {0};
    PyObject *result = NULL;
    const char *error = NULL;
    PyObject *error_obj = NULL;
    ix x;
    if (ix_open(&x, &v) < 0) goto out;
    const ix_header *h = x.h;
    const uint8_t *buf = bv.buf;
    uint64_t bufsize = (uint64_t)bv.len;
    if (names_hi > bufsize || files_hi > bufsize) {
        PyErr_SetString(PyExc_ValueError, "name tables outside the file");
        goto out;
    }
    uint32_t nf = h->nfunc;
    uint64_t first = h->text_start + x.funcs[0].entry_off;
    uint64_t last = h->text_start + x.funcs[nf - 1].end_off;
    const char *s = in.buf, *end = s + in.len;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        const char *next = nl ? nl + 1 : end;
        if (n && s[n - 1] == '\r') n--;  /* bufio.ScanLines drops one trailing CR */
        if (memchr(s, ':', n)) {
            if (put(&o, "!reverse translation not implemented\n", 37) < 0) goto out;
            s = next;
            continue;
        }
        uint64_t pc = parse_pc(s, n);
        if (pc < first || pc >= last) {
            if (put(&o, "?\n?:0\n", 6) < 0) goto out;
            s = next;
            continue;
        }
        uint32_t lo = 0, hi = nf;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (pc < h->text_start + x.funcs[mid].entry_off) hi = mid; else lo = mid + 1;
        }
        const ix_func *f = &x.funcs[lo - 1];
        if (f->status[0] == ST_BADFUNC) { error = status_message(ST_BADFUNC); break; }
        int64_t fno, line;
        if (lookup(&x, buf, bufsize, lo - 1, 0, pc, &fno) < 0 || lookup(&x, buf, bufsize, lo - 1, 1, pc, &line) < 0) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            error_obj = PyObject_Str(value);
            Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
            if (!error_obj) goto out;
            break;
        }
        uint64_t name_at = names_lo + f->name_off;
        long long name_len = cstring(buf, names_lo, names_hi, name_at);
        if (name_len < 0) { error = "function name outside its table or not NUL-terminated: corrupt pclntab"; break; }
        long long file_len = 0;
        uint64_t file_at = 0;
        uint64_t p = h->cutab + (((uint64_t)f->cu_offset + (uint64_t)fno) * 4 & 0xffffffffu);
        if (fno >= 0 && p + 4 <= h->limit && p + 4 <= bufsize) {  /* else "": see Pclntab._file */
            uint32_t off = rd32(buf + p);
            if (off != 0xffffffffu) {
                file_at = files_lo + off;
                file_len = cstring(buf, files_lo, files_hi, file_at);
                if (file_len < 0) { error = "file name outside its table or not NUL-terminated: corrupt pclntab"; break; }
            }
        }
        char num[24];
        int k = snprintf(num, sizeof num, ":%lld\n", (long long)line);
        if (put(&o, (const char *)buf + name_at, (size_t)name_len) < 0 || put(&o, "\n", 1) < 0
            || put(&o, (const char *)buf + file_at, (size_t)file_len) < 0 || put(&o, num, (size_t)k) < 0)
            goto out;
        s = next;
    }
    if (error) error_obj = PyUnicode_FromString(error);
    result = Py_BuildValue("(y#O)", o.p ? o.p : "", (Py_ssize_t)o.n, error_obj ? error_obj : Py_None);
out:
    Py_XDECREF(error_obj);
    PyMem_Free(o.p);
    PyBuffer_Release(&v);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"addr2line_text", addr2line_text, METH_VARARGS, addr2line_text_doc},
    {"build_index", build_index, METH_VARARGS, build_index_doc},
    {"check_index", check_index, METH_VARARGS, check_index_doc},
    {"value", value, METH_VARARGS, value_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "lgf.golang._pcvalue",
    "The pclntab's pc-value tables decoded in C, a whole binary at a time (see _pcvalue.c).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__pcvalue(void) { return PyModule_Create(&module); }
