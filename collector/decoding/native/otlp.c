/*
 * OTLP ExportTraceServiceRequest (protobuf wire format) -> the span columns, in C.
 *
 * The compiled twin of ``protobuf.py`` + ``common.py`` + ``normalize.py``: it reads the wire
 * format directly and writes each column's Arrow buffers (validity bitmap, int32 offsets,
 * data) without creating a Python object per span or attribute. ``__init__.py`` wraps the
 * buffers into an Arrow table.
 *
 * Its contract is "the reference decoder's result, or DEFER": for anything outside the
 * common well-formed shape -- a parse error, invalid UTF-8, a field it does not know, a
 * wrong wire type, a repeated singular message (protobuf would merge it), a duplicate
 * attribute key (a dict keeps the first position, the last value), a rejected span, nesting
 * past the limit, a non-finite double --
 * ``decode`` returns None and the caller runs the pure-Python decoder on the same bytes.
 * Every error message and every rare rule thus comes from one place, and this file only has
 * to be exact on what it accepts. The differential tests hold it to that. Text that a column
 * parses as a number or as JSON goes to normalize.py's own conversion functions (through the
 * CPython API), so Python's int()/float()/JSON rules are not re-implemented here.
 *
 * Safety: every read goes through ``Cur`` (a [p, end) window) and checks the remaining length
 * before touching a byte; lengths are 64-bit and compared against the remaining size, never
 * added to a pointer first. Output buffers grow with overflow checks. Nesting is bounded by
 * MAX_DEPTH (the reference's limit): deeper input defers before recursing further.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define OK 0
#define DEFER 1
#define NOMEM 2

#define MAX_DEPTH 16
#define N_NORM 16
#define N_COLS 34

/* ---------------------------------------------------------------- configuration ---------- */

typedef enum {
    CONV_STR = 0,
    CONV_INT = 1,
    CONV_SECONDS_TO_MS = 2,
    CONV_MODEL_OF_PARAMS = 3,
    CONV_MS = 4,         /* a number of milliseconds (float) */
    CONV_JSON_STR = 5,   /* a string, JSON-quoted or not (MLflow quotes every value) */
    CONV_LOGFIRE_KIND = 6 /* "log" / "pending_span" as themselves, anything else None */
} Conv;
#define N_CONV 7

typedef struct {
    char *key;
    Py_ssize_t len;
    int idx, rank;
    Conv conv;
} KeyRule;

#define RULE_SLOTS 256 /* more than 4x the rules normalize.py has (configure() checks) */

typedef struct {
    char *key;
    Py_ssize_t len;
} Str;

static struct {
    int ready;
    KeyRule *rules;
    Py_ssize_t n_rules;
    Str cohort;              /* "cohort." */
    Str service;             /* "service.name" */
    Str *first_token;        /* event names that mark the first token */
    Py_ssize_t n_first_token;
    int fb_idx[N_NORM];      /* resource fallbacks: column index, key */
    Str fb_key[N_NORM];
    int n_fb;
    int base, req, resp, ttft;
    char norm_type[N_NORM];  /* 's', 'i' or 'f' per normalized column */
    PyObject *conv_py[N_CONV]; /* normalize.py's conversions, for text the C side won't parse */
    int rule_slot[RULE_SLOTS]; /* open addressing by key hash: rule index + 1, 0 = empty */
} cfg;

/* a key's hash, 8 bytes per step (keys are short; this runs once per attribute) */
static inline uint64_t key_hash(const uint8_t *s, size_t n) {
    const uint64_t k = 0x9E3779B97F4A7C15ULL;
    uint64_t h = (uint64_t)n * k;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, s + i, n - i);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    return h ^ (h >> 32);
}

/* ---------------------------------------------------------------- buffers ---------------- */

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->len) return NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap) return OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *d = PyMem_Realloc(b->data, cap);
    if (!d) return NOMEM;
    b->data = d;
    b->cap = cap;
    return OK;
}

static inline int buf_put(Buf *b, const void *s, size_t n) {
    if (n > b->cap - b->len && buf_grow(b, n)) return NOMEM;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    return OK;
}

static inline int buf_putc(Buf *b, char c) {
    if (b->len == b->cap && buf_grow(b, 1)) return NOMEM;
    b->data[b->len++] = c;
    return OK;
}

static void buf_free(Buf *b) {
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#define TRY(x)                    \
    do {                          \
        int _rc = (x);            \
        if (_rc) return _rc;      \
    } while (0)

/* An Arrow column: validity bitmap, int32 offsets (strings) and data. */
typedef struct {
    char type; /* 's' string, 'i' int64 / timestamp, 'f' float64 */
    Buf valid, offsets, data;
    int64_t n, nulls;
} Col;

static int col_bit(Col *c, int set) {
    if ((c->n & 7) == 0) TRY(buf_putc(&c->valid, 0));
    if (set)
        c->valid.data[c->n >> 3] |= (char)(1 << (c->n & 7));
    else
        c->nulls++;
    c->n++;
    return OK;
}

static int col_offset(Col *c) {
    if (c->data.len > INT32_MAX) return DEFER; /* a column past 2 GB: not for us */
    int32_t off = (int32_t)c->data.len;
    return buf_put(&c->offsets, &off, 4);
}

/* the string data for this row has been appended to c->data already */
static int col_end_str(Col *c, int valid) {
    TRY(col_offset(c));
    return col_bit(c, valid);
}

static int col_str(Col *c, const char *s, size_t n) {
    TRY(buf_put(&c->data, s, n));
    return col_end_str(c, 1);
}

static int col_null(Col *c) {
    if (c->type == 's') return col_end_str(c, 0);
    int64_t zero = 0;
    TRY(buf_put(&c->data, &zero, 8));
    return col_bit(c, 0);
}

static int col_i64(Col *c, int64_t v) {
    TRY(buf_put(&c->data, &v, 8));
    return col_bit(c, 1);
}

static int col_f64(Col *c, double v) {
    TRY(buf_put(&c->data, &v, 8));
    return col_bit(c, 1);
}

/* ---------------------------------------------------------------- wire format ------------ */

typedef struct {
    const uint8_t *p, *end;
} Cur;

/* an empty window that points somewhere (no arithmetic on NULL) */
static const uint8_t EMPTY[1];
#define NONE_CUR {EMPTY, EMPTY}

static int rd_varint_slow(Cur *c, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) return DEFER;
        uint8_t b = *c->p++;
        if (shift == 63 && (b & 0x7e)) return DEFER; /* past 64 bits */
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return OK;
        }
    }
    return DEFER; /* more than 10 bytes */
}

static inline int rd_varint(Cur *c, uint64_t *out) {
    if (c->p < c->end && *c->p < 0x80) { /* one byte: most tags and lengths */
        *out = *c->p++;
        return OK;
    }
    return rd_varint_slow(c, out);
}

static int rd_fixed64(Cur *c, uint64_t *out) {
    if (c->end - c->p < 8) return DEFER;
    uint64_t v;
    memcpy(&v, c->p, 8); /* little-endian hosts only: checked at import */
    c->p += 8;
    *out = v;
    return OK;
}

/* The next field: number and wire type; for LEN fields, the payload window. Callers
   zero-initialize their Field: once this is inlined gcc cannot prove that a member is read
   only after the matching wire type filled it (-Wmaybe-uninitialized). */
typedef struct {
    uint32_t num;
    int wt;
    uint64_t v;  /* varint / fixed value */
    Cur sub;     /* LEN payload */
} Field;

static inline __attribute__((always_inline)) int rd_field(Cur *c, Field *f) {
    uint64_t tag;
    TRY(rd_varint(c, &tag));
    if (tag >> 32) return DEFER;
    f->num = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    if (f->num == 0) return DEFER;
    switch (f->wt) {
    case 0:
        return rd_varint(c, &f->v);
    case 1:
        return rd_fixed64(c, &f->v);
    case 2: {
        uint64_t n;
        TRY(rd_varint(c, &n));
        if (n > (uint64_t)(c->end - c->p)) return DEFER;
        f->sub.p = c->p;
        f->sub.end = c->p + n;
        c->p += n;
        return OK;
    }
    case 5:
        if (c->end - c->p < 4) return DEFER;
        c->p += 4;
        f->v = 0;
        return OK;
    default: /* groups (3, 4) and the reserved 6, 7 */
        return DEFER;
    }
}

#define LEN(f) ((size_t)((f).sub.end - (f).sub.p))

/* A singular string field into its slot (NONE_CUR until then). Seen twice: DEFER. Protobuf
   keeps the last copy, but upb (the reference's parser) checks the UTF-8 of every copy, so a
   request whose earlier copy is invalid must fail; rare on the wire, the reference decides. */
static inline int take_string(Cur *slot, const Field *f) {
    if (slot->p != EMPTY) return DEFER;
    *slot = f->sub;
    return OK;
}

/* 8 bytes at a time (SWAR): load unaligned, test every byte at once */
static inline uint64_t load8(const uint8_t *s) {
    uint64_t w;
    memcpy(&w, s, 8);
    return w;
}
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
/* a byte of w is below n (n <= 128), or equals c1, or equals c2 */
static inline int swar_special(uint64_t w) {
    uint64_t lt = (w - ONES * 0x20) & ~w;              /* bytes < 0x20 (and >= 0x80: masked) */
    uint64_t q = w ^ (ONES * '"'), bs = w ^ (ONES * '\\');
    uint64_t zq = (q - ONES) & ~q, zb = (bs - ONES) & ~bs; /* zero bytes: equal to " or \ */
    return ((lt | zq | zb) & HIGHS) != 0;
}

/* strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as protobuf checks proto3 strings;
   *chars gets the number of code points */
static int utf8_check(const uint8_t *s, size_t n, size_t *chars) {
    size_t i = 0, cp = 0;
    while (i < n) {
        if (n - i >= 8 && !(load8(s + i) & HIGHS)) { /* eight ASCII characters */
            i += 8;
            cp += 8;
            continue;
        }
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
        } else if (b >= 0xC2 && b <= 0xDF) {
            if (n - i < 2 || (s[i + 1] & 0xC0) != 0x80) return DEFER;
            i += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (n - i < 3 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return DEFER;
            if (b == 0xE0 && s[i + 1] < 0xA0) return DEFER; /* overlong */
            if (b == 0xED && s[i + 1] > 0x9F) return DEFER; /* surrogate */
            i += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (n - i < 4 || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return DEFER;
            if (b == 0xF0 && s[i + 1] < 0x90) return DEFER; /* overlong */
            if (b == 0xF4 && s[i + 1] > 0x8F) return DEFER; /* > U+10FFFF */
            i += 4;
        } else {
            return DEFER;
        }
        cp++;
    }
    if (chars) *chars = cp;
    return OK;
}

/* byte length of the first `chars` code points of valid UTF-8 */
static size_t utf8_prefix(const uint8_t *s, size_t n, size_t chars) {
    size_t i = 0;
    while (i < n && chars) {
        uint8_t b = s[i];
        i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        chars--;
    }
    return i;
}

/* ---------------------------------------------------------------- JSON text -------------- */

static const char HEX[] = "0123456789abcdef";

/* a JSON string as orjson writes it: ", \ and control characters escaped, the rest verbatim */
static int json_str(Buf *b, const uint8_t *s, size_t n) {
    TRY(buf_grow(b, n + 2));
    b->data[b->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        while (n - i >= 8 && !swar_special(load8(s + i))) i += 8; /* nothing to escape */
        if (i >= n) break;
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        TRY(buf_put(b, s + run, i - run));
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\t': esc[1] = 't'; break;
        case '\n': esc[1] = 'n'; break;
        case '\f': esc[1] = 'f'; break;
        case '\r': esc[1] = 'r'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = HEX[c >> 4];
            esc[5] = HEX[c & 15];
            k = 6;
        }
        TRY(buf_put(b, esc, k));
    }
    TRY(buf_put(b, s + run, n - run));
    return buf_putc(b, '"');
}

/* decimal text of v into tmp (at least 21 bytes); returns its length */
static size_t i64_text(int64_t v, char *tmp) {
    char rev[21];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t k = 0;
    if (v < 0) tmp[k++] = '-';
    while (n) tmp[k++] = rev[--n];
    return k;
}

static int put_i64(Buf *b, int64_t v) {
    char tmp[24];
    return buf_put(b, tmp, i64_text(v, tmp));
}

/* Python's repr(float) (the digits of the shortest round trip), into tmp */
static int float_repr(double v, char *tmp, size_t cap, size_t *n) {
    char *r = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!r) return NOMEM;
    size_t len = strlen(r);
    if (len >= cap) {
        PyMem_Free(r);
        return DEFER;
    }
    memcpy(tmp, r, len + 1);
    PyMem_Free(r);
    *n = len;
    return OK;
}

/* a finite double as orjson writes it: repr's digits; exponent 1e-05 spelled 0.00001, smaller
   exponents without the zero padding (1e-07 -> 1e-7); the rest as repr */
static int json_f64(Buf *b, double v) {
    char tmp[64];
    size_t n;
    TRY(float_repr(v, tmp, sizeof tmp, &n));
    char *e = memchr(tmp, 'e', n);
    if (!e || e[1] != '-') return buf_put(b, tmp, n);
    int exp = atoi(e + 1);
    if (exp == -5) {
        /* mantissa digits d[.ddd] -> 0.0000dddd */
        const char *m = tmp;
        if (*m == '-') {
            TRY(buf_putc(b, '-'));
            m++;
        }
        TRY(buf_put(b, "0.0000", 6));
        for (; m < e; m++)
            if (*m != '.') TRY(buf_putc(b, *m));
        return OK;
    }
    TRY(buf_put(b, tmp, (size_t)(e - tmp) + 2)); /* up to "e-" */
    const char *d = e + 2;
    while (*d == '0' && d[1]) d++;
    return buf_put(b, d, strlen(d));
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int json_b64(Buf *b, const uint8_t *s, size_t n) {
    if (n > SIZE_MAX / 2) return NOMEM;
    TRY(buf_grow(b, (n + 2) / 3 * 4 + 2));
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t t = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = B64[t >> 18];
        *o++ = B64[(t >> 12) & 63];
        *o++ = B64[(t >> 6) & 63];
        *o++ = B64[t & 63];
    }
    if (n - i == 1) {
        uint32_t t = (uint32_t)s[i] << 16;
        *o++ = B64[t >> 18];
        *o++ = B64[(t >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t t = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *o++ = B64[t >> 18];
        *o++ = B64[(t >> 12) & 63];
        *o++ = B64[(t >> 6) & 63];
        *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    return OK;
}

static int put_hex(Buf *b, const uint8_t *s, size_t n) {
    if (n > SIZE_MAX / 4) return NOMEM;
    TRY(buf_grow(b, 2 * n));
    for (size_t i = 0; i < n; i++) {
        b->data[b->len++] = HEX[s[i] >> 4];
        b->data[b->len++] = HEX[s[i] & 15];
    }
    return OK;
}

/* ISO 8601 UTC with microseconds, as spans.iso_time writes it */
static int put_iso(Buf *b, uint64_t ns) {
    uint64_t us = ns / 1000;
    uint64_t secs = us / 1000000, frac = us % 1000000;
    uint64_t days = secs / 86400, rem = secs % 86400;
    /* civil from days (Howard Hinnant), days since 1970-01-01 >= 0 */
    int64_t z = (int64_t)days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    char tmp[48];
    int n = snprintf(tmp, sizeof tmp, "\"%04lld-%02lld-%02lldT%02llu:%02llu:%02llu.%06lluZ\"",
                     (long long)y, (long long)m, (long long)d, (unsigned long long)(rem / 3600),
                     (unsigned long long)(rem / 60 % 60), (unsigned long long)(rem % 60),
                     (unsigned long long)frac);
    return buf_put(b, tmp, (size_t)n);
}

/* ---------------------------------------------------------------- attributes ------------- */

typedef enum { V_NONE, V_STR, V_BOOL, V_INT, V_DOUBLE, V_ARRAY, V_KVLIST, V_BYTES } VType;

/* one top-level attribute, for normalization and the cohort column */
typedef struct {
    const uint8_t *key;
    size_t klen;
    uint64_t h;       /* hash of the key */
    VType t;
    const uint8_t *s; /* V_STR: the (truncated) text */
    size_t slen;
    int64_t i;        /* V_INT, V_BOOL */
    double d;         /* V_DOUBLE */
    size_t j0, j1;    /* the value's JSON text in the output buffer */
} Attr;

typedef struct {
    Attr *a;
    size_t n, cap;
} Attrs;

typedef struct {
    size_t max_chars;
    int64_t truncated;
    Attrs span_attrs, res_attrs, scratch;
    Buf tmp; /* normalized values' text */
} Ctx;

static int attrs_push(Attrs *as, Attr **out) {
    if (as->n == as->cap) {
        size_t cap = as->cap ? as->cap * 2 : 32;
        if (cap > SIZE_MAX / sizeof(Attr)) return NOMEM;
        Attr *a = PyMem_Realloc(as->a, cap * sizeof(Attr));
        if (!a) return NOMEM;
        as->a = a;
        as->cap = cap;
    }
    *out = &as->a[as->n++];
    memset(*out, 0, sizeof(Attr));
    return OK;
}

/* duplicate keys in one object: a dict would keep the first position and the last value */
static int has_duplicate(const Attr *a, size_t n) {
    if (n < 2) return 0;
    if (n <= 24) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (a[i].h == a[j].h && a[i].klen == a[j].klen &&
                    memcmp(a[i].key, a[j].key, a[i].klen) == 0)
                    return 1;
        return 0;
    }
    size_t size = 64;
    while (size < 2 * n) size *= 2;
    size_t *slots = PyMem_Calloc(size, sizeof(size_t));
    if (!slots) return -1;
    int dup = 0;
    for (size_t i = 0; i < n && !dup; i++) {
        size_t s = (size_t)a[i].h & (size - 1);
        while (slots[s]) {
            const Attr *o = &a[slots[s] - 1];
            if (o->klen == a[i].klen && memcmp(o->key, a[i].key, o->klen) == 0) {
                dup = 1;
                break;
            }
            s = (s + 1) & (size - 1);
        }
        slots[s] = i + 1;
    }
    PyMem_Free(slots);
    return dup;
}

static int kvlist_json(Ctx *x, Buf *b, Cur c, int depth);

/* one AnyValue -> JSON into b; as->a[idx] (when as is set) gets its parsed value. Nested
   values push onto x->scratch, which may move `as->a`: no pointer into it is held across a
   recursive call. */
static int anyvalue_json(Ctx *x, Buf *b, Cur c, int depth, Attrs *as, size_t idx) {
    Attr val;
    memset(&val, 0, sizeof val);
    Attr *at = &val;
    /* the oneof: one member (two or more, rare: the reference decides, see take_string) */
    Field f, last = {0};
    int seen = 0, arrays = 0, kvlists = 0;
    while (c.p < c.end) {
        TRY(rd_field(&c, &f));
        switch (f.num) {
        case 1: case 5: case 6: case 7:
            if (f.wt != 2) return DEFER;
            if (f.num == 5 && ++arrays > 1) return DEFER;
            if (f.num == 6 && ++kvlists > 1) return DEFER;
            break;
        case 2: case 3:
            if (f.wt != 0) return DEFER;
            break;
        case 4:
            if (f.wt != 1) return DEFER;
            break;
        default: /* string_value_strindex and anything newer: the reference decides */
            return DEFER;
        }
        if (seen) return DEFER; /* two members: the reference (which validates both) decides */
        last = f;
        seen = 1;
    }
    size_t j0 = b->len;
    if (!seen) {
        TRY(buf_put(b, "null", 4));
        at->t = V_NONE;
    } else if (last.num == 1) {
        size_t chars, n = LEN(last);
        TRY(utf8_check(last.sub.p, n, &chars));
        if (chars > x->max_chars) {
            n = utf8_prefix(last.sub.p, n, x->max_chars);
            x->truncated++;
        }
        TRY(json_str(b, last.sub.p, n));
        at->t = V_STR;
        at->s = last.sub.p;
        at->slen = n;
    } else if (depth >= MAX_DEPTH) {
        return DEFER; /* the reference rejects this request: let it say so */
    } else if (last.num == 2) {
        TRY(last.v ? buf_put(b, "true", 4) : buf_put(b, "false", 5));
        at->t = V_BOOL;
        at->i = last.v != 0;
    } else if (last.num == 3) {
        TRY(put_i64(b, (int64_t)last.v));
        at->t = V_INT;
        at->i = (int64_t)last.v;
    } else if (last.num == 4) {
        double d;
        memcpy(&d, &last.v, 8);
        if (d != d || d - d != 0) return DEFER; /* NaN/inf: written as text by the reference */
        TRY(json_f64(b, d));
        at->t = V_DOUBLE;
        at->d = d;
    } else if (last.num == 5) {
        Cur a = last.sub;
        TRY(buf_putc(b, '['));
        int first = 1;
        while (a.p < a.end) {
            TRY(rd_field(&a, &f));
            if (f.num != 1 || f.wt != 2) return DEFER;
            if (!first) TRY(buf_putc(b, ','));
            first = 0;
            TRY(anyvalue_json(x, b, f.sub, depth + 1, NULL, 0));
        }
        TRY(buf_putc(b, ']'));
        at->t = V_ARRAY;
    } else if (last.num == 6) {
        TRY(kvlist_json(x, b, last.sub, depth + 1));
        at->t = V_KVLIST;
    } else { /* 7: bytes, as base64 of at most the bytes whose base64 fits the limit */
        size_t n = LEN(last), limit = x->max_chars * 3 / 4;
        if (n > limit) {
            n = limit;
            x->truncated++;
        }
        TRY(json_b64(b, last.sub.p, n));
        at->t = V_BYTES;
    }
    if (as) {
        Attr *dst = &as->a[idx];
        dst->t = val.t;
        dst->s = val.s;
        dst->slen = val.slen;
        dst->i = val.i;
        dst->d = val.d;
        dst->j0 = j0;
        dst->j1 = b->len;
    }
    return OK;
}

/* one KeyValue (key and value may come in either order) -> "key":value, recorded in
   as->a[idx] */
static int keyvalue_json(Ctx *x, Buf *b, Cur c, int depth, Attrs *as, size_t idx, int first) {
    Field f = {0};
    Cur value = NONE_CUR, keyc = NONE_CUR;
    int values = 0;
    while (c.p < c.end) {
        TRY(rd_field(&c, &f));
        if (f.num == 1 && f.wt == 2) {
            TRY(take_string(&keyc, &f));
        } else if (f.num == 2 && f.wt == 2) {
            if (++values > 1) return DEFER; /* a second value merges into the first */
            value = f.sub;
        } else {
            return DEFER;
        }
    }
    const uint8_t *key = keyc.p;
    size_t klen = (size_t)(keyc.end - keyc.p);
    TRY(utf8_check(key, klen, NULL));
    as->a[idx].h = key_hash(key, klen);
    if (!first) TRY(buf_putc(b, ','));
    TRY(json_str(b, key, klen));
    TRY(buf_putc(b, ':'));
    as->a[idx].key = key;
    as->a[idx].klen = klen;
    if (!values) { /* no value: an empty AnyValue, i.e. None */
        size_t j0 = b->len;
        TRY(buf_put(b, "null", 4));
        as->a[idx].t = V_NONE;
        as->a[idx].j0 = j0;
        as->a[idx].j1 = b->len;
        return OK;
    }
    return anyvalue_json(x, b, value, depth, as, idx);
}

/* the KeyValue fields numbered `num` of message c -> a JSON object; top-level attributes
   (depth 0) are recorded in `top` */
static int attrs_json(Ctx *x, Buf *b, Cur c, uint32_t num, int depth, Attrs *top) {
    Attrs *as = top ? top : &x->scratch;
    size_t base = as->n;
    Field f = {0};
    TRY(buf_putc(b, '{'));
    while (c.p < c.end) {
        TRY(rd_field(&c, &f));
        if (f.num != num) continue; /* the caller has checked the other fields */
        Attr *kv;
        TRY(attrs_push(as, &kv));
        size_t idx = as->n - 1;
        TRY(keyvalue_json(x, b, f.sub, depth, as, idx, idx == base));
    }
    int dup = has_duplicate(as->a + base, as->n - base);
    if (!top) as->n = base;
    if (dup < 0) return NOMEM;
    if (dup) return DEFER;
    return buf_putc(b, '}');
}

static int kvlist_json(Ctx *x, Buf *b, Cur c, int depth) {
    /* KeyValueList: field 1, repeated KeyValue; anything else defers */
    Cur scan = c;
    Field f = {0};
    while (scan.p < scan.end) {
        TRY(rd_field(&scan, &f));
        if (f.num != 1 || f.wt != 2) return DEFER;
    }
    /* nested keys use the scratch list (the top-level list is in use) */
    Attrs *as = &x->scratch;
    size_t base = as->n;
    TRY(buf_putc(b, '{'));
    while (c.p < c.end) {
        TRY(rd_field(&c, &f));
        Attr *kv;
        TRY(attrs_push(as, &kv));
        size_t idx = as->n - 1;
        TRY(keyvalue_json(x, b, f.sub, depth, as, idx, idx == base));
    }
    int dup = has_duplicate(as->a + base, as->n - base);
    as->n = base;
    if (dup < 0) return NOMEM;
    if (dup) return DEFER;
    return buf_putc(b, '}');
}

/* ---------------------------------------------------------------- normalization ---------- */

typedef struct {
    int set, rank;
    char t;            /* 's', 'i', 'f' */
    size_t s0, slen;   /* 's': text in ctx->tmp */
    int64_t i;
    double d;
} Norm;

/* only the fields the value's type uses (convert sets no others); a whole-struct
   copy here compiled to `rep movs`, slow for 48 bytes */
static inline void norm_set(Norm *n, const Norm *v, int rank) {
    n->t = v->t;
    if (v->t == 's') {
        n->s0 = v->s0;
        n->slen = v->slen;
    } else if (v->t == 'i') {
        n->i = v->i;
    } else {
        n->d = v->d;
    }
    n->rank = rank;
    n->set = 1;
}

static int norm_text(Ctx *x, Norm *n, const void *s, size_t len) {
    n->s0 = x->tmp.len;
    n->slen = len;
    n->t = 's';
    return buf_put(&x->tmp, s, len);
}

/* _str(raw): 1 if it gave a value, 0 if None */
static int conv_str(Ctx *x, const Attr *a, const Buf *json, Norm *n) {
    char tmp[64];
    size_t len;
    switch (a->t) {
    case V_STR:
        TRY(norm_text(x, n, a->s, a->slen));
        return -1;
    case V_BYTES: /* the base64 text between the JSON quotes */
        TRY(norm_text(x, n, json->data + a->j0 + 1, a->j1 - a->j0 - 2));
        return -1;
    case V_BOOL:
        TRY(a->i ? norm_text(x, n, "true", 4) : norm_text(x, n, "false", 5));
        return -1;
    case V_INT:
        len = i64_text(a->i, tmp);
        TRY(norm_text(x, n, tmp, len));
        return -1;
    case V_DOUBLE:
        TRY(float_repr(a->d, tmp, sizeof tmp, &len));
        TRY(norm_text(x, n, tmp, len));
        return -1;
    default: /* None, list, dict */
        return 0;
    }
}

/* text -> normalize.py's own conversion (Python's int()/float()/JSON rules, exactly) */
static int convert_text(Ctx *x, Conv conv, const char *s, size_t len, Norm *n) {
    PyObject *arg = PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "strict");
    if (!arg) {
        PyErr_Clear();
        return DEFER;
    }
    PyObject *r = PyObject_CallOneArg(cfg.conv_py[conv], arg);
    Py_DECREF(arg);
    if (!r) {
        PyErr_Clear();
        return DEFER;
    }
    int rc = 0;
    if (r == Py_None) {
        rc = 0;
    } else if (PyUnicode_Check(r)) {
        Py_ssize_t k;
        const char *u = PyUnicode_AsUTF8AndSize(r, &k);
        if (!u) {
            PyErr_Clear();
            rc = DEFER;
        } else {
            rc = norm_text(x, n, u, (size_t)k);
            if (!rc) rc = -1;
        }
    } else if (PyLong_CheckExact(r)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(r, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            rc = DEFER;
        } else {
            n->t = 'i';
            n->i = v;
            rc = -1;
        }
    } else if (PyFloat_CheckExact(r)) {
        n->t = 'f';
        n->d = PyFloat_AS_DOUBLE(r);
        rc = -1;
    } else {
        rc = DEFER;
    }
    Py_DECREF(r);
    return rc;
}

/* the text of a string or bytes (base64) attribute */
static void attr_text(const Attr *a, const Buf *json, const char **s, size_t *len) {
    if (a->t == V_STR) {
        *s = (const char *)a->s;
        *len = a->slen;
    } else { /* V_BYTES: between the JSON quotes */
        *s = json->data + a->j0 + 1;
        *len = a->j1 - a->j0 - 2;
    }
}

/* Codes: -1 = converted (value in n), 0 = None, OK/DEFER/NOMEM never mixed: see callers. */
static int convert(Ctx *x, Conv conv, const Attr *a, const Buf *json, Norm *n) {
    const char *text;
    size_t tlen;
    switch (conv) {
    case CONV_STR:
        return conv_str(x, a, json, n);
    case CONV_INT:
        if (a->t == V_INT) {
            n->t = 'i';
            n->i = a->i;
            return -1;
        }
        if (a->t == V_DOUBLE) {
            double d = a->d; /* finite here */
            if (!(d < 9e18 && d > -9e18)) return 0;
            n->t = 'i';
            n->i = (int64_t)d;
            return -1;
        }
        if (a->t == V_STR || a->t == V_BYTES) { /* int(text): Python's rules */
            attr_text(a, json, &text, &tlen);
            return convert_text(x, conv, text, tlen, n);
        }
        return 0;
    case CONV_SECONDS_TO_MS:
    case CONV_MS:
        if (a->t == V_INT) {
            n->t = 'f';
            n->d = (double)a->i * (conv == CONV_MS ? 1.0 : 1000.0);
            return -1;
        }
        if (a->t == V_DOUBLE) {
            n->t = 'f';
            n->d = a->d * (conv == CONV_MS ? 1.0 : 1000.0);
            return -1;
        }
        if (a->t == V_STR || a->t == V_BYTES) { /* float(text) */
            attr_text(a, json, &text, &tlen);
            return convert_text(x, conv, text, tlen, n);
        }
        return 0;
    case CONV_JSON_STR:
        if (a->t == V_STR && a->slen > 0 && a->s[0] == '"') /* JSON text: Python's rules */
            return convert_text(x, conv, (const char *)a->s, a->slen, n);
        return conv_str(x, a, json, n);
    case CONV_LOGFIRE_KIND:
        if (a->t == V_STR && ((a->slen == 3 && memcmp(a->s, "log", 3) == 0) ||
                              (a->slen == 12 && memcmp(a->s, "pending_span", 12) == 0))) {
            TRY(norm_text(x, n, a->s, a->slen));
            return -1;
        }
        return 0;
    case CONV_MODEL_OF_PARAMS:
        if (a->t != V_STR) return 0; /* base64 text never holds a quote */
        {
            static const char needle[] = "\"model\"";
            size_t k = sizeof needle - 1;
            for (size_t i = 0; i + k <= a->slen; i++)
                if (memcmp(a->s + i, needle, k) == 0) /* JSON text: parsed as Python does */
                    return convert_text(x, conv, (const char *)a->s, a->slen, n);
        }
        return 0;
    }
    return DEFER;
}

static const KeyRule *rule_for(const uint8_t *key, size_t len, uint64_t h) {
    for (size_t s = (size_t)h & (RULE_SLOTS - 1);; s = (s + 1) & (RULE_SLOTS - 1)) {
        int i = cfg.rule_slot[s];
        if (!i) return NULL;
        const KeyRule *r = &cfg.rules[i - 1];
        if ((size_t)r->len == len && memcmp(r->key, key, len) == 0) return r;
    }
}

static const Attr *find_attr(const Attrs *as, const char *key, size_t len) {
    for (size_t i = 0; i < as->n; i++)
        if (as->a[i].klen == len && memcmp(as->a[i].key, key, len) == 0) return &as->a[i];
    return NULL;
}

/* normalize(attrs, resource) -> norm[]; the cohort JSON (or nothing) into cohort */
static int normalize(Ctx *x, const Buf *attr_json, const Buf *res_json, Norm *norm,
                     Buf *cohort, int *has_cohort) {
    for (int k = 0; k < N_NORM; k++) norm[k].set = 0; /* the rest is read only when set */
    *has_cohort = 0;
    x->tmp.len = 0;
    const Attrs *as = &x->span_attrs;
    for (size_t i = 0; i < as->n; i++) {
        const Attr *a = &as->a[i];
        const KeyRule *r = rule_for(a->key, a->klen, a->h);
        if (r) {
            if (a->t == V_NONE) continue;
            Norm *n = &norm[r->idx];
            if (n->set && n->rank <= r->rank) continue;
            Norm v; /* n keeps its value unless this one converts */
            int rc = convert(x, r->conv, a, attr_json, &v);
            if (rc == -1) {
                norm_set(n, &v, r->rank);
            } else if (rc) {
                return rc;
            }
        } else if (a->klen >= (size_t)cfg.cohort.len &&
                   memcmp(a->key, cfg.cohort.key, (size_t)cfg.cohort.len) == 0) {
            TRY(buf_putc(cohort, *has_cohort ? ',' : '{'));
            *has_cohort = 1;
            TRY(json_str(cohort, a->key + cfg.cohort.len, a->klen - (size_t)cfg.cohort.len));
            TRY(buf_putc(cohort, ':'));
            TRY(buf_put(cohort, attr_json->data + a->j0, a->j1 - a->j0));
        }
    }
    if (*has_cohort) TRY(buf_putc(cohort, '}'));
    if (!norm[cfg.base].set) {
        if (norm[cfg.req].set)
            norm[cfg.base] = norm[cfg.req];
        else if (norm[cfg.resp].set)
            norm[cfg.base] = norm[cfg.resp];
    }
    for (int k = 0; k < cfg.n_fb; k++) {
        Norm *n = &norm[cfg.fb_idx[k]];
        if (n->set) continue;
        const Attr *a = find_attr(&x->res_attrs, cfg.fb_key[k].key, (size_t)cfg.fb_key[k].len);
        if (!a || a->t == V_NONE) continue;
        Norm v;
        int rc = conv_str(x, a, res_json, &v);
        if (rc == -1) {
            norm_set(n, &v, 0);
        } else if (rc) {
            return rc;
        }
    }
    return OK;
}

/* ---------------------------------------------------------------- spans ------------------ */

typedef struct {
    Col cols[N_COLS];
    Buf res_json;       /* the current resource's JSON */
    const uint8_t *service;
    size_t service_len; /* service_len == SIZE_MAX: no service name */
    Cur scope_name, scope_version;
    int64_t rows;
} Out;

enum {
    C_TRACE, C_SPAN, C_PARENT, C_NAME, C_KIND, C_SERVICE, C_START, C_END, C_DURATION,
    C_STATUS, C_STATUS_MSG, C_NORM0,
    C_COHORT = C_NORM0 + N_NORM, C_ATTRS, C_RESOURCE, C_EVENTS, C_LINKS, C_SCOPE_NAME,
    C_SCOPE_VERSION
};

static const char *KIND_NAMES[] = {"UNSPECIFIED", "INTERNAL", "SERVER",
                                   "CLIENT",      "PRODUCER", "CONSUMER"};
static const char *STATUS_NAMES[] = {"UNSET", "OK", "ERROR"};

static int is_first_token(const uint8_t *name, size_t len) {
    for (Py_ssize_t i = 0; i < cfg.n_first_token; i++)
        if ((size_t)cfg.first_token[i].len == len &&
            memcmp(cfg.first_token[i].key, name, len) == 0)
            return 1;
    return 0;
}

static int all_zero(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i]) return 0;
    return 1;
}

/* Event: {"name", "time", "attributes"} */
static int event_json(Ctx *x, Buf *b, Cur c, uint64_t *time_out, const uint8_t **name_out,
                      size_t *name_len) {
    Cur scan = c;
    Field f = {0};
    uint64_t t = 0;
    Cur namec = NONE_CUR;
    while (scan.p < scan.end) {
        TRY(rd_field(&scan, &f));
        if (f.num == 1 && f.wt == 1) t = f.v;
        else if (f.num == 2 && f.wt == 2) TRY(take_string(&namec, &f));
        else if (f.num == 3 && f.wt == 2) {}
        else if (f.num == 4 && f.wt == 0) {}
        else return DEFER;
    }
    const uint8_t *name = namec.p;
    size_t nlen = (size_t)(namec.end - namec.p);
    TRY(utf8_check(name, nlen, NULL));
    TRY(buf_put(b, "{\"name\":", 8));
    TRY(json_str(b, name, nlen));
    TRY(buf_put(b, ",\"time\":", 8));
    TRY(put_iso(b, t));
    TRY(buf_put(b, ",\"attributes\":", 14));
    TRY(attrs_json(x, b, c, 3, 0, NULL));
    *time_out = t;
    *name_out = name;
    *name_len = nlen;
    return buf_putc(b, '}');
}

/* Link: {"trace_id", "span_id", "attributes"[, "trace_state"]} */
static int link_json(Ctx *x, Buf *b, Cur c) {
    Cur scan = c;
    Field f = {0};
    Cur tid = NONE_CUR, sid = NONE_CUR, ts = NONE_CUR;
    while (scan.p < scan.end) {
        TRY(rd_field(&scan, &f));
        if (f.num == 1 && f.wt == 2) tid = f.sub;
        else if (f.num == 2 && f.wt == 2) sid = f.sub;
        else if (f.num == 3 && f.wt == 2) TRY(take_string(&ts, &f));
        else if (f.num == 4 && f.wt == 2) {}
        else if (f.num == 5 && f.wt == 0) {}
        else if (f.num == 6 && f.wt == 5) {}
        else return DEFER;
    }
    TRY(buf_put(b, "{\"trace_id\":\"", 13));
    TRY(put_hex(b, tid.p, (size_t)(tid.end - tid.p)));
    TRY(buf_put(b, "\",\"span_id\":\"", 13));
    TRY(put_hex(b, sid.p, (size_t)(sid.end - sid.p)));
    TRY(buf_put(b, "\",\"attributes\":", 15));
    TRY(attrs_json(x, b, c, 4, 0, NULL));
    size_t tslen = (size_t)(ts.end - ts.p);
    TRY(utf8_check(ts.p, tslen, NULL));
    if (tslen) {
        TRY(buf_put(b, ",\"trace_state\":", 15));
        TRY(json_str(b, ts.p, tslen));
    }
    return buf_putc(b, '}');
}

static int put_enum(Col *col, uint64_t v, const char **names, int n) {
    int32_t e = (int32_t)(uint32_t)v;
    const char *s = (e >= 0 && e < n) ? names[e] : names[0];
    return col_str(col, s, strlen(s));
}

static int span_row(Ctx *x, Out *o, Cur c) {
    Field f = {0};
    Cur tid = NONE_CUR, sid = NONE_CUR, parent = NONE_CUR, name = NONE_CUR;
    Cur status = NONE_CUR;
    uint64_t kind = 0, start = 0, end = 0;
    int statuses = 0;
    /* where the attributes and the events/links lie: the later passes scan only there */
    Cur attrs = NONE_CUR, evlinks = NONE_CUR;
    Cur scan = c;
    while (scan.p < scan.end) {
        const uint8_t *at = scan.p;
        TRY(rd_field(&scan, &f));
        if (f.num == 9) {
            if (attrs.p == EMPTY) attrs.p = at;
            attrs.end = scan.p;
        } else if (f.num == 11 || f.num == 13) {
            if (evlinks.p == EMPTY) evlinks.p = at;
            evlinks.end = scan.p;
        }
        switch (f.num) {
        case 1: if (f.wt != 2) return DEFER; tid = f.sub; break;
        case 2: if (f.wt != 2) return DEFER; sid = f.sub; break;
        case 3: /* trace_state: validated, not stored */
            if (f.wt != 2) return DEFER;
            TRY(utf8_check(f.sub.p, LEN(f), NULL));
            break;
        case 4: if (f.wt != 2) return DEFER; parent = f.sub; break;
        case 5: if (f.wt != 2) return DEFER; TRY(take_string(&name, &f)); break;
        case 6: if (f.wt != 0) return DEFER; kind = f.v; break;
        case 7: if (f.wt != 1) return DEFER; start = f.v; break;
        case 8: if (f.wt != 1) return DEFER; end = f.v; break;
        case 9: case 11: case 13: if (f.wt != 2) return DEFER; break;
        case 10: case 12: case 14: if (f.wt != 0) return DEFER; break;
        case 15:
            if (f.wt != 2 || ++statuses > 1) return DEFER;
            status = f.sub;
            break;
        case 16: if (f.wt != 5) return DEFER; break;
        default: return DEFER;
        }
    }
    size_t tlen = (size_t)(tid.end - tid.p), slen = (size_t)(sid.end - sid.p);
    size_t plen = (size_t)(parent.end - parent.p), nlen = (size_t)(name.end - name.p);
    /* a rejected span: the reference counts it and words the message */
    if (tlen != 16 || all_zero(tid.p, 16) || slen != 8 || all_zero(sid.p, 8)) return DEFER;
    TRY(utf8_check(name.p, nlen, NULL));
    uint64_t status_code = 0;
    Cur smsg = NONE_CUR;
    for (Cur s = status; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 2 && f.wt == 2) TRY(take_string(&smsg, &f));
        else if (f.num == 3 && f.wt == 0) status_code = f.v;
        else return DEFER;
    }
    size_t smlen = (size_t)(smsg.end - smsg.p);
    TRY(utf8_check(smsg.p, smlen, NULL));

    /* attributes, straight into the column (their values' JSON offsets index its buffer) */
    Col *ac = &o->cols[C_ATTRS];
    x->span_attrs.n = 0;
    TRY(attrs_json(x, &ac->data, attrs, 9, 0, &x->span_attrs));
    /* events and links */
    Col *ec = &o->cols[C_EVENTS], *lc = &o->cols[C_LINKS];
    int events = 0, links = 0, have_first = 0;
    uint64_t first_token = 0;
    for (Cur s = evlinks; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 11) {
            TRY(buf_putc(&ec->data, events++ ? ',' : '['));
            uint64_t t;
            const uint8_t *en;
            size_t enlen;
            TRY(event_json(x, &ec->data, f.sub, &t, &en, &enlen));
            if (!have_first && is_first_token(en, enlen)) {
                have_first = 1;
                first_token = t;
            }
        } else if (f.num == 13) {
            TRY(buf_putc(&lc->data, links++ ? ',' : '['));
            TRY(link_json(x, &lc->data, f.sub));
        }
    }
    if (events) TRY(buf_putc(&ec->data, ']'));
    if (links) TRY(buf_putc(&lc->data, ']'));

    Norm norm[N_NORM];
    Buf *cb = &o->cols[C_COHORT].data;
    int has_cohort;
    TRY(normalize(x, &ac->data, &o->res_json, norm, cb, &has_cohort));
    if (have_first && !norm[cfg.ttft].set && first_token >= start) {
        norm[cfg.ttft].set = 1;
        norm[cfg.ttft].t = 'f';
        norm[cfg.ttft].d = (double)(first_token - start) / 1e6;
    }

    /* the row, column by column */
    Col *col = o->cols;
    TRY(put_hex(&col[C_TRACE].data, tid.p, tlen));
    TRY(col_end_str(&col[C_TRACE], 1));
    TRY(put_hex(&col[C_SPAN].data, sid.p, slen));
    TRY(col_end_str(&col[C_SPAN], 1));
    if (plen && !(plen == 8 && all_zero(parent.p, 8))) {
        TRY(put_hex(&col[C_PARENT].data, parent.p, plen));
        TRY(col_end_str(&col[C_PARENT], 1));
    } else {
        TRY(col_null(&col[C_PARENT]));
    }
    TRY(col_str(&col[C_NAME], (const char *)name.p, nlen));
    TRY(put_enum(&col[C_KIND], kind, KIND_NAMES, 6));
    if (o->service_len != SIZE_MAX)
        TRY(col_str(&col[C_SERVICE], (const char *)o->service, o->service_len));
    else
        TRY(col_null(&col[C_SERVICE]));
    TRY(col_i64(&col[C_START], (int64_t)(start / 1000)));
    TRY(col_i64(&col[C_END], (int64_t)(end / 1000)));
    double dur = end >= start ? (double)(end - start) : -(double)(start - end);
    TRY(col_f64(&col[C_DURATION], dur / 1e6));
    TRY(put_enum(&col[C_STATUS], status_code, STATUS_NAMES, 3));
    if (smlen)
        TRY(col_str(&col[C_STATUS_MSG], (const char *)smsg.p, smlen));
    else
        TRY(col_null(&col[C_STATUS_MSG]));
    for (int k = 0; k < N_NORM; k++) {
        Col *nc = &col[C_NORM0 + k];
        Norm *n = &norm[k];
        if (!n->set) {
            TRY(col_null(nc));
        } else if (nc->type == 's') {
            if (n->t != 's') return DEFER; /* a type the reference would coerce */
            TRY(col_str(nc, x->tmp.data + n->s0, n->slen));
        } else if (nc->type == 'i') {
            if (n->t != 'i') return DEFER;
            TRY(col_i64(nc, n->i));
        } else {
            if (n->t != 'f') return DEFER;
            TRY(col_f64(nc, n->d));
        }
    }
    TRY(col_end_str(&col[C_COHORT], has_cohort));
    TRY(col_end_str(ac, 1));
    TRY(col_str(&col[C_RESOURCE], o->res_json.data, o->res_json.len));
    TRY(col_end_str(ec, events > 0));
    TRY(col_end_str(lc, links > 0));
    size_t snl = (size_t)(o->scope_name.end - o->scope_name.p);
    size_t svl = (size_t)(o->scope_version.end - o->scope_version.p);
    if (snl)
        TRY(col_str(&col[C_SCOPE_NAME], (const char *)o->scope_name.p, snl));
    else
        TRY(col_null(&col[C_SCOPE_NAME]));
    if (svl)
        TRY(col_str(&col[C_SCOPE_VERSION], (const char *)o->scope_version.p, svl));
    else
        TRY(col_null(&col[C_SCOPE_VERSION]));
    o->rows++;
    return OK;
}

static int scope_spans(Ctx *x, Out *o, Cur c) {
    Field f = {0};
    int scopes = 0;
    Cur scope = NONE_CUR;
    for (Cur s = c; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 1 && f.wt == 2) {
            if (++scopes > 1) return DEFER;
            scope = f.sub;
        } else if (f.num == 2 && f.wt == 2) {
        } else if (f.num == 3 && f.wt == 2) {
            TRY(utf8_check(f.sub.p, LEN(f), NULL));
        } else {
            return DEFER;
        }
    }
    o->scope_name.p = o->scope_name.end = EMPTY;
    o->scope_version.p = o->scope_version.end = EMPTY;
    for (Cur s = scope; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 1 && f.wt == 2) TRY(take_string(&o->scope_name, &f));
        else if (f.num == 2 && f.wt == 2) TRY(take_string(&o->scope_version, &f));
        else if (f.num == 4 && f.wt == 0) {}
        else return DEFER; /* scope attributes: rare, the reference validates them */
    }
    TRY(utf8_check(o->scope_name.p, (size_t)(o->scope_name.end - o->scope_name.p), NULL));
    TRY(utf8_check(o->scope_version.p, (size_t)(o->scope_version.end - o->scope_version.p),
                   NULL));
    for (Cur s = c; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 2) TRY(span_row(x, o, f.sub));
    }
    return OK;
}

static int resource_spans(Ctx *x, Out *o, Cur c) {
    Field f = {0};
    int resources = 0;
    Cur res = NONE_CUR;
    for (Cur s = c; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 1 && f.wt == 2) {
            if (++resources > 1) return DEFER;
            res = f.sub;
        } else if (f.num == 2 && f.wt == 2) {
        } else if (f.num == 3 && f.wt == 2) {
            TRY(utf8_check(f.sub.p, LEN(f), NULL));
        } else {
            return DEFER;
        }
    }
    for (Cur s = res; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 1 && f.wt == 2) {}
        else if (f.num == 2 && f.wt == 0) {}
        else return DEFER; /* entity_refs and newer: the reference */
    }
    o->res_json.len = 0;
    x->res_attrs.n = 0;
    TRY(attrs_json(x, &o->res_json, res, 1, 0, &x->res_attrs));
    const Attr *svc = find_attr(&x->res_attrs, cfg.service.key, (size_t)cfg.service.len);
    o->service_len = SIZE_MAX;
    if (svc && svc->t == V_STR) {
        o->service = svc->s;
        o->service_len = svc->slen;
    } else if (svc && svc->t == V_BYTES) { /* base64 text: a str to the reference too */
        o->service = (const uint8_t *)o->res_json.data + svc->j0 + 1;
        o->service_len = svc->j1 - svc->j0 - 2;
        /* res_json does not move while this resource's spans are written */
    }
    for (Cur s = c; s.p < s.end;) {
        TRY(rd_field(&s, &f));
        if (f.num == 2) TRY(scope_spans(x, o, f.sub));
    }
    return OK;
}

static int decode_request(Ctx *x, Out *o, Cur c) {
    Field f = {0};
    for (Cur s = c; s.p < s.end;) { /* validate the top level before any work */
        TRY(rd_field(&s, &f));
        if (f.num != 1 || f.wt != 2) return DEFER;
    }
    while (c.p < c.end) {
        TRY(rd_field(&c, &f));
        TRY(resource_spans(x, o, f.sub));
    }
    return OK;
}

/* ---------------------------------------------------------------- Python API ------------- */

static void out_free(Out *o) {
    for (int i = 0; i < N_COLS; i++) {
        buf_free(&o->cols[i].valid);
        buf_free(&o->cols[i].offsets);
        buf_free(&o->cols[i].data);
    }
    buf_free(&o->res_json);
}

static void ctx_free(Ctx *x) {
    PyMem_Free(x->span_attrs.a);
    PyMem_Free(x->res_attrs.a);
    PyMem_Free(x->scratch.a);
    buf_free(&x->tmp);
}

static PyObject *bytes_of(const Buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

static PyObject *col_to_py(Col *c) {
    /* (null_count, validity or None, offsets or None, data) */
    PyObject *valid = c->nulls ? bytes_of(&c->valid) : (Py_INCREF(Py_None), Py_None);
    PyObject *offs;
    if (c->type == 's') {
        offs = bytes_of(&c->offsets); /* n + 1 offsets: 0, then each row's end */
    } else {
        offs = (Py_INCREF(Py_None), Py_None);
    }
    PyObject *data = bytes_of(&c->data);
    if (!valid || !offs || !data) {
        Py_XDECREF(valid);
        Py_XDECREF(offs);
        Py_XDECREF(data);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    return Py_BuildValue("(LNNN)", (long long)c->nulls, valid, offs, data);
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer body;
    Py_ssize_t max_chars;
    if (!PyArg_ParseTuple(args, "y*n", &body, &max_chars)) return NULL;
    if (!cfg.ready) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_RuntimeError, "configure() has not run");
        return NULL;
    }
    if (max_chars < 0) max_chars = 0;
    Ctx x;
    memset(&x, 0, sizeof x);
    x.max_chars = (size_t)max_chars;
    Out o;
    memset(&o, 0, sizeof o);
    static const char types[N_COLS] = {
        's', 's', 's', 's', 's', 's', 'i', 'i', 'f', 's', 's',
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* normalized: from configure() */
        's', 's', 's', 's', 's', 's', 's'};
    for (int i = 0; i < N_COLS; i++) o.cols[i].type = types[i];
    for (int k = 0; k < N_NORM; k++) o.cols[C_NORM0 + k].type = cfg.norm_type[k];
    for (int i = 0; i < N_COLS; i++)
        if (o.cols[i].type == 's' && col_offset(&o.cols[i])) { /* offsets start at 0 */
            out_free(&o);
            PyBuffer_Release(&body);
            return PyErr_NoMemory();
        }
    Cur c = {(const uint8_t *)body.buf, (const uint8_t *)body.buf + body.len};
    int rc = decode_request(&x, &o, c);
    PyBuffer_Release(&body);
    PyObject *result = NULL;
    if (rc == NOMEM) {
        PyErr_NoMemory();
    } else if (rc == DEFER) {
        result = (Py_INCREF(Py_None), Py_None);
    } else {
        PyObject *cols = PyList_New(N_COLS);
        if (cols) {
            for (int i = 0; i < N_COLS; i++) {
                PyObject *t = col_to_py(&o.cols[i]);
                if (!t) {
                    Py_CLEAR(cols);
                    break;
                }
                PyList_SET_ITEM(cols, i, t);
            }
        }
        if (cols) result = Py_BuildValue("(LLN)", (long long)o.rows, (long long)x.truncated, cols);
    }
    out_free(&o);
    ctx_free(&x);
    return result;
}

static int copy_str(PyObject *s, Str *out) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) return -1;
    out->key = PyMem_Malloc((size_t)n + 1);
    if (!out->key) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(out->key, u, (size_t)n + 1);
    out->len = n;
    return 0;
}

/* configure(rules, cohort_prefix, service_key, first_token_events, fallbacks, base, req,
 *           resp, ttft, norm_types, conversions)
 *   rules: [(key, column index, rank, conv code)], fallbacks: [(column index, key)],
 *   norm_types: str of N_NORM 's'/'i'/'f', conversions: normalize.py's [_str, _int,
 *   _seconds_to_ms, _model_of_params, _ms, _json_str, _logfire_kind] (called for text only).
 *   Called once by __init__.py from normalize.py's tables, so the keys are defined in one
 *   place. */
static PyObject *py_configure(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *rules, *cohort, *service, *first, *fallbacks, *convs;
    int base, req, resp, ttft;
    const char *types;
    Py_ssize_t ntypes;
    if (!PyArg_ParseTuple(args, "O!UUO!O!iiiis#O!", &PyList_Type, &rules, &cohort, &service,
                          &PyList_Type, &first, &PyList_Type, &fallbacks, &base, &req, &resp,
                          &ttft, &types, &ntypes, &PyList_Type, &convs))
        return NULL;
    if (PyList_GET_SIZE(convs) != N_CONV) {
        PyErr_SetString(PyExc_ValueError, "one callable per conversion code");
        return NULL;
    }
    for (int i = 0; i < N_CONV; i++)
        if (!PyCallable_Check(PyList_GET_ITEM(convs, i))) {
            PyErr_SetString(PyExc_TypeError, "conversions are callables");
            return NULL;
        }
    if (cfg.ready) {
        PyErr_SetString(PyExc_RuntimeError, "configure() runs once");
        return NULL;
    }
    if (ntypes != N_NORM || PyList_GET_SIZE(fallbacks) > N_NORM) {
        PyErr_SetString(PyExc_ValueError, "the normalized columns changed: rebuild the decoder");
        return NULL;
    }
    for (int i = 0; i < N_NORM; i++)
        if (types[i] != 's' && types[i] != 'i' && types[i] != 'f') {
            PyErr_SetString(PyExc_ValueError, "normalized column types are s, i or f");
            return NULL;
        }
    int idx[] = {base, req, resp, ttft};
    for (int i = 0; i < 4; i++)
        if (idx[i] < 0 || idx[i] >= N_NORM) {
            PyErr_SetString(PyExc_ValueError, "column index out of range");
            return NULL;
        }
    Py_ssize_t n = PyList_GET_SIZE(rules);
    if (n > RULE_SLOTS / 4) {
        PyErr_SetString(PyExc_ValueError, "too many normalization rules for RULE_SLOTS");
        return NULL;
    }
    cfg.rules = PyMem_Calloc((size_t)n + 1, sizeof(KeyRule));
    cfg.first_token = PyMem_Calloc((size_t)PyList_GET_SIZE(first) + 1, sizeof(Str));
    if (!cfg.rules || !cfg.first_token) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key;
        int cidx, rank, conv;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rules, i), "Uiii", &key, &cidx, &rank, &conv))
            return NULL;
        if (cidx < 0 || cidx >= N_NORM || conv < 0 || conv >= N_CONV) {
            PyErr_SetString(PyExc_ValueError, "bad rule");
            return NULL;
        }
        Str s;
        if (copy_str(key, &s)) return NULL;
        cfg.rules[i] = (KeyRule){s.key, s.len, cidx, rank, (Conv)conv};
        cfg.n_rules = i + 1;
        size_t slot = (size_t)key_hash((const uint8_t *)s.key, (size_t)s.len) & (RULE_SLOTS - 1);
        while (cfg.rule_slot[slot]) slot = (slot + 1) & (RULE_SLOTS - 1);
        cfg.rule_slot[slot] = (int)i + 1;
    }
    if (copy_str(cohort, &cfg.cohort) || copy_str(service, &cfg.service)) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(first); i++) {
        PyObject *s = PyList_GET_ITEM(first, i);
        if (!PyUnicode_Check(s)) {
            PyErr_SetString(PyExc_TypeError, "event names are str");
            return NULL;
        }
        if (copy_str(s, &cfg.first_token[i])) return NULL;
        cfg.n_first_token = i + 1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fallbacks); i++) {
        PyObject *key;
        int cidx;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(fallbacks, i), "iU", &cidx, &key)) return NULL;
        if (cidx < 0 || cidx >= N_NORM) {
            PyErr_SetString(PyExc_ValueError, "bad fallback");
            return NULL;
        }
        cfg.fb_idx[i] = cidx;
        if (copy_str(key, &cfg.fb_key[i])) return NULL;
        cfg.n_fb = (int)i + 1;
    }
    cfg.base = base;
    cfg.req = req;
    cfg.resp = resp;
    cfg.ttft = ttft;
    memcpy(cfg.norm_type, types, N_NORM);
    for (int i = 0; i < N_CONV; i++) {
        cfg.conv_py[i] = PyList_GET_ITEM(convs, i);
        Py_INCREF(cfg.conv_py[i]);
    }
    cfg.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", py_decode, METH_VARARGS,
     "decode(body, max_attribute_chars) -> (rows, truncated, columns) or None (defer)"},
    {"configure", py_configure, METH_VARARGS, "configure(...): the normalization tables"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT,
                                    "_otlp",
                                    "OTLP protobuf -> span column buffers (see otlp.c)",
                                    -1,
                                    methods,
                                    NULL,
                                    NULL,
                                    NULL,
                                    NULL};

PyMODINIT_FUNC PyInit__otlp(void) {
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "the native OTLP decoder needs a little-endian host");
        return NULL;
    }
    return PyModule_Create(&module);
}
