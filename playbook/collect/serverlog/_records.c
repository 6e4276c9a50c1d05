/* csvlog and jsonlog records, split in one pass over a block's bytes.
 *
 * records(buf, json, wanted, levels, harmless, except_, port_at) -> (lines, entries, columns)
 *
 * `buf` holds whole records. csvlog (json false): a record is a line of comma-separated fields
 * (a quoted field may hold commas, newlines and "" for a quote); it counts when it has at least
 * 23 fields, the csvlog of PostgreSQL 9.0-12 (13 adds backend_type, 14 leader_pid and query_id,
 * and a later version may add more: the fields read are the first 23's). jsonlog (json true): a
 * record is a line holding one JSON object; a line that is not one (torn, foreign) is skipped.
 *
 * `wanted` names the fields read: for csvlog a tuple of field indices, for jsonlog a tuple of
 * keys (bytes). Of the records, only those whose error_severity (the wanted field at position
 * 5 in `wanted`, message at 7) is in `levels` and that are not a LOG whose message starts with
 * one of the 8-byte `harmless` heads (unless it starts with one of `except_`) are returned:
 * what the caller would drop anyway is never copied. The rules are the caller's, passed in.
 * The wanted field at position `port_at` (-1: none) loses a trailing ':' and digits (csvlog's
 * connection_from is host:port; jsonlog's remote_host is the host alone).
 *
 * columns: one (offsets, data) pair per wanted field, as bytearrays: int32 offsets (returned
 * records + 1) into data, the field's value unescaped ("" -> " in csvlog; JSON escapes, \uXXXX
 * into UTF-8, in jsonlog; a JSON number, true or false as its text; null or absent as empty).
 *
 * What counts is what the references read (tests/test_serverlog_compiled.py compares them):
 * csvlog as Python's csv module (bytes after a closing quote belong to the value; \n, \r\n or
 * a lone \r ends a record), jsonlog as json.loads and pyarrow (no raw control byte in a
 * string, numbers without leading zeros, keys and levels read unescaped). Two differences are
 * left, for input PostgreSQL never writes: a wanted value that is an object, an array, true or
 * false comes back as its JSON text (json.loads's reference shows Python's str of it), and
 * json.loads's NaN and Infinity are refused, as pyarrow refuses them.
 * lines counts the newlines (bytes.count(b"\n")), entries the records.
 * The caller makes pyarrow binary arrays of the pairs without copying them again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_WANTED 16
#define MAX_LIST 32
#define KEY_ROOM 64 /* a key or level longer than this, written with escapes, is not one read */
#define CSV_MIN_FIELDS 23
#define AT_LEVEL 5
#define AT_MESSAGE 7
#define HEAD_CHECKED 64 /* longer than any harmless head or exception */

/* Bytes that end an unquoted csvlog field, and bytes a JSON string's scan stops at. */
static unsigned char CSV_STOP[256], JSON_STOP[256], CUT_STOP[256];

/* The first of up to three bytes in [q, end), or end: eight bytes a step where words are read
 * little-endian (the classic "has a zero byte" test on the word XOR each byte: exact for the
 * lowest match, which is the one taken), then byte by byte through `stop`. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t zero_bytes(uint64_t x) { return (x - ONES) & ~x & HIGHS; }

static inline const unsigned char *scan_to(const unsigned char *q, const unsigned char *end, const unsigned char *stop,
                                           unsigned char b1, unsigned char b2, unsigned char b3) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
    while (end - q >= 8) {
        uint64_t v;
        memcpy(&v, q, 8);
        uint64_t hit = zero_bytes(v ^ (ONES * b1)) | zero_bytes(v ^ (ONES * b2)) | zero_bytes(v ^ (ONES * b3));
        if (hit) return q + (__builtin_ctzll(hit) >> 3);
        q += 8;
    }
#else
    (void)b1, (void)b2, (void)b3;
#endif
    while (q < end && !stop[*q]) q++;
    return q;
}

typedef struct {
    const char *name;
    Py_ssize_t len;
} Key;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int32_t *offsets;
    Py_ssize_t n, ocap;
} Column;

typedef struct {
    const unsigned char *p; /* raw bytes of the value (inside quotes for strings) */
    Py_ssize_t len;
    int kind;            /* 0 absent, 1 plain, 2 CSV quoted with "", 3 JSON string with escapes,
                          * 4 CSV quoted then more bytes before the separator */
    Py_ssize_t quote_at; /* kind 4: where the closing quote is, from p */
} Slice;

static int reserve(Column *c, Py_ssize_t more) {
    if (c->len + more > c->cap) {
        Py_ssize_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + more) cap *= 2;
        char *d = PyMem_Realloc(c->data, (size_t)cap);
        if (d == NULL) return -1;
        c->data = d;
        c->cap = cap;
    }
    if (c->n + 2 > c->ocap) {
        Py_ssize_t cap = c->ocap ? c->ocap * 2 : 1024;
        int32_t *o = PyMem_Realloc(c->offsets, (size_t)cap * sizeof(int32_t));
        if (o == NULL) return -1;
        c->offsets = o;
        c->ocap = cap;
    }
    return 0;
}

static int hex4(const unsigned char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* The JSON string body s[0:n) (escapes checked when it was scanned) unescaped into o; returns
 * the end. A lone surrogate becomes U+FFFD, as Python's decoding with replacement shows it. */
static char *json_unescape(const unsigned char *s, Py_ssize_t n, char *o) {
    const unsigned char *end = s + n;
    while (s < end) {
        const unsigned char *bs = memchr(s, '\\', (size_t)(end - s));
        if (bs == NULL) bs = end;
        memcpy(o, s, (size_t)(bs - s));
        o += bs - s;
        s = bs;
        if (s >= end) break;
        unsigned char e = s[1];
        s += 2;
        switch (e) {
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'r': *o++ = '\r'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'u': {
                uint32_t cp = 0, lo = 0;
                hex4(s, &cp);
                s += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && end - s >= 6 && s[0] == '\\' && s[1] == 'u' &&
                    hex4(s + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                } else if (cp >= 0xD800 && cp < 0xE000) {
                    cp = 0xFFFD;
                }
                o = put_utf8(o, cp);
                break;
            }
            default: *o++ = (char)e; /* \" \\ \/ */
        }
    }
    return o;
}

/* A quoted csvlog value's bytes with "" read as " (a lone quote is kept). */
static char *unquote(const Slice *s, char *o) {
    const unsigned char *p = s->p, *end = s->p + s->len;
    while (p < end) {
        const unsigned char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL) q = end;
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        if (q < end) {
            *o++ = '"';
            q += (q + 1 < end && q[1] == '"') ? 2 : 1;
        }
        p = q;
    }
    return o;
}

static int append(Column *c, const Slice *s) {
    if (reserve(c, s->len) < 0) return -1;
    if (c->n == 0) c->offsets[0] = 0;
    char *o = c->data + c->len;
    if (s->kind == 2) {
        o = unquote(s, o);
    } else if (s->kind == 3) {
        o = json_unescape(s->p, s->len, o);
    } else if (s->kind == 4) { /* what Python's csv module reads: the quoted part, then the rest */
        Slice quoted = {s->p, s->quote_at, 2, 0};
        o = unquote(&quoted, o);
        memcpy(o, s->p + s->quote_at + 1, (size_t)(s->len - s->quote_at - 1));
        o += s->len - s->quote_at - 1;
    } else if (s->kind == 1 && s->len) {
        memcpy(o, s->p, (size_t)s->len);
        o += s->len;
    }
    c->len = o - c->data;
    if (c->len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a block's field values exceed 2 GB");
        return -1;
    }
    c->offsets[++c->n] = (int32_t)c->len;
    return 0;
}

/* The next '"' in [q, end) or NULL: most csvlog values are a few bytes, shorter than what
 * makes a call to memchr pay. */
static inline const unsigned char *find_quote(const unsigned char *q, const unsigned char *end) {
    const unsigned char *inline_end = end - q > 24 ? q + 24 : end;
    for (; q < inline_end; q++)
        if (*q == '"') return q;
    return q < end ? memchr(q, '"', (size_t)(end - q)) : NULL;
}

/* The column's last value without a trailing ':' and digits (csvlog's connection_from is
 * host:port): what replacing the regex :\d*$ with nothing gives. */
static void cut_port(Column *c) {
    const char *value = c->data + c->offsets[c->n - 1], *q = c->data + c->len;
    while (q > value && q[-1] >= '0' && q[-1] <= '9') q--;
    if (q > value && q[-1] == ':') {
        c->len = (q - 1) - c->data;
        c->offsets[c->n] = (int32_t)c->len;
    }
}

/* One csvlog record from p (not past end): the wanted fields' slices; *next is after the
 * record's newline. Returns the number of fields. */
static Py_ssize_t csv_record(const unsigned char *p, const unsigned char *end, const int *field_slot, int n_slots,
                             Slice *slices, const unsigned char **next) {
    Py_ssize_t field = 0;
    for (;;) {
        Slice s = {p, 0, 1, 0};
        if (p < end && *p == '"') {
            const unsigned char *q = p + 1;
            int doubled = 0;
            for (;;) {
                q = find_quote(q, end);
                if (q == NULL) { /* unterminated: the rest is the value */
                    q = end;
                    break;
                }
                if (q + 1 < end && q[1] == '"') {
                    doubled = 1;
                    q += 2;
                    continue;
                }
                break;
            }
            s.p = p + 1;
            s.len = q - s.p;
            s.kind = doubled ? 2 : 1;
            p = q < end ? q + 1 : end;
            /* bytes between the closing quote and the separator belong to the value, as Python's
             * csv module reads them (PostgreSQL writes none) */
            const unsigned char *tail = scan_to(p, end, CSV_STOP, ',', '\n', '\r');
            if (tail > p) {
                s.quote_at = s.len;
                s.len = tail - s.p;
                s.kind = 4;
                p = tail;
            }
        } else {
            const unsigned char *q = scan_to(p, end, CSV_STOP, ',', '\n', '\r');
            s.len = q - p;
            p = q;
        }
        if (field < n_slots && field_slot[field] >= 0) slices[field_slot[field]] = s;
        field++;
        if (p >= end) {
            *next = end;
            return field;
        }
        if (*p == '\n' || *p == '\r') { /* \n, \r\n or a lone \r ends a record, as in Python's csv */
            *next = p + 1 + (*p == '\r' && p + 1 < end && p[1] == '\n');
            return field;
        }
        p++; /* the comma */
    }
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

/* The first '"', backslash or control byte in [q, end), or end: a word at a time as scan_to
 * (the "has a byte below 0x20" test is exact for the lowest match too). */
static inline const unsigned char *json_scan(const unsigned char *q, const unsigned char *end) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
    while (end - q >= 8) {
        uint64_t v;
        memcpy(&v, q, 8);
        uint64_t hit = zero_bytes(v ^ (ONES * '"')) | zero_bytes(v ^ (ONES * '\\')) | ((v - ONES * 0x20) & ~v & HIGHS);
        if (hit) return q + (__builtin_ctzll(hit) >> 3);
        q += 8;
    }
#endif
    while (q < end && !JSON_STOP[*q]) q++;
    return q;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Whether [p, q) is a JSON literal: true, false, null or a number (no leading zero, no sign
 * but a minus), what json.loads and pyarrow accept there. */
static int json_bare(const unsigned char *p, const unsigned char *q) {
    Py_ssize_t n = q - p;
    if ((n == 4 && memcmp(p, "true", 4) == 0) || (n == 5 && memcmp(p, "false", 5) == 0) ||
        (n == 4 && memcmp(p, "null", 4) == 0))
        return 1;
    if (p < q && *p == '-') p++;
    if (p >= q || !is_digit(*p)) return 0;
    if (*p == '0') p++;
    else
        while (p < q && is_digit(*p)) p++;
    if (p < q && *p == '.') {
        if (++p >= q || !is_digit(*p)) return 0;
        while (p < q && is_digit(*p)) p++;
    }
    if (p < q && (*p == 'e' || *p == 'E')) {
        if (++p < q && (*p == '+' || *p == '-')) p++;
        if (p >= q || !is_digit(*p)) return 0;
        while (p < q && is_digit(*p)) p++;
    }
    return p == q;
}

/* A JSON string at p (the opening quote): its end (after the closing quote) or NULL; *escaped
 * says whether it holds backslashes. Escapes are checked. */
static const unsigned char *json_string(const unsigned char *p, const unsigned char *end, int *escaped) {
    *escaped = 0;
    p++;
    for (;;) {
        const unsigned char *q = json_scan(p, end);
        if (q >= end || *q < 0x20) return NULL; /* a raw control byte (a newline among them) */
        if (*q == '"') return q + 1;
        *escaped = 1;
        if (q + 1 >= end) return NULL;
        unsigned char e = q[1];
        if (e == 'u') {
            uint32_t cp;
            if (end - q < 6 || hex4(q + 2, &cp) < 0) return NULL;
            p = q + 6;
        } else if (strchr("\"\\/bfnrt", e) != NULL && e != 0) {
            p = q + 2;
        } else {
            return NULL;
        }
    }
}

/* Any JSON value at p: its end or NULL. Nested objects and arrays are skipped over. */
static const unsigned char *json_value(const unsigned char *p, const unsigned char *end) {
    int depth = 0, escaped;
    do {
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == '"') {
            if ((p = json_string(p, end, &escaped)) == NULL) return NULL;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0) return NULL;
            depth--;
            p++;
        } else if (*p == ',' || *p == ':') {
            if (depth == 0) return NULL;
            p++;
        } else if (*p == '\n') {
            return NULL;
        } else {
            const unsigned char *q = p;
            while (q < end && strchr(",}] \t\r\n:", *q) == NULL) q++;
            if (q == p || !json_bare(p, q)) return NULL;
            p = q;
        }
    } while (depth > 0);
    return p;
}

/* One jsonlog line from p (its start) to eol: 1 with the wanted keys' slices when the line is
 * one JSON object, else 0. A key given twice counts its last value, as json.loads does. */
static int json_record(const unsigned char *p, const unsigned char *eol, const Key *keys, Py_ssize_t n_keys,
                       Slice *slices) {
    p = skip_ws(p, eol);
    if (p >= eol || *p != '{') return 0;
    p = skip_ws(p + 1, eol);
    if (p < eol && *p == '}') return skip_ws(p + 1, eol) == eol;
    for (;;) {
        int escaped;
        if (p >= eol || *p != '"') return 0;
        const unsigned char *key = p + 1, *after = json_string(p, eol, &escaped);
        if (after == NULL) return 0;
        Py_ssize_t key_len = after - 1 - key;
        p = skip_ws(after, eol);
        if (p >= eol || *p != ':') return 0;
        p = skip_ws(p + 1, eol);
        const unsigned char *value = p, *value_end;
        int value_escaped = 0, is_string = p < eol && *p == '"';
        if (is_string) value_end = json_string(p, eol, &value_escaped);
        else value_end = json_value(p, eol);
        if (value_end == NULL) return 0;
        /* a key written with escapes ("us\u0065r") is read unescaped, as json.loads reads it */
        char unescaped[KEY_ROOM];
        if (escaped && key_len <= KEY_ROOM) {
            key_len = (const unsigned char *)json_unescape(key, key_len, unescaped) - (const unsigned char *)unescaped;
            key = (const unsigned char *)unescaped;
        }
        for (Py_ssize_t k = 0; k < n_keys && (!escaped || key == (const unsigned char *)unescaped); k++) {
            if (keys[k].len == key_len && key_len > 0 && keys[k].name[0] == key[0] &&
                memcmp(keys[k].name, key, (size_t)key_len) == 0) {
                Slice s = {value, value_end - value, 1, 0};
                if (is_string) {
                    s.p = value + 1;
                    s.len = value_end - value - 2;
                    s.kind = value_escaped ? 3 : 1;
                } else if (s.len == 4 && memcmp(value, "null", 4) == 0) {
                    s.kind = 0;
                    s.len = 0;
                }
                slices[k] = s;
                break;
            }
        }
        p = skip_ws(value_end, eol);
        if (p < eol && *p == ',') {
            p = skip_ws(p + 1, eol);
            continue;
        }
        if (p < eol && *p == '}') return skip_ws(p + 1, eol) == eol;
        return 0;
    }
}

/* Whether the value equals one of the items (prefix: starts with one). */
static int matches(const Slice *s, const Key *items, Py_ssize_t n, int prefix) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = items[i].len;
        if ((prefix ? s->len >= len : s->len == len) && memcmp(s->p, items[i].name, (size_t)len) == 0) return 1;
    }
    return 0;
}

/* A tuple of bytes as Keys (borrowed: the tuple outlives the call); the count, or -1 with an
 * error when it is not a tuple of at most MAX_LIST non-empty bytes. */
static Py_ssize_t keys_of(PyObject *tuple, Key *out, const char *what) {
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n > MAX_LIST) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d items", what, MAX_LIST);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) == 0) {
            PyErr_Format(PyExc_TypeError, "%s: non-empty bytes only", what);
            return -1;
        }
        out[i].name = PyBytes_AS_STRING(item);
        out[i].len = PyBytes_GET_SIZE(item);
    }
    return n;
}

/* Whether the value's first `n` raw bytes read the same unescaped: no quote ("" in csvlog) or
 * backslash (jsonlog) among them. A message whose head is escaped is simply kept. */
static int plain_head(const Slice *s, Py_ssize_t n) {
    if (s->kind != 2 && s->kind != 3) return 1;
    return memchr(s->p, s->kind == 2 ? '"' : '\\', (size_t)(s->len < n ? s->len : n)) == NULL;
}

static PyObject *records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    int json;
    PyObject *wanted, *levels, *harmless, *except_;
    int port_at;
    if (!PyArg_ParseTuple(args, "y*pO!O!O!O!i", &view, &json, &PyTuple_Type, &wanted, &PyTuple_Type, &levels,
                          &PyTuple_Type, &harmless, &PyTuple_Type, &except_, &port_at))
        return NULL;
    Py_ssize_t n_wanted = PyTuple_GET_SIZE(wanted);
    int field_slot[64];
    int n_slots = 0;
    for (int i = 0; i < 64; i++) field_slot[i] = -1;
    if (n_wanted <= AT_MESSAGE || n_wanted > MAX_WANTED) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "wanted: 8 to 16 fields, error_severity 6th and message 8th");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n_wanted; k++) {
        PyObject *item = PyTuple_GET_ITEM(wanted, k);
        if (json ? !PyBytes_Check(item) : !PyLong_Check(item)) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "wanted: keys (bytes) for jsonlog, field indices for csvlog");
            return NULL;
        }
        if (!json) {
            long at = PyLong_AsLong(item);
            if (at < 0 || at >= CSV_MIN_FIELDS) {
                PyBuffer_Release(&view);
                PyErr_SetString(PyExc_ValueError, "wanted: csvlog field indices are 0 to 22");
                return NULL;
            }
            field_slot[at] = (int)k;
            if (at + 1 > n_slots) n_slots = (int)at + 1;
        }
    }
    Key keys[MAX_LIST], level_keys[MAX_LIST], harmless_keys[MAX_LIST], except_keys[MAX_LIST];
    Py_ssize_t n_levels = keys_of(levels, level_keys, "levels"), n_harmless = keys_of(harmless, harmless_keys, "harmless");
    Py_ssize_t n_except = keys_of(except_, except_keys, "except_");
    if (n_levels < 0 || n_harmless < 0 || n_except < 0 || (json && keys_of(wanted, keys, "wanted") < 0)) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Column columns[MAX_WANTED];
    memset(columns, 0, sizeof columns);
    const unsigned char *a = view.buf, *end = a + view.len;
    Py_ssize_t lines = 0, entries = 0, kept = 0;
    int failed = 0;
    for (const unsigned char *p = a; p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) lines++;

    const unsigned char *p = a;
    while (p < end && !failed) {
        Slice slices[MAX_WANTED];
        memset(slices, 0, sizeof slices);
        const unsigned char *next;
        int is_record;
        if (json) {
            const unsigned char *eol = memchr(p, '\n', (size_t)(end - p));
            next = eol ? eol + 1 : end;
            is_record = json_record(p, eol ? eol : end, keys, n_wanted, slices);
        } else {
            if (*p == '\n' || *p == '\r') { /* an empty line */
                p += 1 + (*p == '\r' && p + 1 < end && p[1] == '\n');
                continue;
            }
            is_record = csv_record(p, end, field_slot, n_slots, slices, &next) >= CSV_MIN_FIELDS;
        }
        p = next;
        if (!is_record) continue;
        entries++;
        const Slice *level = &slices[AT_LEVEL], *message = &slices[AT_MESSAGE];
        Slice level_read = *level; /* a level written with escapes is compared unescaped */
        char level_room[KEY_ROOM];
        if (level->kind == 3) {
            if (level->len > KEY_ROOM) continue;
            level_read.len = json_unescape(level->p, level->len, level_room) - level_room;
            level_read.p = (const unsigned char *)level_room;
            level = &level_read;
        }
        if (!matches(level, level_keys, n_levels, 0)) continue;
        if (level->len == 3 && memcmp(level->p, "LOG", 3) == 0 && plain_head(message, HEAD_CHECKED) &&
            matches(message, harmless_keys, n_harmless, 1) && !matches(message, except_keys, n_except, 1))
            continue;
        for (Py_ssize_t k = 0; k < n_wanted && !failed; k++)
            if (append(&columns[k], &slices[k]) < 0) failed = 1;
        if (port_at >= 0 && port_at < n_wanted && !failed) cut_port(&columns[port_at]);
        kept++;
    }
    PyBuffer_Release(&view);
    PyObject *out = failed ? NULL : PyTuple_New(n_wanted);
    for (Py_ssize_t k = 0; k < n_wanted && out != NULL; k++) {
        Column *c = &columns[k];
        int32_t zero = 0;
        PyObject *offsets = PyByteArray_FromStringAndSize(kept ? (const char *)c->offsets : (const char *)&zero,
                                                          (kept + 1) * (Py_ssize_t)sizeof(int32_t));
        PyObject *data = PyByteArray_FromStringAndSize(c->data ? c->data : "", c->len);
        PyObject *pair = offsets && data ? PyTuple_Pack(2, offsets, data) : NULL;
        Py_XDECREF(offsets);
        Py_XDECREF(data);
        if (pair == NULL) Py_CLEAR(out);
        else PyTuple_SET_ITEM(out, k, pair);
    }
    for (Py_ssize_t k = 0; k < MAX_WANTED; k++) {
        PyMem_Free(columns[k].data);
        PyMem_Free(columns[k].offsets);
    }
    if (out == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    return Py_BuildValue("nnN", lines, entries, out);
}

/* csv_cut(buf) -> where the whole csvlog records of buf end: after its last newline outside a
 * quoted field (one with an even number of quotes before it), 0 when there is none. What
 * serverlog._cut finds by counting quotes, in one pass. */
static PyObject *csv_cut(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    const unsigned char *a = view.buf, *end = a + view.len, *p = a;
    Py_ssize_t last = -1;
    int quoted = 0;
    Py_BEGIN_ALLOW_THREADS
    while ((p = scan_to(p, end, CUT_STOP, '"', '\n', '\n')) < end) {
        if (*p == '"') quoted ^= 1;
        else if (!quoted) last = p - a;
        p++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(last + 1);
}

static PyMethodDef methods[] = {
    {"records", records, METH_VARARGS, "The kept records of a csvlog or jsonlog block (see _records.c)."},
    {"csv_cut", csv_cut, METH_VARARGS, "Where a csvlog block's whole records end (see _records.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records", "csvlog and jsonlog records (see _records.c).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) {
    CSV_STOP[','] = CSV_STOP['\n'] = CSV_STOP['\r'] = 1;
    CUT_STOP['"'] = CUT_STOP['\n'] = 1;
    JSON_STOP['"'] = JSON_STOP['\\'] = 1;
    for (int c = 0; c < 0x20; c++) JSON_STOP[c] = 1;
    return PyModule_Create(&module);
}
