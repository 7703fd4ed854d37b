/* keepa_ops.logs._linescan: classify log lines and extract template fields in one pass.
 *
 * The native half of keepa_ops.logs.scanner. The templates are not here: Python compiles
 * them (keepa_ops/logs/scanner.py) into a small program of ops, and this file interprets it.
 * linescan.scan_reference gives the same answer with Python's `re`; tests compare the two.
 *
 * Matching is leftmost-first with backtracking, like `re` and RE2's submatch rules: a
 * greedy run tries its longest length first, the lazy text op its shortest. Messages are
 * matched at their start and need not be consumed to their end.
 *
 * Out of each token line come its kind, event and time, its numeric fields as sparse columns
 * (the rows that have each field, and their values), and its text columns (process, logger,
 * task logger, capture) as codes into each column's distinct values, numbered in order of
 * first appearance.
 *
 * Invariants: never reads outside [data+start, data+end); never writes past the buffers
 * it was given (it checks their sizes first); holds no GIL while scanning.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OP_LIT = 1, OP_NUM, OP_INT, OP_WORD, OP_DOTTED, OP_ID, OP_TOKEN, OP_TEXT, OP_SEP };
enum { CLS_OTHER = 0, CLS_TOKEN, CLS_FAILED, CLS_JSON, CLS_BLANK, CLS_CONTINUATION, CLS_BAD };
enum { TEXT_PROCESS = 0, TEXT_LOGGER, TEXT_TASKLOGGER, TEXT_CAPTURE, N_TEXT };
#define FIELD_TEXT (-2)
#define MAX_FIELDS 32

typedef struct { uint8_t code; int8_t field; uint16_t len; const uint8_t *lit; } Op;
typedef struct { int16_t kind, event; uint8_t extra; int nops; Op *ops; } Variant;
typedef struct { uint8_t strict; uint16_t plen; const uint8_t *prefix; int nvar; Variant *vars; } Template;
typedef struct { int ntempl; Template *templ; Variant *vars; Op *ops; } Program;

typedef struct {
    const uint8_t *num[MAX_FIELDS];
    Py_ssize_t numlen[MAX_FIELDS];
    const uint8_t *txt;
    Py_ssize_t txtlen;
} Caps;

static const char *LEVELS[] = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};
static const char *SUFFIXES[] = {"Error", "Exception", "Exit", "Interrupt", "Warning"};

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_upper(uint8_t c) { return c >= 'A' && c <= 'Z'; }
static inline int is_word(uint8_t c) { return is_digit(c) || is_upper(c) || (c >= 'a' && c <= 'z') || c == '_'; }
/* RE2's \s: [\t\n\f\r ] */
static inline int is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }

static inline int in_class(uint8_t code, uint8_t c) {
    switch (code) {
    case OP_WORD: return is_word(c);
    case OP_DOTTED: return is_word(c) || c == '.';
    case OP_ID: return is_word(c) || c == '-';
    case OP_TOKEN: return !is_space(c);
    case OP_INT: return is_digit(c);
    }
    return 0;
}

static inline const uint8_t *run(uint8_t code, const uint8_t *s, const uint8_t *e) {
    while (s < e && in_class(code, *s)) s++;
    return s;
}

/* ---- program ------------------------------------------------------------------ */

static int rd(const uint8_t **p, const uint8_t *e, void *out, size_t n) {
    if ((size_t)(e - *p) < n) return 0;
    memcpy(out, *p, n);
    *p += n;
    return 1;
}

static void program_free(Program *pg) {
    free(pg->templ);
    free(pg->vars);
    free(pg->ops);
}

/* Layout (little-endian): u32 ntempl, u32 nvar, u32 nops; per template: u8 strict, u16 plen,
 * prefix, u16 nvar; per variant: i16 kind, i16 event, u8 extra, u16 nops; per op: u8 code,
 * i8 field, u16 len, then len literal bytes. */
static int program_load(Program *pg, const uint8_t *p, Py_ssize_t n) {
    const uint8_t *e = p + n;
    uint32_t nt, nv, no;
    memset(pg, 0, sizeof *pg);
    if (!rd(&p, e, &nt, 4) || !rd(&p, e, &nv, 4) || !rd(&p, e, &no, 4) || nt > 4096 || nv > 65536 || no > 1 << 20)
        return 0;
    pg->templ = calloc(nt + 1, sizeof(Template));
    pg->vars = calloc(nv + 1, sizeof(Variant));
    pg->ops = calloc(no + 1, sizeof(Op));
    if (!pg->templ || !pg->vars || !pg->ops) return 0;
    uint32_t vi = 0, oi = 0;
    for (uint32_t t = 0; t < nt; t++) {
        Template *T = &pg->templ[t];
        uint16_t tv;
        if (!rd(&p, e, &T->strict, 1) || !rd(&p, e, &T->plen, 2) || (size_t)(e - p) < T->plen) return 0;
        T->prefix = p;
        p += T->plen;
        if (!rd(&p, e, &tv, 2) || vi + tv > nv || T->plen == 0) return 0;
        T->nvar = tv;
        T->vars = &pg->vars[vi];
        for (uint16_t v = 0; v < tv; v++, vi++) {
            Variant *V = &pg->vars[vi];
            uint16_t vo;
            if (!rd(&p, e, &V->kind, 2) || !rd(&p, e, &V->event, 2) || !rd(&p, e, &V->extra, 1) ||
                !rd(&p, e, &vo, 2) || oi + vo > no)
                return 0;
            V->nops = vo;
            V->ops = &pg->ops[oi];
            for (uint16_t o = 0; o < vo; o++, oi++) {
                Op *O = &pg->ops[oi];
                if (!rd(&p, e, &O->code, 1) || !rd(&p, e, &O->field, 1) || !rd(&p, e, &O->len, 2)) return 0;
                if (O->code < OP_LIT || O->code > OP_SEP || O->field >= MAX_FIELDS || O->field < FIELD_TEXT) return 0;
                if (O->code == OP_LIT) {
                    if ((size_t)(e - p) < O->len || O->len == 0) return 0;
                    O->lit = p;
                    p += O->len;
                }
            }
        }
    }
    pg->ntempl = (int)nt;
    return p == e && vi == nv && oi == no;
}

/* ---- matching ----------------------------------------------------------------- */

static inline void cap(Caps *c, const Op *op, const uint8_t *s, const uint8_t *e) {
    if (op->field >= 0) {
        c->num[op->field] = s;
        c->numlen[op->field] = e - s;
    } else if (op->field == FIELD_TEXT) {
        c->txt = s;
        c->txtlen = e - s;
    }
}

static int match(const Op *op, const Op *end, const uint8_t *s, const uint8_t *e, Caps *c) {
    if (op == end) return 1;
    switch (op->code) {
    case OP_LIT:
        if (e - s < op->len || memcmp(s, op->lit, op->len) != 0) return 0;
        return match(op + 1, end, s + op->len, e, c);
    case OP_NUM: { /* -?\d+(?:\.\d+)? */
        const uint8_t *d = (s < e && *s == '-') ? s + 1 : s;
        const uint8_t *de = run(OP_INT, d, e);
        for (const uint8_t *q = de; q > d; q--) {
            if (q == de && q + 1 < e && *q == '.' && is_digit(q[1])) {
                const uint8_t *fe = run(OP_INT, q + 1, e);
                for (const uint8_t *g = fe; g > q + 1; g--) {
                    cap(c, op, s, g);
                    if (match(op + 1, end, g, e, c)) return 1;
                }
            }
            cap(c, op, s, q);
            if (match(op + 1, end, q, e, c)) return 1;
        }
        return 0;
    }
    case OP_INT: case OP_WORD: case OP_DOTTED: case OP_ID: case OP_TOKEN: {
        const uint8_t *re = run(op->code, s, e);
        for (const uint8_t *q = re; q > s; q--) {
            cap(c, op, s, q);
            if (match(op + 1, end, q, e, c)) return 1;
        }
        return 0;
    }
    case OP_TEXT: /* [^\r\n]*? */
        for (const uint8_t *q = s;; q++) {
            cap(c, op, s, q);
            if (match(op + 1, end, q, e, c)) return 1;
            if (q >= e || *q == '\r' || *q == '\n') return 0;
        }
    case OP_SEP: { /* '?"?\s*[:=]\s*  (only one way to match) */
        const uint8_t *q = s;
        if (q < e && *q == '\'') q++;
        if (q < e && *q == '"') q++;
        while (q < e && is_space(*q)) q++;
        if (q >= e || (*q != ':' && *q != '=')) return 0;
        q++;
        while (q < e && is_space(*q)) q++;
        return match(op + 1, end, q, e, c);
    }
    }
    return 0;
}

/* ---- line prefixes -------------------------------------------------------------- */

static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline int num2(const uint8_t *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* "YYYY-MM-DD HH:MM:SS,mmm": 1 if the shape is there; *ms is NaN when a field is out of
 * range (glibc strptime's: month 1-12, day 1-31, hour 0-23, minute 0-59, second 0-61). */
static int timestamp(const uint8_t *s, const uint8_t *e, double *ms) {
    static const char shape[] = "dddd-dd-dd dd:dd:dd,ddd";
    if (e - s < 23) return 0;
    for (int i = 0; i < 23; i++) {
        if (shape[i] == 'd' ? !is_digit(s[i]) : s[i] != (uint8_t)shape[i]) return 0;
    }
    int y = num2(s) * 100 + num2(s + 2), mo = num2(s + 5), d = num2(s + 8);
    int h = num2(s + 11), mi = num2(s + 14), se = num2(s + 17);
    int milli = (s[20] - '0') * 100 + num2(s + 21);
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 61) {
        *ms = NAN;
    } else {
        long long sec = days_from_civil(y, mo, d) * 86400LL + h * 3600 + mi * 60 + se;
        *ms = (double)(sec * 1000 + milli);
    }
    return 1;
}

/* One of LEVELS followed by `after` (a literal); returns the end of both or NULL. */
static const uint8_t *level(const uint8_t *s, const uint8_t *e, const char *after) {
    size_t na = strlen(after);
    for (int i = 0; i < 5; i++) {
        size_t n = strlen(LEVELS[i]);
        if ((size_t)(e - s) >= n + na && memcmp(s, LEVELS[i], n) == 0 && memcmp(s + n, after, na) == 0)
            return s + n + na;
    }
    return NULL;
}

static int continuation(const uint8_t *s, const uint8_t *e) {
    static const char *starts[] = {"Traceback (most recent call last)", "During handling of the above",
                                   "The above exception"};
    if (s < e && (*s == ' ' || *s == '\t')) {
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        return s < e && !is_space(*s);
    }
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(starts[i]);
        if ((size_t)(e - s) >= n && memcmp(s, starts[i], n) == 0) return 1;
    }
    const uint8_t *re = run(OP_DOTTED, s, e); /* [\w.]+(?:Error|...)\b */
    for (const uint8_t *p = s + 1; p < re; p++) {
        for (int i = 0; i < 5; i++) {
            size_t n = strlen(SUFFIXES[i]);
            if ((size_t)(e - p) >= n && memcmp(p, SUFFIXES[i], n) == 0 && (p + n == e || !is_word(p[n]))) return 1;
        }
    }
    return 0;
}

static inline const uint8_t *first_cr(const uint8_t *s, const uint8_t *e) {
    const uint8_t *r = memchr(s, '\r', e - s);
    return r ? r : e;
}

/* ---- the scan ------------------------------------------------------------------- */

/* A text column's distinct values, in order of first appearance: codes, offsets and bytes in the
 * caller's buffers, found again through an open-addressing table of code + 1 (0: empty). */
typedef struct {
    int64_t *offs;     /* (nl + 1) offsets: value k is data[offs[k]:offs[k + 1]] */
    uint8_t *data;     /* `cap` bytes */
    int64_t count;
    int32_t *slots;
    size_t mask;
} Dict;

typedef struct {
    uint8_t *cls;
    int64_t *lstart;
    int32_t *tline;
    int16_t *tkind, *tevent;
    double *tts;
    int64_t *fcount;   /* per field: how many token lines have it */
    int32_t *frows;    /* nf columns of nl rows: the token lines that have the field, ascending */
    double *fvals;     /* nf columns of nl values */
    int32_t *tcodes;   /* N_TEXT columns of nl codes (-1: none) */
    Dict dict[N_TEXT];
    Py_ssize_t nl, cap, nf;
} Out;

static inline uint64_t hash_bytes(const uint8_t *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static int dict_grow(Dict *d) {
    size_t size = d->slots ? (d->mask + 1) * 2 : 256;
    int32_t *slots = calloc(size, sizeof *slots);
    if (!slots) return 0;
    for (int64_t k = 0; k < d->count; k++) {
        size_t h = hash_bytes(d->data + d->offs[k], d->offs[k + 1] - d->offs[k]) & (size - 1);
        while (slots[h]) h = (h + 1) & (size - 1);
        slots[h] = (int32_t)(k + 1);
    }
    free(d->slots);
    d->slots = slots;
    d->mask = size - 1;
    return 1;
}

/* The code of text s[0:n] (a new one if it was not seen), -1 for no text, -2 when out of memory.
 * The values' bytes never outgrow `cap`: each is a piece of the range, seen once. */
static int32_t dict_code(Dict *d, const uint8_t *s, Py_ssize_t n) {
    if (!s || n <= 0) return -1;
    if ((!d->slots || (size_t)(d->count + 1) * 2 > d->mask + 1) && !dict_grow(d)) return -2;
    size_t h = hash_bytes(s, n) & d->mask;
    for (;; h = (h + 1) & d->mask) {
        int32_t k = d->slots[h] - 1;
        if (k < 0) break;
        if (d->offs[k + 1] - d->offs[k] == n && memcmp(d->data + d->offs[k], s, n) == 0) return k;
    }
    int64_t k = d->count++;
    memcpy(d->data + d->offs[k], s, n);
    d->offs[k + 1] = d->offs[k] + n;
    d->slots[h] = (int32_t)(k + 1);
    return (int32_t)k;
}

/* Field fi of token line j is v (a later value for the same line replaces the earlier one). */
static inline void put_field(Out *o, int fi, Py_ssize_t j, double v) {
    int32_t *rows = o->frows + fi * o->nl;
    double *vals = o->fvals + fi * o->nl;
    int64_t k = o->fcount[fi];
    if (k > 0 && rows[k - 1] == (int32_t)j) {
        vals[k - 1] = v;
        return;
    }
    rows[k] = (int32_t)j;
    vals[k] = v;
    o->fcount[fi] = k + 1;
}

static int dispatch(const Program *pg, const uint8_t *m, const uint8_t *me, const Variant **hit, Caps *c,
                    const Template **tp) {
    for (int t = 0; t < pg->ntempl; t++) {
        const Template *T = &pg->templ[t];
        if (me - m < T->plen || m[0] != T->prefix[0] || memcmp(m, T->prefix, T->plen) != 0) continue;
        for (int v = 0; v < T->nvar; v++) {
            const Variant *V = &T->vars[v];
            if (V->extra) continue;
            memset(c, 0, sizeof *c);
            if (match(V->ops, V->ops + V->nops, m, me, c)) {
                *hit = V;
                *tp = T;
                return CLS_TOKEN;
            }
        }
        if (T->strict) return CLS_FAILED;
    }
    return CLS_OTHER;
}

static double number(const uint8_t *s, Py_ssize_t n) {
    int neg = n > 0 && *s == '-';
    uint64_t mant = 0;
    int digits = 0, frac = -1;
    for (Py_ssize_t i = neg; i < n; i++) {
        if (s[i] == '.') { frac = 0; continue; }
        if (mant || s[i] != '0') digits++;
        mant = mant * 10 + (s[i] - '0');
        if (frac >= 0) frac++;
    }
    static const double P10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double v;
    if (digits <= 15 && frac <= 22) { /* exact mantissa and power: one correctly rounded division */
        v = frac > 0 ? (double)mant / P10[frac] : (double)mant;
    } else {
        char buf[64], *heap = NULL, *b = buf;
        if (n >= (Py_ssize_t)sizeof buf) b = heap = malloc(n + 1);
        if (!b) return NAN;
        memcpy(b, s, n);
        b[n] = 0;
        v = strtod(b, NULL);
        free(heap);
        return v;
    }
    return neg ? -v : v;
}

static Py_ssize_t scan(const Program *pg, const uint8_t *data, Py_ssize_t start, Py_ssize_t end, Out *o,
                       Py_ssize_t *ntok_out) {
    Py_ssize_t li = 0, j = 0;
    const uint8_t *p = data + start, *stop = data + end;
    for (Py_ssize_t f = 0; f < o->nf; f++) o->fcount[f] = 0;
    while (p < stop) {
        const uint8_t *nl = memchr(p, '\n', stop - p);
        const uint8_t *le = nl ? nl + 1 : stop, *ce = nl ? nl : stop;
        if (li >= o->nl) return -1;
        o->lstart[li] = p - data;
        uint8_t cls;
        const uint8_t *m = NULL, *me = ce, *proc = NULL, *procend = NULL, *lg = NULL, *lgend = NULL;
        double ts = NAN;
        int prefix_ok = 0;
        const uint8_t *w = p;
        while (w < le && is_space(*w)) w++;
        if (w == le) { /* only whitespace */
            cls = CLS_BLANK;
        } else if (p[0] == '{') {
            cls = CLS_JSON;
        } else {
            const uint8_t *q;
            if (p[0] == '[' && timestamp(p + 1, ce, &ts) && ce - p > 27 && p[24] == ':' && p[25] == ' ' &&
                is_upper(p[26])) { /* [TS: LEVEL/process] */
                q = p + 26;
                while (q < ce && is_upper(*q)) q++;
                if (q < ce && *q == '/') {
                    proc = q + 1;
                    procend = proc;
                    while (procend < ce && (is_word(*procend) || *procend == '.' || *procend == '-')) procend++;
                    if (procend > proc && ce - procend >= 2 && procend[0] == ']' && procend[1] == ' ') {
                        prefix_ok = 1;
                        m = procend + 2;
                    }
                }
                if (!prefix_ok) ts = NAN;
            } else if (timestamp(p, ce, &ts) && ce - p >= 26 && memcmp(p + 23, " - ", 3) == 0) {
                prefix_ok = 1; /* TS - (logger - )?LEVEL - */
                q = p + 26;
                const uint8_t *r = run(OP_DOTTED, q, ce);
                const uint8_t *after = (r > q && ce - r >= 3 && memcmp(r, " - ", 3) == 0) ? level(r + 3, ce, " - ") : NULL;
                if (after) {
                    lg = q;
                    lgend = r;
                    m = after;
                } else {
                    m = level(q, ce, " - ");
                }
                if (m) me = first_cr(m, ce);
            } else if ((q = level(p, ce, ":")) != NULL) { /* LEVEL:logger: */
                const uint8_t *r = run(OP_DOTTED, q, ce);
                if (r > q && r < ce && *r == ':') {
                    prefix_ok = 1;
                    lg = q;
                    lgend = r;
                    m = r + 1;
                    me = first_cr(m, ce);
                }
            }
            if (!prefix_ok) {
                cls = continuation(p, ce) ? CLS_CONTINUATION : CLS_BAD;
            } else if (!m) {
                cls = CLS_OTHER;
            } else {
                const uint8_t *tl = NULL, *tlend = NULL;
                const uint8_t *r = run(OP_DOTTED, m, me); /* task logger: name[id]: */
                if (r > m && r < me && *r == '[') {
                    const uint8_t *i2 = run(OP_ID, r + 1, me);
                    if (i2 > r + 1 && me - i2 >= 3 && memcmp(i2, "]: ", 3) == 0) {
                        tl = m;
                        tlend = r;
                        m = i2 + 3;
                        me = first_cr(m, me);
                    }
                }
                const Variant *V = NULL;
                const Template *T = NULL;
                Caps c;
                cls = m < me ? dispatch(pg, m, me, &V, &c, &T) : CLS_OTHER;
                if (cls == CLS_TOKEN) {
                    if (j >= o->nl) return -1;
                    o->tline[j] = (int32_t)li;
                    o->tkind[j] = V->kind;
                    o->tevent[j] = V->event;
                    o->tts[j] = ts;
                    for (int k = 0; k < V->nops; k++) {
                        int fi = V->ops[k].field;
                        if (fi >= 0 && fi < o->nf) put_field(o, fi, j, number(c.num[fi], c.numlen[fi]));
                    }
                    for (int v = 0; v < T->nvar; v++) { /* extras: optional fields found anywhere */
                        const Variant *X = &T->vars[v];
                        if (!X->extra) continue;
                        Caps xc;
                        memset(&xc, 0, sizeof xc);
                        if (!match(X->ops, X->ops + X->nops, m, me, &xc)) continue;
                        for (int k = 0; k < X->nops; k++) {
                            int fi = X->ops[k].field;
                            if (fi >= 0 && fi < o->nf) put_field(o, fi, j, number(xc.num[fi], xc.numlen[fi]));
                        }
                    }
                    const uint8_t *text[N_TEXT] = {proc, lg, tl, c.txt};
                    Py_ssize_t text_len[N_TEXT] = {procend - proc, lgend - lg, tlend - tl, c.txtlen};
                    for (int col = 0; col < N_TEXT; col++) {
                        int32_t code = dict_code(&o->dict[col], text[col], text_len[col]);
                        if (code == -2) return -2;
                        o->tcodes[col * o->nl + j] = code;
                    }
                    j++;
                }
            }
        }
        o->cls[li++] = cls;
        p = le;
    }
    if (li >= o->nl + 1) return -1;
    o->lstart[li] = end;
    *ntok_out = j;
    return li;
}

/* scan(data, start, end, program, nfields, cls, lstart, tline, tkind, tevent, tts, fcount, frows, fvals,
 *      tcodes, doffs, ddata, dcount) -> (lines, token lines)
 * Output buffers are sized by the caller for nl lines (nl = len(cls)), see scanner.Buffers:
 * fcount[nf], frows and fvals nf x nl, tcodes N_TEXT x nl, doffs N_TEXT x (nl + 1), ddata
 * N_TEXT x (end - start) bytes, dcount[N_TEXT]. */
#define NBUF 13
static PyObject *py_scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, prog, b[NBUF];
    Py_ssize_t start, end, nf;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*nny*nw*w*w*w*w*w*w*w*w*w*w*w*w*", &data, &start, &end, &prog, &nf, &b[0], &b[1],
                          &b[2], &b[3], &b[4], &b[5], &b[6], &b[7], &b[8], &b[9], &b[10], &b[11], &b[12]))
        return NULL;
    PyObject *result = NULL;
    Program pg;
    Out o;
    memset(&o, 0, sizeof o);
    Py_ssize_t nl = b[0].len;
    o.nl = nl;
    o.cap = end - start;
    o.nf = nf;
    o.cls = b[0].buf;
    o.lstart = b[1].buf;
    o.tline = b[2].buf;
    o.tkind = b[3].buf;
    o.tevent = b[4].buf;
    o.tts = b[5].buf;
    o.fcount = b[6].buf;
    o.frows = b[7].buf;
    o.fvals = b[8].buf;
    o.tcodes = b[9].buf;
    if (start < 0 || end < start || end > data.len || nf < 0 || nf > MAX_FIELDS ||
        b[1].len < (nl + 1) * 8 || b[2].len < nl * 4 || b[3].len < nl * 2 || b[4].len < nl * 2 ||
        b[5].len < nl * 8 || b[6].len < nf * 8 || b[7].len < nf * nl * 4 || b[8].len < nf * nl * 8 ||
        b[9].len < N_TEXT * nl * 4 || b[10].len < N_TEXT * (nl + 1) * 8 || b[11].len < N_TEXT * o.cap ||
        b[12].len < N_TEXT * 8) {
        PyErr_SetString(PyExc_ValueError, "linescan: range or output buffers of the wrong size");
        goto done;
    }
    for (int c = 0; c < N_TEXT; c++) {
        o.dict[c].offs = (int64_t *)b[10].buf + c * (nl + 1);
        o.dict[c].data = (uint8_t *)b[11].buf + c * o.cap;
        o.dict[c].offs[0] = 0;
    }
    if (!program_load(&pg, prog.buf, prog.len)) {
        program_free(&pg);
        PyErr_SetString(PyExc_ValueError, "linescan: malformed program");
        goto done;
    }
    Py_ssize_t lines, ntok = 0;
    Py_BEGIN_ALLOW_THREADS
    lines = scan(&pg, data.buf, start, end, &o, &ntok);
    Py_END_ALLOW_THREADS
    program_free(&pg);
    for (int c = 0; c < N_TEXT; c++) {
        ((int64_t *)b[12].buf)[c] = o.dict[c].count;
        free(o.dict[c].slots);
    }
    if (lines == -2) {
        PyErr_NoMemory();
        goto done;
    }
    if (lines < 0) {
        PyErr_SetString(PyExc_ValueError, "linescan: more lines than the output buffers hold");
        goto done;
    }
    result = Py_BuildValue("nn", lines, ntok);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&prog);
    for (int i = 0; i < NBUF; i++)
        if (b[i].obj) PyBuffer_Release(&b[i]);
    return result;
}

/* count_lines(data, start, end) -> the number of lines in data[start:end] (a last line may lack its newline) */
static PyObject *py_count_lines(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t start, end, n = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nn", &data, &start, &end)) return NULL;
    if (start < 0 || end < start || end > data.len) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "linescan: range outside the data");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *p = (const uint8_t *)data.buf + start, *e = (const uint8_t *)data.buf + end;
    while (p < e) {
        const uint8_t *nl = memchr(p, '\n', e - p);
        n++;
        p = nl ? nl + 1 : e;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

/* fill_tasks(group, kind, task, ngroups) -> None: give each worker's line without a task the task
 * its segment names (keepa_ops.logs.parser._attribute, whose numpy form this is).
 *
 * Rows are in read order. group: int32, the row's (stream, process) as 0..ngroups-1, or -1 for a
 * row of no worker; kind: int8, 1 a start, 2 an end (a finish or a retry), 3 a skip, 0 anything
 * else; task: int32 codes, -1 for none, filled in place. On one group a segment begins at its first
 * row, at a start and at the row after an end; its task is the first a row of it names (a skip
 * names a task that is not running here). One pass to find the segments, one to fill. */
static PyObject *py_fill_tasks(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer g, k, t;
    Py_ssize_t ngroups;
    if (!PyArg_ParseTuple(args, "y*y*w*n", &g, &k, &t, &ngroups)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = g.len / 4;
    int32_t *seg = NULL, *seg_task = NULL, *cur = NULL;
    uint8_t *ended = NULL;
    if (g.len % 4 || k.len != n || t.len != n * 4 || ngroups < 0) {
        PyErr_SetString(PyExc_ValueError, "linescan: fill_tasks columns of the wrong size");
        goto done;
    }
    seg = malloc((n + 1) * sizeof *seg);
    seg_task = malloc((n + 1) * sizeof *seg_task);
    cur = malloc((ngroups + 1) * sizeof *cur);
    ended = calloc(ngroups + 1, 1);
    if (!seg || !seg_task || !cur || !ended) {
        PyErr_NoMemory();
        goto done;
    }
    const int32_t *group = g.buf;
    const int8_t *kind = k.buf;
    int32_t *task = t.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t q = 0; q < ngroups; q++) cur[q] = -1;
    int32_t nseg = 0;
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int32_t q = group[i];
        if (q < 0) continue;
        if (q >= ngroups) { bad = 1; break; }
        if (cur[q] < 0 || kind[i] == 1 || ended[q]) {
            cur[q] = nseg;
            seg_task[nseg++] = -1;
        }
        ended[q] = kind[i] == 2;
        seg[i] = cur[q];
        if (seg_task[cur[q]] < 0 && kind[i] != 3 && task[i] >= 0) seg_task[cur[q]] = task[i];
    }
    for (Py_ssize_t i = 0; i < n && !bad; i++)
        if (group[i] >= 0 && task[i] < 0) task[i] = seg_task[seg[i]];
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "linescan: fill_tasks group out of range");
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    free(seg);
    free(seg_task);
    free(cur);
    free(ended);
    PyBuffer_Release(&g);
    PyBuffer_Release(&k);
    PyBuffer_Release(&t);
    return result;
}

static PyMethodDef methods[] = {
    {"count_lines", py_count_lines, METH_VARARGS, "The number of lines in data[start:end]."},
    {"scan", py_scan, METH_VARARGS, "Classify lines and extract template fields (see keepa_ops.logs.scanner)."},
    {"fill_tasks", py_fill_tasks, METH_VARARGS, "Give worker lines without a task their segment's task."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linescan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__linescan(void) { return PyModule_Create(&module); }
