/* The stderr reader's hot loops, compiled: one pass over a block's bytes.
 *
 * The "compiled" engine of playbook/collect/serverlog/engine.py; the "reference" engine (plain
 * Python, numpy and pyarrow in stderr.py, stamps.py, messages.py, state.py, language.py) is
 * what tests/test_log_engine.py and tests/test_serverlog_compiled.py check it against, on the
 * recorded logs, generated mixes and mangled input. Where the reference scans with numpy
 * (stderr.py's _entries) every function reads bytes the way it does, including its clipping
 * of indices to the block (a read before the block reads its first byte, after it its last),
 * so the two agree on every input, not only on well-formed ones.
 *
 * Outputs go into writable buffers the caller allocates (numpy arrays): no numpy headers at
 * build time, only Python's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The rules, as serverlog/rules.py spells them (checked at import by serverlog/engine.py: see RULES). */
static const char *LEVELS[] = {"LOG", "FATAL", "ERROR", "WARNING", "PANIC",
                               "DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION"};
#define N_LEVELS 11
#define L_LOG 1
static const char *SESSION_HEADS[] = {"disconnection: se", "connection receiv", "connection author",
                                      "replication conne", "connection authen", "connection ready:"};
static const int SESSION_KINDS[] = {3, 1, 2, 2, -1, -1}; /* DISC, RECV, AUTH, AUTH, nothing */
#define N_HEADS 6
static const char *HARMLESS_LOG[] = {"duration", "statemen", "checkpoi", "automati", "temporar",
                                     "execute ", "parse <u", "bind <un", "process ", "restartp",
                                     "listenin", "logical ", "starting"};
#define N_HARMLESS 13
static const char *HARMLESS_EXCEPT[] = {"starting PostgreS"}; /* first 17 bytes */
#define N_EXCEPT 1
#define EVENT 4
#define HEAD 17

typedef struct {
    const unsigned char *a;
    Py_ssize_t size;
} Bytes;

/* The numpy code's clipped read. */
static inline unsigned char at_(const Bytes *b, Py_ssize_t i) {
    if (i < 0) return b->a[0];
    if (i >= b->size) return b->a[b->size - 1];
    return b->a[i];
}

/* A buffer of `obj` (C-contiguous; writable for outputs). Item sizes are the caller's contract
 * (stderr.py passes numpy arrays of the dtypes documented per function). */
static int get(PyObject *obj, Py_buffer *view, int writable) {
    return PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS);
}

/* The (buf, starts, ends) that encode and session_fields take: their buffers into v[0..2] (*got
 * of them held, for the caller's release on every path), k the number of slices. 0 when every
 * slice buf[starts[i]:ends[i]] lies inside buf; else -1 with a ValueError that names `what`. */
static int get_slices(PyObject *o[3], Py_buffer v[3], int *got, Py_ssize_t *k, const char *what) {
    for (*got = 0; *got < 3; (*got)++)
        if (get(o[*got], &v[*got], 0) < 0) return -1;
    const int64_t *starts = v[1].buf, *ends = v[2].buf;
    Py_ssize_t size = v[0].len;
    *k = v[1].len / 8;
    if (v[2].len / 8 < *k) {
        PyErr_Format(PyExc_ValueError, "%s: ends shorter than starts", what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < *k; i++) {
        if (starts[i] < 0 || ends[i] < starts[i] || ends[i] > size) {
            PyErr_Format(PyExc_ValueError, "%s: a slice outside the buffer", what);
            return -1;
        }
    }
    return 0;
}

/* The first ':  ' in [from, to), or NULL. */
static const unsigned char *find_sep(const unsigned char *from, const unsigned char *to) {
    while (from + 3 <= to) {
        const unsigned char *c = memchr(from, ':', (size_t)(to - from - 2));
        if (c == NULL) return NULL;
        if (c[1] == ' ' && c[2] == ' ') return c;
        from = c + 1;
    }
    return NULL;
}

/* scan(buf) -> (lines, entry_count, starts, ends, at, level, kind)
 *
 * Entries are lines not starting with a tab (continuation) or a newline (empty). Per entry, as
 * bytearrays for numpy.frombuffer: its start, its end without the newline that ends it, `at`
 * (the ':  ' after the level, searched from the entry's start to the next entry's; 0 when
 * absent or when nothing follows it within the entry) (int64 each), the level code (1 + index
 * into LEVELS: the word right before ':  ', not preceded by a capital) and the kind (the
 * SESSION_KINDS of LOG session lines, EVENT for entries that may be events, else 0) (int8
 * each). entry_count counts the entries whose ':  ' follows a capital or a digit (the
 * summary's figure). */
static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    Bytes b = {(const unsigned char *)view.buf, view.len};
    Py_ssize_t size = b.size, n = 0, newlines = 0, entry_count = 0;
    /* pass 1: how many entries */
    for (Py_ssize_t s = 0; s < size;) {
        if (b.a[s] != 9 && b.a[s] != 10) n++;
        const unsigned char *nl = memchr(b.a + s, '\n', (size_t)(size - s));
        if (nl == NULL) break;
        newlines++;
        s = (Py_ssize_t)(nl - b.a) + 1;
    }
    PyObject *out[5] = {
        PyByteArray_FromStringAndSize(NULL, n * 8), PyByteArray_FromStringAndSize(NULL, n * 8),
        PyByteArray_FromStringAndSize(NULL, n * 8), PyByteArray_FromStringAndSize(NULL, n),
        PyByteArray_FromStringAndSize(NULL, n)};
    for (int i = 0; i < 5; i++) {
        if (out[i] == NULL) {
            for (int j = 0; j < 5; j++) Py_XDECREF(out[j]);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int64_t *starts = (int64_t *)PyByteArray_AS_STRING(out[0]), *ends = (int64_t *)PyByteArray_AS_STRING(out[1]);
    int64_t *ats = (int64_t *)PyByteArray_AS_STRING(out[2]);
    int8_t *level = (int8_t *)PyByteArray_AS_STRING(out[3]), *kind = (int8_t *)PyByteArray_AS_STRING(out[4]);
    size_t lens[N_LEVELS];
    for (int c = 0; c < N_LEVELS; c++) lens[c] = strlen(LEVELS[c]);

    Py_BEGIN_ALLOW_THREADS
    /* pass 2: the entries' starts */
    Py_ssize_t e = 0;
    for (Py_ssize_t s = 0; s < size && e < n;) {
        if (b.a[s] != 9 && b.a[s] != 10) starts[e++] = s;
        const unsigned char *nl = memchr(b.a + s, '\n', (size_t)(size - s));
        if (nl == NULL) break;
        s = (Py_ssize_t)(nl - b.a) + 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t start = starts[i], next = i + 1 < n ? starts[i + 1] : size;
        Py_ssize_t end = next - (b.a[next - 1] == 10 ? 1 : 0);
        ends[i] = end;
        const unsigned char *hit = find_sep(b.a + start, b.a + next);
        Py_ssize_t pos = hit ? (Py_ssize_t)(hit - b.a) - start : -1;
        int8_t lv = 0, kd = 0;
        Py_ssize_t a = 0;
        if (pos > 0 && start + pos + 3 <= end) {
            a = start + pos;
            for (int c = 0; c < N_LEVELS && !lv; c++) {
                Py_ssize_t k = (Py_ssize_t)lens[c];
                int same = 1;
                for (Py_ssize_t j = 0; j < k && same; j++) same = at_(&b, a - k + j) == (unsigned char)LEVELS[c][j];
                unsigned char prev = at_(&b, a - k - 1);
                if (same && (prev < 65 || prev > 90)) lv = (int8_t)(c + 1);
            }
            unsigned char upper = at_(&b, a - 1);
            if ((upper >= 65 && upper <= 90) || (upper >= 48 && upper <= 57)) entry_count++;
            unsigned char head[HEAD];
            for (int j = 0; j < HEAD; j++) head[j] = at_(&b, a + 3 + j);
            if (lv == L_LOG) {
                for (int h = 0; h < N_HEADS; h++)
                    if (memcmp(head, SESSION_HEADS[h], HEAD) == 0) kd = (int8_t)SESSION_KINDS[h];
                if (kd == 0) {
                    int harmless = 0;
                    for (int h = 0; h < N_HARMLESS && !harmless; h++) harmless = memcmp(head, HARMLESS_LOG[h], 8) == 0;
                    for (int h = 0; h < N_EXCEPT && harmless; h++) harmless = memcmp(head, HARMLESS_EXCEPT[h], HEAD) != 0;
                    if (!harmless) kd = EVENT;
                }
            } else if (lv >= 2 && lv <= 5) {
                kd = EVENT;
            }
        }
        ats[i] = a;
        level[i] = lv;
        kind[i] = kd;
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&view);
    Py_ssize_t lines = newlines + (size && b.a[size - 1] != 10 ? 1 : 0);
    return Py_BuildValue("nnNNNNN", lines, entry_count, out[0], out[1], out[2], out[3], out[4]);
}

/* Days from 1970-01-01 to the first of (year, month), proleptic Gregorian (numpy's
 * datetime64[M] -> [D]). */
static int64_t month_days(int64_t year, int64_t month) {
    int64_t y = year - (month <= 2);
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t mp = (month + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* 'YYYY-MM-DD HH:MM:SS[.mmm]' at `start`: naive ms since the epoch; 0 when not that shape. */
static int wall(const Bytes *b, Py_ssize_t start, int millis, int64_t *ms) {
    int ok = 1;
#define NUM(out, ...)                                                   \
    do {                                                                \
        const int places[] = {__VA_ARGS__};                             \
        out = 0;                                                        \
        for (size_t p_ = 0; p_ < sizeof places / sizeof *places; p_++) { \
            int d_ = (int)at_(b, start + places[p_]) - 48;              \
            ok &= d_ >= 0 && d_ <= 9;                                   \
            out = out * 10 + d_;                                        \
        }                                                               \
    } while (0)
    int64_t year, month, day, hour, minute, second, milli = 0;
    NUM(year, 0, 1, 2, 3);
    NUM(month, 5, 6);
    NUM(day, 8, 9);
    NUM(hour, 11, 12);
    NUM(minute, 14, 15);
    NUM(second, 17, 18);
    if (millis) NUM(milli, 20, 21, 22);
#undef NUM
    ok &= at_(b, start + 4) == '-' && at_(b, start + 7) == '-' && at_(b, start + 10) == ' ';
    ok &= at_(b, start + 13) == ':' && at_(b, start + 16) == ':';
    if (millis) ok &= at_(b, start + 19) == '.';
    ok &= month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour < 24 && minute < 60 && second < 60;
    if (ok) {
        int64_t days = month_days(year, month) + day - 1;
        *ms = (((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + milli;
    }
    return ok;
}

/* head(buf, starts, limits, millis, between, ok, ms, key, pid)
 *
 * stamps.py's read_fixed_heads for a prefix '%m<between>%p' or '%t<between>%p' (between starts with a
 * space): per entry at `starts` whose level begins at `limits`, ok (uint8), naive ms (int64), the
 * zone name as one integer (uint64, its bytes little-endian) and the pid (int64). */
static PyObject *head(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[9];
    int millis;
    if (!PyArg_ParseTuple(args, "OOOpOOOOO", &o[0], &o[1], &o[2], &millis, &o[4], &o[5], &o[6], &o[7], &o[8]))
        return NULL;
    Py_buffer v[9];
    int idx[8] = {0, 1, 2, 4, 5, 6, 7, 8}, got = 0;
    for (; got < 8; got++)
        if (get(o[idx[got]], &v[idx[got]], idx[got] >= 5) < 0) goto fail;
    Bytes b = {(const unsigned char *)v[0].buf, v[0].len};
    const int64_t *starts = v[1].buf, *limits = v[2].buf;
    const unsigned char *between = v[4].buf;
    Py_ssize_t nb = v[4].len, k = v[1].len / 8;
    uint8_t *ok_out = v[5].buf;
    int64_t *ms_out = v[6].buf, *pid_out = v[8].buf;
    uint64_t *key_out = v[7].buf;
    if (v[2].len / 8 < k || v[5].len < k || v[6].len / 8 < k || v[7].len / 8 < k || v[8].len / 8 < k) {
        PyErr_SetString(PyExc_ValueError, "head: outputs too short");
        goto fail;
    }
    if (b.size == 0) {
        for (Py_ssize_t i = 0; i < k; i++) ok_out[i] = 0;
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const Py_ssize_t tz_at = millis ? 24 : 20;
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t start = starts[i];
        int64_t ms = 0;
        int ok = wall(&b, start, millis, &ms);
        ok &= at_(&b, start + tz_at - 1) == ' ';
        uint64_t key = 0;
        Py_ssize_t tz_len = -1;
        for (int j = 0; j < 9; j++) {
            unsigned char c = at_(&b, start + tz_at + j);
            if (c == ' ') {
                tz_len = j;
                break;
            }
            if (j < 8) key |= (uint64_t)c << (8 * j);
        }
        ok &= tz_len >= 1;
        Py_ssize_t lit_at = tz_at + (tz_len > 0 ? tz_len : 0);
        for (Py_ssize_t j = 0; j < nb; j++) ok &= at_(&b, start + lit_at + j) == between[j];
        Py_ssize_t pid_at = lit_at + nb;
        int64_t pid = 0;
        Py_ssize_t pid_len = 0;
        int going = 1;
        for (int j = 0; j < 10 && going; j++) {
            int d = (int)at_(&b, start + pid_at + j) - 48;
            going = d >= 0 && d <= 9;
            if (going) {
                pid = pid * 10 + d;
                pid_len++;
            }
        }
        ok &= pid_len >= 1 && !going && start + pid_at + pid_len <= limits[i];
        ok_out[i] = (uint8_t)ok;
        ms_out[i] = ms;
        key_out[i] = key;
        pid_out[i] = pid;
    }
    Py_END_ALLOW_THREADS
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[idx[i]]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[idx[i]]);
    return NULL;
}

/* stamp(buf, starts, ends, ok, ms, key)
 *
 * csvlog's and jsonlog's times ('YYYY-MM-DD HH:MM:SS.mmm ZONE', the zone name ending the text at
 * `ends`): read_fixed_heads' zone_ends form. ok (uint8), naive ms (int64), zone key (uint64). */
static PyObject *stamp(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) return NULL;
    Py_buffer v[6];
    int got = 0;
    for (; got < 6; got++)
        if (get(o[got], &v[got], got >= 3) < 0) goto fail;
    Bytes b = {(const unsigned char *)v[0].buf, v[0].len};
    const int64_t *starts = v[1].buf, *ends = v[2].buf;
    Py_ssize_t k = v[1].len / 8;
    uint8_t *ok_out = v[3].buf;
    int64_t *ms_out = v[4].buf;
    uint64_t *key_out = v[5].buf;
    if (v[2].len / 8 < k || v[3].len < k || v[4].len / 8 < k || v[5].len / 8 < k) {
        PyErr_SetString(PyExc_ValueError, "stamp: outputs too short");
        goto fail;
    }
    if (b.size == 0) {
        for (Py_ssize_t i = 0; i < k; i++) ok_out[i] = 0;
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t start = starts[i];
        int64_t ms = 0;
        int ok = wall(&b, start, 1, &ms);
        ok &= at_(&b, start + 23) == ' ';
        Py_ssize_t tz_len = ends[i] - start - 24;
        ok &= tz_len >= 1 && tz_len <= 8;
        uint64_t key = 0;
        for (Py_ssize_t j = 0; j < 8 && j < tz_len; j++) key |= (uint64_t)at_(&b, start + 24 + j) << (8 * j);
        ok &= key != 0;
        ok_out[i] = (uint8_t)ok;
        ms_out[i] = ms;
        key_out[i] = key;
    }
    Py_END_ALLOW_THREADS
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return NULL;
}

/* A name as rows.py's clean_name gives it (decoded with replacement, "[unknown]" and "unknown"
 * as ""), then for hosts (how == 2) through host_of ('10.0.0.1(5432)' and '10.0.0.1:5432' ->
 * '10.0.0.1'). Both cut at ASCII bytes, so cutting the bytes and decoding the piece gives what
 * decoding the whole and cutting the text gives. */
static PyObject *name_of(const unsigned char *p, Py_ssize_t n, int how) {
    if (how == 3) return PyUnicode_DecodeUTF8((const char *)p, n, "replace");
    if (how != 4 && ((n == 7 && memcmp(p, "unknown", 7) == 0) || (n == 9 && memcmp(p, "[unknown]", 9) == 0)))
        return PyUnicode_FromStringAndSize("", 0);
    if (how == 2 || how == 4) {
        const unsigned char *paren = memchr(p, '(', (size_t)n);
        if (paren != NULL && paren > p) {
            n = paren - p;
        } else {
            const unsigned char *colon = memchr(p, ':', (size_t)n);
            if (colon != NULL && memchr(colon + 1, ':', (size_t)(p + n - colon - 1)) == NULL) n = colon - p;
        }
    }
    return PyUnicode_DecodeUTF8((const char *)p, n, "replace");
}

/* encode(buf, starts, ends, how) -> (codes, distinct)
 *
 * The slices buf[starts[i]:ends[i]] (int64 each) as int32 codes (a bytearray) into their
 * distinct values, in order of first appearance: pyarrow's dictionary_encode without building
 * the binary column first. how: 0, the values as bytes; 1, as names (name_of); 2, as hosts; 3,
 * as texts (decoded with replacement, nothing else); 4, through host_of alone (not cleaned). */
static PyObject *encode(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[3];
    PyObject *o[3];
    int how;
    if (!PyArg_ParseTuple(args, "OOOi", &o[0], &o[1], &o[2], &how)) return NULL;
    int got = 0;
    Py_ssize_t k = 0;
    if (get_slices(o, v, &got, &k, "encode") < 0) goto fail;
    const unsigned char *a = v[0].buf;
    const int64_t *starts = v[1].buf, *ends = v[2].buf;
    Py_ssize_t cap = 16;
    while (cap < 2 * k) cap <<= 1;
    int32_t *slots = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    int64_t *first = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(int64_t)); /* a row of each value */
    uint64_t *hashes = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(uint64_t));
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, k * 4);
    if (!slots || !first || !hashes || !codes) {
        PyMem_Free(slots);
        PyMem_Free(first);
        PyMem_Free(hashes);
        Py_XDECREF(codes);
        PyErr_NoMemory();
        goto fail;
    }
    int32_t *out = (int32_t *)PyByteArray_AS_STRING(codes);
    Py_ssize_t distinct = 0;
    memset(slots, 0xff, (size_t)cap * sizeof(int32_t));
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        const unsigned char *p = a + starts[i];
        Py_ssize_t len = ends[i] - starts[i];
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (Py_ssize_t j = 0; j < len; j++) h = (h ^ p[j]) * 1099511628211ULL;
        Py_ssize_t slot = (Py_ssize_t)(h & (uint64_t)(cap - 1));
        for (;;) {
            int32_t d = slots[slot];
            if (d < 0) {
                d = (int32_t)distinct++;
                slots[slot] = d;
                first[d] = i;
                hashes[d] = h;
                out[i] = d;
                break;
            }
            Py_ssize_t r = first[d];
            if (hashes[d] == h && ends[r] - starts[r] == len && memcmp(a + starts[r], p, (size_t)len) == 0) {
                out[i] = d;
                break;
            }
            slot = (slot + 1) & (cap - 1);
        }
    }
    Py_END_ALLOW_THREADS
    PyObject *values = PyList_New(distinct);
    for (Py_ssize_t d = 0; values && d < distinct; d++) {
        Py_ssize_t r = first[d];
        PyObject *item = how ? name_of(a + starts[r], ends[r] - starts[r], how)
                             : PyBytes_FromStringAndSize((const char *)a + starts[r], ends[r] - starts[r]);
        if (item == NULL) {
            Py_CLEAR(values);
            break;
        }
        PyList_SET_ITEM(values, d, item);
    }
    PyMem_Free(slots);
    PyMem_Free(first);
    PyMem_Free(hashes);
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    if (values == NULL) {
        Py_DECREF(codes);
        return NULL;
    }
    return Py_BuildValue("NN", codes, values);
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return NULL;
}

/* The i-th space-separated token of [from, to): its bounds; 0 when there are fewer tokens. */
typedef struct {
    Py_ssize_t start[9], end[9];
    int count; /* tokens, counted up to 9 */
} Tokens;

static void tokens(const unsigned char *a, Py_ssize_t from, Py_ssize_t to, Tokens *t) {
    t->count = 0;
    Py_ssize_t s = from;
    for (;;) {
        const unsigned char *sp = memchr(a + s, ' ', (size_t)(to - s));
        Py_ssize_t e = sp ? (Py_ssize_t)(sp - a) : to;
        if (t->count < 9) {
            t->start[t->count] = s;
            t->end[t->count] = e;
        }
        t->count++;
        if (t->count > 9) t->count = 9; /* more than 8: not a session line's shape anyway */
        if (!sp) break;
        s = e + 1;
    }
}

static int token_is(const unsigned char *a, const Tokens *t, int i, const char *text) {
    size_t n = strlen(text);
    return (size_t)(t->end[i] - t->start[i]) == n && memcmp(a + t->start[i], text, n) == 0;
}

static int token_starts(const unsigned char *a, const Tokens *t, int i, const char *text) {
    size_t n = strlen(text);
    return (size_t)(t->end[i] - t->start[i]) >= n && memcmp(a + t->start[i], text, n) == 0;
}

/* A token of digits as a double ('12', '07.250': the caller has checked the shape). */
static double number(const unsigned char *p, Py_ssize_t n, int *ok) {
    char text[48];
    if (n <= 0 || n >= (Py_ssize_t)sizeof text) {
        *ok = 0;
        return 0.0;
    }
    memcpy(text, p, (size_t)n);
    text[n] = 0;
    return strtod(text, NULL); /* correctly rounded, as pyarrow's cast; LC_NUMERIC stays "C" */
}

/* session_fields(buf, starts, ends, disconnection) -> (ok, hms, fields)
 *
 * The messages buf[starts[i]:ends[i]] of session lines split on single spaces, the rules of
 * messages.py's received_host and disconnection_fields: 'connection received: host=H[ ...]' (3 tokens or more) gives H;
 * 'disconnection: session time: H:M:S user=U database=D host=H[ port=P]' (7 or 8 tokens, the
 * time matching \d+:\d+:\d+(\.\d+)?) gives its hours, minutes and seconds (3 float64 per
 * row) and U, D, H. ok (uint8) says which rows had that shape; fields holds per row the (start, end)
 * of each name (int64; 1 name for connection received, 3 for disconnection). */
static PyObject *session_fields(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[3];
    PyObject *o[3];
    int disc;
    if (!PyArg_ParseTuple(args, "OOOp", &o[0], &o[1], &o[2], &disc)) return NULL;
    int got = 0;
    Py_ssize_t k = 0;
    if (get_slices(o, v, &got, &k, "session_fields") < 0) goto fail;
    const unsigned char *a = v[0].buf;
    const int64_t *starts = v[1].buf, *ends = v[2].buf;
    int names = disc ? 3 : 1;
    PyObject *ok_b = PyByteArray_FromStringAndSize(NULL, k), *secs_b = PyByteArray_FromStringAndSize(NULL, k * 24);
    PyObject *fields_b = PyByteArray_FromStringAndSize(NULL, k * names * 2 * 8);
    if (!ok_b || !secs_b || !fields_b) {
        Py_XDECREF(ok_b);
        Py_XDECREF(secs_b);
        Py_XDECREF(fields_b);
        goto fail;
    }
    uint8_t *ok_out = (uint8_t *)PyByteArray_AS_STRING(ok_b);
    double *secs = (double *)PyByteArray_AS_STRING(secs_b);
    int64_t *fields = (int64_t *)PyByteArray_AS_STRING(fields_b);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        Tokens t;
        tokens(a, starts[i], ends[i], &t);
        int ok;
        int64_t *f = fields + i * names * 2;
        secs[3 * i] = secs[3 * i + 1] = secs[3 * i + 2] = 0.0;
        for (int j = 0; j < 2 * names; j++) f[j] = 0;
        if (!disc) {
            ok = t.count >= 3 && token_is(a, &t, 0, "connection") && token_is(a, &t, 1, "received:") &&
                 token_starts(a, &t, 2, "host=");
            if (ok) {
                f[0] = t.start[2] + 5;
                f[1] = t.end[2];
            }
        } else {
            ok = (t.count == 7 || t.count == 8) && token_is(a, &t, 0, "disconnection:") &&
                 token_is(a, &t, 1, "session") && token_is(a, &t, 2, "time:") && token_starts(a, &t, 4, "user=") &&
                 token_starts(a, &t, 5, "database=") && token_starts(a, &t, 6, "host=") &&
                 (t.count == 7 || token_starts(a, &t, 7, "port="));
            if (ok) {
                /* \d+:\d+:\d+(\.\d+)? */
                Py_ssize_t p = t.start[3], e = t.end[3], mark[4];
                int part = 0, digits = 0;
                mark[0] = p;
                for (; p < e && ok; p++) {
                    unsigned char c = a[p];
                    if (c >= '0' && c <= '9') {
                        digits++;
                    } else if (c == ':' && part < 2 && digits) {
                        mark[++part] = p + 1;
                        digits = 0;
                    } else if (c == '.' && part == 2 && digits) {
                        part = 3; /* the fraction: digits only from here */
                        digits = 0;
                    } else {
                        ok = 0;
                    }
                }
                ok &= digits > 0 && part >= 2;
                if (ok) {
                    double h = number(a + mark[0], mark[1] - 1 - mark[0], &ok);
                    double m = number(a + mark[1], mark[2] - 1 - mark[1], &ok);
                    double s = number(a + mark[2], e - mark[2], &ok);
                    /* summed by the caller, in numpy: the same rounding whatever the compiler */
                    secs[3 * i] = h, secs[3 * i + 1] = m, secs[3 * i + 2] = s;
                }
                f[0] = t.start[4] + 5, f[1] = t.end[4];
                f[2] = t.start[5] + 9, f[3] = t.end[5];
                f[4] = t.start[6] + 5, f[5] = t.end[6];
                if (!ok)
                    for (int j = 0; j < 6; j++) f[j] = 0;
            }
        }
        ok_out[i] = (uint8_t)ok;
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return Py_BuildValue("NNN", ok_b, secs_b, fields_b);
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return NULL;
}

/* count_lines(buf) -> the number of newlines in buf (bytes.count(b"\n"), with memchr). */
static PyObject *count_lines(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    const unsigned char *a = view.buf, *end = a + view.len;
    Py_ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (a < end && (a = memchr(a, '\n', (size_t)(end - a))) != NULL) {
        n++;
        a++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

/* remap(index, values, block_values, codes, out) -> None
 *
 * A block's codes into global ones (playbook.collect.serverlog.state.Vocab.remap, whose Python
 * loop is the reference; tests/test_serverlog_compiled.py compares the two). `index` (dict
 * str -> int) and `values` (list of str) are the global dictionary, grown in place: a block
 * value not in `index` gets the next code, in the order the values first appear in `codes`
 * (int32, indices into `block_values`, a list of str), not the order of `block_values` (two of
 * which may be equal: names cleaned to the same text). `out` (int32, len(codes)) receives the
 * global code of every row. */
static PyObject *remap(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *index, *values, *block, *codes_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "O!O!O!OO", &PyDict_Type, &index, &PyList_Type, &values, &PyList_Type, &block,
                          &codes_obj, &out_obj))
        return NULL;
    Py_buffer cv, ov;
    if (get(codes_obj, &cv, 0) < 0) return NULL;
    if (get(out_obj, &ov, 1) < 0) {
        PyBuffer_Release(&cv);
        return NULL;
    }
    Py_ssize_t n = cv.len / 4, m = PyList_GET_SIZE(block);
    const int32_t *codes = cv.buf;
    int32_t *out = ov.buf;
    int32_t *found = PyMem_Malloc((size_t)(m > 0 ? m : 1) * sizeof(int32_t));
    int missing = 0;
    if (found == NULL || ov.len / 4 != n) {
        if (found == NULL) PyErr_NoMemory();
        else PyErr_SetString(PyExc_ValueError, "out must hold one int32 per code");
        goto fail;
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *code = PyDict_GetItemWithError(index, PyList_GET_ITEM(block, j));
        if (code == NULL && PyErr_Occurred()) goto fail;
        found[j] = code == NULL ? -1 : (int32_t)PyLong_AsLong(code);
        if (code == NULL) missing = 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t c = codes[i];
        if (c < 0 || c >= m) {
            PyErr_SetString(PyExc_IndexError, "a code outside the block's values");
            goto fail;
        }
        if (missing && found[c] < 0) {
            /* first appearance of a value the global dictionary lacks (or gained just now from
             * an equal value earlier in this block) */
            PyObject *value = PyList_GET_ITEM(block, c), *code = PyDict_GetItemWithError(index, value);
            if (code == NULL) {
                if (PyErr_Occurred()) goto fail;
                PyObject *next = PyLong_FromSsize_t(PyList_GET_SIZE(values));
                if (next == NULL || PyDict_SetItem(index, value, next) < 0 || PyList_Append(values, value) < 0) {
                    Py_XDECREF(next);
                    goto fail;
                }
                found[c] = (int32_t)PyLong_AsLong(next);
                Py_DECREF(next);
            } else {
                found[c] = (int32_t)PyLong_AsLong(code);
            }
        }
        out[i] = found[c];
    }
    PyMem_Free(found);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&ov);
    Py_RETURN_NONE;
fail:
    PyMem_Free(found);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&ov);
    return NULL;
}

/* prefix_fields(buf, starts, ends, ops, captures) -> (ok, columns)
 *
 * A log_line_prefix read by a program instead of a regex (prefix.py's FieldProgram, which
 * builds `ops` only for prefixes where reading left to right never has to go back: every
 * field of variable length is followed by a literal that cannot be part of it). ops: a tuple
 * of (code, literal, capture), code one of OP_* below; capture the column a field goes to, or
 * -1. Each entry buf[starts[i]:ends[i]] must match the ops from its first byte, then a level
 * ([A-Z]+[0-9]?:  ): ok (uint8) says which did. columns: `captures` (offsets, data) pairs of
 * bytearrays, int32 offsets (one per entry + 1) into the captured values (empty where not ok).
 * The RE2 passes of prefix.fast_prefix are the reference (tests/test_serverlog_compiled.py). */
enum { OP_LIT, OP_STOP, OP_DIGITS, OP_DIGITS0, OP_SIGNED, OP_SQLSTATE, OP_SESSION, OP_TS, N_OPS };
#define MAX_OPS 48
#define MAX_CAPTURES 8

typedef struct {
    int code, capture;
    const unsigned char *lit;
    Py_ssize_t lit_len;
} Op;

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }
static int is_zone(unsigned char c) {
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '+' || c == ':' || c == '-';
}

/* One op at p (not past end): the position after it, or NULL when it does not match. */
static const unsigned char *run_op(const Op *op, const unsigned char *p, const unsigned char *end) {
    const unsigned char *q = p;
    switch (op->code) {
        case OP_LIT:
            if (end - p < op->lit_len || memcmp(p, op->lit, (size_t)op->lit_len) != 0) return NULL;
            return p + op->lit_len;
        case OP_STOP:
            while (q < end && *q != op->lit[0] && *q != '\n') q++;
            return q;
        case OP_DIGITS:
        case OP_DIGITS0:
            while (q < end && is_digit(*q)) q++;
            return op->code == OP_DIGITS && q == p ? NULL : q;
        case OP_SIGNED:
            if (q < end && *q == '-') q++;
            while (q < end && is_digit(*q)) q++;
            return q;
        case OP_SQLSTATE:
            for (int j = 0; j < 5; j++, q++)
                if (q >= end || !(is_digit(*q) || (*q >= 'A' && *q <= 'Z'))) return NULL;
            return q;
        case OP_SESSION:
            while (q < end && is_hex(*q)) q++;
            if (q == p || q >= end || *q != '.') return NULL;
            p = ++q;
            while (q < end && is_hex(*q)) q++;
            return q == p ? NULL : q;
        case OP_TS: { /* \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? [A-Za-z0-9+:\-]+ */
            static const char shape[] = "dddd-dd-dd dd:dd:dd";
            for (int j = 0; shape[j]; j++, q++) {
                if (q >= end) return NULL;
                if (shape[j] == 'd' ? !is_digit(*q) : *q != (unsigned char)shape[j]) return NULL;
            }
            if (q + 1 < end && *q == '.' && is_digit(q[1])) {
                q++;
                while (q < end && is_digit(*q)) q++;
            }
            if (q >= end || *q != ' ') return NULL;
            p = ++q;
            while (q < end && is_zone(*q)) q++;
            return q == p ? NULL : q;
        }
    }
    return NULL;
}

static PyObject *prefix_fields(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[3];
    PyObject *o[3], *ops_obj;
    int captures;
    if (!PyArg_ParseTuple(args, "OOOO!i", &o[0], &o[1], &o[2], &PyTuple_Type, &ops_obj, &captures)) return NULL;
    Py_ssize_t n_ops = PyTuple_GET_SIZE(ops_obj);
    if (n_ops > MAX_OPS || captures < 0 || captures > MAX_CAPTURES) {
        PyErr_SetString(PyExc_ValueError, "prefix_fields: too many ops or captures");
        return NULL;
    }
    Op ops[MAX_OPS];
    for (Py_ssize_t j = 0; j < n_ops; j++) {
        PyObject *item = PyTuple_GET_ITEM(ops_obj, j), *lit;
        if (!PyArg_ParseTuple(item, "iSi", &ops[j].code, &lit, &ops[j].capture)) return NULL;
        ops[j].lit = (const unsigned char *)PyBytes_AS_STRING(lit);
        ops[j].lit_len = PyBytes_GET_SIZE(lit);
        if (ops[j].code < 0 || ops[j].code >= N_OPS || ops[j].capture >= captures ||
            ((ops[j].code == OP_LIT || ops[j].code == OP_STOP) && ops[j].lit_len == 0)) {
            PyErr_SetString(PyExc_ValueError, "prefix_fields: a malformed op");
            return NULL;
        }
    }
    int got = 0;
    Py_ssize_t k = 0;
    if (get_slices(o, v, &got, &k, "prefix_fields") < 0) goto fail;
    const unsigned char *a = v[0].buf;
    const int64_t *starts = v[1].buf, *ends = v[2].buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < k; i++) total += ends[i] - starts[i];
    if (total > INT32_MAX) { /* the captured values could not be addressed by int32 offsets */
        PyErr_SetString(PyExc_ValueError, "prefix_fields: entries over 2 GB in one call");
        goto fail;
    }
    PyObject *ok_b = PyByteArray_FromStringAndSize(NULL, k), *out = PyTuple_New(captures);
    PyObject *offsets[MAX_CAPTURES] = {NULL}, *data[MAX_CAPTURES] = {NULL};
    int failed = ok_b == NULL || out == NULL;
    for (int c = 0; c < captures && !failed; c++) {
        offsets[c] = PyByteArray_FromStringAndSize(NULL, (k + 1) * 4);
        data[c] = PyByteArray_FromStringAndSize(NULL, total); /* every value lies inside its entry */
        failed = offsets[c] == NULL || data[c] == NULL;
    }
    if (failed) {
        Py_XDECREF(ok_b);
        Py_XDECREF(out);
        for (int c = 0; c < captures; c++) {
            Py_XDECREF(offsets[c]);
            Py_XDECREF(data[c]);
        }
        goto fail;
    }
    uint8_t *ok = (uint8_t *)PyByteArray_AS_STRING(ok_b);
    int32_t *off[MAX_CAPTURES];
    char *dat[MAX_CAPTURES];
    Py_ssize_t used[MAX_CAPTURES] = {0};
    for (int c = 0; c < captures; c++) {
        off[c] = (int32_t *)PyByteArray_AS_STRING(offsets[c]);
        dat[c] = PyByteArray_AS_STRING(data[c]);
        off[c][0] = 0;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        const unsigned char *p = a + starts[i], *end = a + ends[i];
        const unsigned char *from[MAX_CAPTURES], *to[MAX_CAPTURES];
        for (int c = 0; c < captures; c++) from[c] = to[c] = p;
        int matched = 1;
        for (Py_ssize_t j = 0; j < n_ops && matched; j++) {
            const unsigned char *q = run_op(&ops[j], p, end);
            if (q == NULL) {
                matched = 0;
                break;
            }
            if (ops[j].capture >= 0) {
                from[ops[j].capture] = p;
                to[ops[j].capture] = q;
            }
            p = q;
        }
        if (matched) { /* the level: [A-Z]+[0-9]?:  */
            const unsigned char *q = p;
            while (q < end && *q >= 'A' && *q <= 'Z') q++;
            if (q > p && q < end && is_digit(*q)) q++;
            matched = q > p && end - q >= 3 && q[0] == ':' && q[1] == ' ' && q[2] == ' ';
        }
        ok[i] = (uint8_t)matched;
        for (int c = 0; c < captures; c++) {
            Py_ssize_t len = matched ? to[c] - from[c] : 0;
            memcpy(dat[c] + used[c], from[c], (size_t)len);
            used[c] += len;
            off[c][i + 1] = (int32_t)used[c];
        }
    }
    Py_END_ALLOW_THREADS
    for (int c = 0; c < captures; c++) {
        if (PyByteArray_Resize(data[c], used[c]) < 0) failed = 1;
        PyObject *pair = Py_BuildValue("NN", offsets[c], data[c]);
        if (pair == NULL) failed = 1;
        PyTuple_SET_ITEM(out, c, pair);
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    if (failed) {
        Py_DECREF(ok_b);
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("NN", ok_b, out);
fail:
    for (int i = 0; i < got; i++) PyBuffer_Release(&v[i]);
    return NULL;
}

/* replace_many(buf, needles, replacements) -> bytes
 *
 * buf with every occurrence of needles[i] replaced by replacements[i], in one pass from the
 * left: at each place the first needle (in the given order: callers put the longest first) that
 * starts there wins. What a needle and its replacement end with alike is left in place and
 * searched on (a level word's ':  ' also begins the head of its message), as a bytes.replace
 * per pair, longest first, would find it. Needles are
 * at least two bytes long; a two-byte table says at which places any needle can start, so the
 * pass runs at memory speed whatever the number of needles (serverlog.language rewrites a
 * translated log's level words and session lines into English with it; its bytes.replace loop is
 * the reference, compared in tests/test_vocabulary_server.py). */
static PyObject *replace_many(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    PyObject *needles, *replacements;
    if (!PyArg_ParseTuple(args, "y*O!O!", &view, &PyTuple_Type, &needles, &PyTuple_Type, &replacements)) return NULL;
    Py_ssize_t k = PyTuple_GET_SIZE(needles);
    if (k != PyTuple_GET_SIZE(replacements) || k > 65535) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "replace_many: needles and replacements differ in number");
        return NULL;
    }
    const char **nd = PyMem_Calloc((size_t)k + 1, sizeof(char *)), **rp = PyMem_Calloc((size_t)k + 1, sizeof(char *));
    Py_ssize_t *nl = PyMem_Calloc((size_t)k + 1, sizeof(Py_ssize_t)), *rl = PyMem_Calloc((size_t)k + 1, sizeof(Py_ssize_t));
    Py_ssize_t *same = PyMem_Calloc((size_t)k + 1, sizeof(Py_ssize_t)); /* common suffix, kept */
    unsigned short *first = PyMem_Calloc(65536, sizeof(unsigned short)); /* 1 + index of a key's first needle */
    unsigned short *next = PyMem_Calloc((size_t)k + 1, sizeof(unsigned short)); /* 1 + next needle, same key */
    PyObject *out = NULL;
    if (!nd || !rp || !nl || !rl || !same || !first || !next) {
        PyErr_NoMemory();
        goto done;
    }
    double grow = 1.0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *n = PyTuple_GET_ITEM(needles, i), *r = PyTuple_GET_ITEM(replacements, i);
        if (!PyBytes_Check(n) || !PyBytes_Check(r) || PyBytes_GET_SIZE(n) < 2) {
            PyErr_SetString(PyExc_ValueError, "replace_many: needles are bytes of two bytes or more");
            goto done;
        }
        nd[i] = PyBytes_AS_STRING(n), nl[i] = PyBytes_GET_SIZE(n);
        rp[i] = PyBytes_AS_STRING(r), rl[i] = PyBytes_GET_SIZE(r);
        if ((double)rl[i] / (double)nl[i] > grow) grow = (double)rl[i] / (double)nl[i];
        while (same[i] < nl[i] - 1 && same[i] < rl[i] && nd[i][nl[i] - 1 - same[i]] == rp[i][rl[i] - 1 - same[i]]) same[i]++;
    }
    /* chain needles by their first two bytes, keeping the callers' order within a key */
    for (Py_ssize_t i = k - 1; i >= 0; i--) {
        unsigned key = ((unsigned)(unsigned char)nd[i][0] << 8) | (unsigned char)nd[i][1];
        next[i] = first[key];
        first[key] = (unsigned short)(i + 1);
    }
    const unsigned char *a = view.buf;
    Py_ssize_t n = view.len;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((double)n * grow) + 16);
    if (out == NULL) goto done;
    char *o = PyBytes_AS_STRING(out);
    Py_ssize_t w = 0, last = 0, i = 0;
    Py_BEGIN_ALLOW_THREADS
    while (i + 1 < n) {
        unsigned short c = first[((unsigned)a[i] << 8) | a[i + 1]];
        int hit = 0;
        for (; c; c = next[c - 1]) {
            Py_ssize_t j = c - 1;
            if (nl[j] <= n - i && memcmp(a + i, nd[j], (size_t)nl[j]) == 0) {
                memcpy(o + w, a + last, (size_t)(i - last));
                w += i - last;
                memcpy(o + w, rp[j], (size_t)(rl[j] - same[j]));
                w += rl[j] - same[j];
                i += nl[j] - same[j];
                last = i;
                hit = 1;
                break;
            }
        }
        if (!hit) i++;
    }
    memcpy(o + w, a + last, (size_t)(n - last));
    w += n - last;
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&out, w) < 0) out = NULL;
done:
    PyMem_Free(nd), PyMem_Free(rp), PyMem_Free(nl), PyMem_Free(rl), PyMem_Free(same), PyMem_Free(first);
    PyMem_Free(next);
    PyBuffer_Release(&view);
    return out;
}

/* RULES: the constants above, for serverlog/engine.py to compare with rules.py at import (a rule
 * changed on one side only fails the import with a sentence naming it, never other rows). */
static PyObject *rules(void) {
    PyObject *levels = PyTuple_New(N_LEVELS), *heads = PyDict_New(), *harmless = PyTuple_New(N_HARMLESS);
    PyObject *except = PyTuple_New(N_EXCEPT);
    if (!levels || !heads || !harmless || !except) return NULL;
    for (int i = 0; i < N_LEVELS; i++) PyTuple_SET_ITEM(levels, i, PyBytes_FromString(LEVELS[i]));
    for (int i = 0; i < N_HEADS; i++) {
        PyObject *key = PyBytes_FromString(SESSION_HEADS[i]), *val = PyLong_FromLong(SESSION_KINDS[i]);
        PyDict_SetItem(heads, key, val);
        Py_DECREF(key);
        Py_DECREF(val);
    }
    for (int i = 0; i < N_HARMLESS; i++) PyTuple_SET_ITEM(harmless, i, PyBytes_FromString(HARMLESS_LOG[i]));
    for (int i = 0; i < N_EXCEPT; i++) PyTuple_SET_ITEM(except, i, PyBytes_FromString(HARMLESS_EXCEPT[i]));
    return Py_BuildValue("{sNsNsNsN}", "levels", levels, "session_heads", heads, "harmless_log", harmless,
                         "harmless_except", except);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Entries, levels and kinds of a stderr block (see _scan.c)."},
    {"head", head, METH_VARARGS, "Time, zone key and pid of '%m [%p' heads (see _scan.c)."},
    {"stamp", stamp, METH_VARARGS, "Time and zone key of csvlog/jsonlog stamps (see _scan.c)."},
    {"encode", encode, METH_VARARGS, "Slices of a buffer as codes into their distinct values (see _scan.c)."},
    {"remap", remap, METH_VARARGS, "A block's codes into a growing global dictionary (see _scan.c)."},
    {"count_lines", count_lines, METH_VARARGS, "Newlines in a buffer (see _scan.c)."},
    {"session_fields", session_fields, METH_VARARGS, "Fields of session lines' messages (see _scan.c)."},
    {"prefix_fields", prefix_fields, METH_VARARGS, "Prefix fields read by a program (see _scan.c)."},
    {"replace_many", replace_many, METH_VARARGS, "Many needles replaced in one pass (see _scan.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", "The stderr reader's hot loops (see _scan.c).", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *r = rules();
    if (r == NULL || PyModule_AddObject(m, "RULES", r) < 0) {
        Py_XDECREF(r);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
