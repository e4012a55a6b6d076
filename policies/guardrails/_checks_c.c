/* The pure checks of policies/guardrails/checks.py in C (optional: checks.py falls back to its
 * Python versions, which give the same answers, when this is not built).
 *
 * Every function takes any str (1-, 2- or 4-byte kind) and works on code points, as the Python
 * does. Where the Python would decide with a regex or with `entropy()` (a sum within
 * `_ENTROPY_MARGIN` of the threshold, or a value longer than `_XLOGX_MAX`), these return None and
 * the caller asks the Python: a bool they return is the Python's answer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* checks._XLOGX_MAX and checks._ENTROPY_MARGIN (the module checks they match at import). */
/* A `case` that falls through to the next on purpose (-Wimplicit-fallthrough). */
#if defined(__has_attribute)
#if __has_attribute(fallthrough)
#define FALLTHROUGH __attribute__((fallthrough))
#endif
#endif
#ifndef FALLTHROUGH
#define FALLTHROUGH ((void)0)
#endif

#define XLOGX_MAX 4096
#define ENTROPY_MARGIN 1e-9

static double xlogx[XLOGX_MAX + 1];
static PyObject *example_str; /* "EXAMPLE" */

static int
ready(PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "a str is required");
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0)
        return -1;
#endif
    return 0;
}

static int
cmp_ucs4(const void *a, const void *b)
{
    Py_UCS4 x = *(const Py_UCS4 *)a, y = *(const Py_UCS4 *)b;
    return (x > y) - (x < y);
}

/* The entropy verdict `entropy_at_least` reaches on its sum (1 at least, 0 under, -1 within the
 * margin or too long: ask `entropy()`), and the number of distinct code points in *distinct
 * (-1 when not counted). -2 on a memory error. */
static int
entropy_verdict(PyObject *s, double min_entropy, Py_ssize_t *distinct)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    double sum = 0.0;
    Py_ssize_t d = 0;
    *distinct = -1;
    if (n == 0 || n > XLOGX_MAX)
        return -1;
    if (kind == PyUnicode_1BYTE_KIND) {
        unsigned short counts[256];
        memset(counts, 0, sizeof(counts));
        const Py_UCS1 *p = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++)
            counts[p[i]]++;
        if (n < 128) { /* each distinct character at its first place, not all 256 counts */
            for (Py_ssize_t i = 0; i < n; i++) {
                if (counts[p[i]]) {
                    sum += xlogx[counts[p[i]]];
                    counts[p[i]] = 0;
                    d++;
                }
            }
        }
        else {
            for (int c = 0; c < 256; c++) {
                if (counts[c]) {
                    sum += xlogx[counts[c]];
                    d++;
                }
            }
        }
    }
    else {
        Py_UCS4 *buf = PyMem_Malloc(sizeof(Py_UCS4) * (size_t)n);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -2;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            buf[i] = PyUnicode_READ(kind, data, i);
        qsort(buf, (size_t)n, sizeof(Py_UCS4), cmp_ucs4);
        Py_ssize_t i = 0;
        while (i < n) {
            Py_ssize_t j = i + 1;
            while (j < n && buf[j] == buf[i])
                j++;
            sum += xlogx[j - i];
            d++;
            i = j;
        }
        PyMem_Free(buf);
    }
    *distinct = d;
    double h = log2((double)n) - sum / (double)n;
    if (fabs(h - min_entropy) < ENTROPY_MARGIN)
        return -1;
    return h >= min_entropy;
}

/* `char_classes(value) >= 2`: lower, upper and digit are ASCII; other is anything else. */
static int
two_classes(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    int lower = 0, upper = 0, digit = 0, other = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 'a' && c <= 'z')
            lower = 1;
        else if (c >= 'A' && c <= 'Z')
            upper = 1;
        else if (c >= '0' && c <= '9')
            digit = 1;
        else
            other = 1;
        if (lower + upper + digit + other >= 2)
            return 1;
    }
    return 0;
}

/* `_ascending_run(value, n)` for n >= 2: n code points in a row, each the previous plus one. */
static int
run_of(PyObject *s, Py_ssize_t n)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    if (len < n)
        return 0;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t run = 1;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *p = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 1; i < len; i++) {
            run = (p[i] == p[i - 1] + 1) ? run + 1 : 1;
            if (run >= n)
                return 1;
        }
        return 0;
    }
    for (Py_ssize_t i = 1; i < len; i++) {
        Py_UCS4 a = PyUnicode_READ(kind, data, i - 1), b = PyUnicode_READ(kind, data, i);
        run = (b == a + 1) ? run + 1 : 1;
        if (run >= n)
            return 1;
    }
    return 0;
}

static PyObject *
verdict(int v)
{
    if (v < 0)
        Py_RETURN_NONE;
    return PyBool_FromLong(v);
}

/* ---- The cut path of labelled values (issue C): engine._cut_labelled_values' choice of the
 * labelled values that lost to a more specific hit inside them, and secrets.rest_of_values of
 * them, in one call. A stretch holding a label's stem, and a value's checks before the dense
 * mode, are asked of the Python (`rest_of_value`, `value_ok`): the rest is here. ---- */

/* secrets._ANY_STEM and secrets._PARAM (secrets.py uses `cut_rest` only where they are these). */
#define ANY_STEM "[pstck](?:ass|wd|ecret|oken|red|ey)"
#define PARAM "(?:[&?;,|]|\\\\[nrt])[A-Za-z_][A-Za-z0-9_.\\-]*+="

static PyObject *s_password, *s_generic_secret; /* "password", "generic_secret" */

/* `_ANY_STEM.search(low, start, end) is not None`. */
static int
any_stem(int kind, const void *d, Py_ssize_t start, Py_ssize_t end)
{
    static const char *const tails[] = {"ass", "wd", "ecret", "oken", "red", "ey", NULL};
    for (Py_ssize_t i = start; i + 3 <= end; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, d, i);
        if (c != 'p' && c != 's' && c != 't' && c != 'c' && c != 'k')
            continue;
        for (const char *const *t = tails; *t; t++) {
            Py_ssize_t k = 0;
            while ((*t)[k] && i + 1 + k < end &&
                   PyUnicode_READ(kind, d, i + 1 + k) == (Py_UCS4)(unsigned char)(*t)[k])
                k++;
            if ((*t)[k] == '\0')
                return 1;
        }
    }
    return 0;
}

/* The first `ch` (ASCII) in `data[from:to]`, or -1: a loop of its kind's code units (reading
 * each with PyUnicode_READ made a search over 2-byte prose 2-3x slower than the regex's). */
static Py_ssize_t
find_char(int kind, const void *data, Py_ssize_t from, Py_ssize_t to, Py_UCS4 ch)
{
    if (from >= to)
        return -1;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = (const Py_UCS1 *)data;
        const Py_UCS1 *hit = memchr(d + from, (int)ch, (size_t)(to - from));
        return hit == NULL ? -1 : hit - d;
    }
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *d = (const Py_UCS2 *)data;
        for (Py_ssize_t i = from; i < to; i++)
            if (d[i] == ch)
                return i;
        return -1;
    }
    const Py_UCS4 *d = (const Py_UCS4 *)data;
    for (Py_ssize_t i = from; i < to; i++)
        if (d[i] == ch)
            return i;
    return -1;
}

static int
ascii_letter(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Where `_PARAM.search(text, start, end)` starts, or -1. */
static Py_ssize_t
param_at(int kind, const void *d, Py_ssize_t start, Py_ssize_t end)
{
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, d, i);
        Py_ssize_t j;
        if (c == '&' || c == '?' || c == ';' || c == ',' || c == '|')
            j = i + 1;
        else if (c == '\\' && i + 1 < end) {
            Py_UCS4 e = PyUnicode_READ(kind, d, i + 1);
            if (e != 'n' && e != 'r' && e != 't')
                continue;
            j = i + 2;
        }
        else
            continue;
        if (j >= end)
            continue;
        c = PyUnicode_READ(kind, d, j);
        if (!ascii_letter(c) && c != '_')
            continue;
        for (j++; j < end; j++) {
            c = PyUnicode_READ(kind, d, j);
            if (!ascii_letter(c) && !(c >= '0' && c <= '9') && c != '_' && c != '.' && c != '-')
                break;
        }
        if (j < end && c == '=')
            return i;
    }
    return -1;
}

/* `"://" in text[start:end]`. */
static int
has_scheme(int kind, const void *d, Py_ssize_t start, Py_ssize_t end)
{
    for (Py_ssize_t i = start; i + 3 <= end; i++) {
        if (PyUnicode_READ(kind, d, i) == ':' && PyUnicode_READ(kind, d, i + 1) == '/' &&
            PyUnicode_READ(kind, d, i + 2) == '/')
            return 1;
    }
    return 0;
}

/* The deallocator of a class made by a class statement (`subtype_dealloc`), set at import. */
static destructor class_dealloc;

/* Whether `t` is a type the scanners can build a Span of with `t->tp_alloc(t, 6)`, as
 * `tuple.__new__(t, …)` would: `tuple` or a class-statement subclass of it (`Span`), each class up
 * to `tuple` deallocated as such. A struct sequence (`os.stat_result`, `sys.float_info`) is a
 * tuple subclass too, but its deallocator reads `n_fields` items whatever the size: 6 of them
 * were read past their end. 0 with a TypeError set where it is none. */
static int
span_type_ok(PyObject *t, const char *who)
{
    if (PyType_Check(t)) {
        PyTypeObject *c = (PyTypeObject *)t;
        while (c != NULL && c != &PyTuple_Type &&
               (c->tp_flags & Py_TPFLAGS_HEAPTYPE) && c->tp_dealloc == class_dealloc)
            c = c->tp_base;
        if (c == &PyTuple_Type)
            return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s: the span type must be tuple or a class subclassing it",
                 who);
    return 0;
}

/* `tuple.__new__(span_type, (start, end, detector, type, priority, True))`. */
static PyObject *
new_span(PyTypeObject *span_type, Py_ssize_t start, Py_ssize_t end, PyObject *detector,
         PyObject *type, PyObject *priority)
{
    PyObject *s = span_type->tp_alloc(span_type, 6);
    if (s == NULL)
        return NULL;
    PyObject *a = PyLong_FromSsize_t(start);
    if (a == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    PyTuple_SET_ITEM(s, 0, a);
    PyObject *b = PyLong_FromSsize_t(end);
    if (b == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    PyTuple_SET_ITEM(s, 1, b);
    Py_INCREF(detector);
    PyTuple_SET_ITEM(s, 2, detector);
    Py_INCREF(type);
    PyTuple_SET_ITEM(s, 3, type);
    Py_INCREF(priority);
    PyTuple_SET_ITEM(s, 4, priority);
    Py_INCREF(Py_True);
    PyTuple_SET_ITEM(s, 5, Py_True);
    return s;
}

/* An exact int's value in *out: 1, or 0 where it is no exact int or does not fit (the caller
 * leaves such input to the Python), -1 on an error. */
static int
exact_ssize(PyObject *o, Py_ssize_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    *out = PyLong_AsSsize_t(o);
    if (*out == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* bisect.bisect_right(a[lo:hi], x) + lo and bisect.bisect_left, as the bisect module runs them. */
static Py_ssize_t
bisect_right_ss(const Py_ssize_t *a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t x)
{
    while (lo < hi) {
        Py_ssize_t mid = ((size_t)lo + hi) / 2;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static Py_ssize_t
bisect_left_ss(const Py_ssize_t *a, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t x)
{
    while (lo < hi) {
        Py_ssize_t mid = ((size_t)lo + hi) / 2;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The labelled values `cut_rest` reads, and what it keeps for one call. */
typedef struct {
    PyObject *text, *low;
    int tkind, lkind;
    const void *tdata, *ldata;
    Py_ssize_t n;
    PyObject *kept;
    const Py_ssize_t *kstart, *kend;
    Py_ssize_t label_context, rest_reads;
} cut_ctx;

/* `quoted` of `rest_of_values` for the value at `vs` of the type `type`. */
static int
cut_quoted(const cut_ctx *c, Py_ssize_t vs, PyObject *type)
{
    if (PyUnicode_CompareWithASCIIString(type, "bearer_token") == 0)
        return 1;
    if (vs < 1)
        return 0;
    Py_UCS4 q = PyUnicode_READ(c->tkind, c->tdata, vs - 1);
    return q == '"' || q == '\'' || q == '`';
}

/* `secrets._cut_key` of the value `text[vs:ve]` of the type `type` and its hits `kept[i:j]`: a
 * tuple equal to another exactly where the Python's would be. */
static PyObject *
cut_key(const cut_ctx *c, Py_ssize_t vs, Py_ssize_t ve, PyObject *type, Py_ssize_t i,
        Py_ssize_t j)
{
    Py_ssize_t w = vs > c->label_context ? vs - c->label_context : 0;
    Py_ssize_t stop = ve > c->n - c->rest_reads ? c->n : ve + c->rest_reads;
    PyObject *key = PyTuple_New(7);
    if (key == NULL)
        return NULL;
    PyObject *starts = PyTuple_New(j - i), *ends = PyTuple_New(j - i);
    if (starts == NULL || ends == NULL) {
        Py_XDECREF(starts);
        Py_XDECREF(ends);
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 5, starts);
    PyTuple_SET_ITEM(key, 6, ends);
    for (Py_ssize_t h = i; h < j; h++) {
        PyObject *a = PyLong_FromSsize_t(c->kstart[h] - vs);
        if (a == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(starts, h - i, a);
        PyObject *b = PyLong_FromSsize_t(c->kend[h] - vs);
        if (b == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(ends, h - i, b);
    }
    PyObject *window = PyUnicode_Substring(c->low, w, stop);
    if (window == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, window);
    PyObject *off = PyLong_FromSsize_t(vs - w);
    if (off == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 1, off);
    PyObject *vtext = PyUnicode_Substring(c->text, vs, ve);
    if (vtext == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 2, vtext);
    Py_INCREF(type);
    PyTuple_SET_ITEM(key, 3, type);
    PyObject *q = cut_quoted(c, vs, type) ? Py_True : Py_False;
    Py_INCREF(q);
    PyTuple_SET_ITEM(key, 4, q);
    return key;
}

/* What `secrets._rest_of_value` finds in the stretch `text[a:b]` of a cut value of the type
 * `type` starting at `vs`, appended to the list `found`: 0, or -1 on an error. A stretch holding
 * a stem is asked of `rest_cb` (the Python); one holding none is judged here, its value's checks
 * asked of `ok_cb` (`secrets._value_ok`) unless `dense`. */
static int
rest_of_stretch(const cut_ctx *c, PyObject *found, PyObject *type, int quoted, Py_ssize_t a,
                Py_ssize_t b, Py_ssize_t vs, int dense, PyObject *rest_cb, PyObject *ok_cb,
                PyObject *generic)
{
    if (any_stem(c->lkind, c->ldata, a, b)) {
        PyObject *pa = PyLong_FromSsize_t(a), *pb = PyLong_FromSsize_t(b);
        PyObject *pv = PyLong_FromSsize_t(vs);
        PyObject *r = NULL;
        if (pa != NULL && pb != NULL && pv != NULL) {
            PyObject *argv[8] = {c->text, c->low, type, quoted ? Py_True : Py_False,
                                 pa, pb, pv, dense ? Py_True : Py_False};
            r = PyObject_Vectorcall(rest_cb, argv, 8, NULL);
        }
        Py_XDECREF(pa);
        Py_XDECREF(pb);
        Py_XDECREF(pv);
        if (r == NULL)
            return -1;
        if (!PyList_Check(r)) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "cut_rest: rest_of_value must return a list");
            return -1;
        }
        Py_ssize_t at = PyList_GET_SIZE(found);
        int e = PyList_SetSlice(found, at, at, r);
        Py_DECREF(r);
        return e;
    }
    Py_ssize_t stop = b;
    if (stop - a < 8)
        return 0;
    Py_ssize_t p = param_at(c->tkind, c->tdata, a, stop);
    if (p >= 0)
        stop = p;
    if (stop - a < 8 || has_scheme(c->tkind, c->tdata, a, stop))
        return 0;
    if (!dense) {
        PyObject *piece = PyUnicode_Substring(c->text, a, stop);
        if (piece == NULL)
            return -1;
        PyObject *argv[3] = {piece, quoted ? Py_True : Py_False,
                             PyUnicode_CompareWithASCIIString(type, "password") == 0
                                 ? s_password
                                 : s_generic_secret};
        PyObject *r = PyObject_Vectorcall(ok_cb, argv, 3, NULL);
        Py_DECREF(piece);
        if (r == NULL)
            return -1;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (ok <= 0)
            return ok;
    }
    PyObject *fa = PyLong_FromSsize_t(a - vs), *fb = PyLong_FromSsize_t(stop - vs);
    PyObject *f = (fa != NULL && fb != NULL) ? PyTuple_Pack(4, fa, fb, type, generic) : NULL;
    Py_XDECREF(fa);
    Py_XDECREF(fb);
    if (f == NULL)
        return -1;
    int e = PyList_Append(found, f);
    Py_DECREF(f);
    return e;
}

/* cut_rest(text, low, spans, kept, labelled, span_type, detector, rest_of_value, value_ok,
 *          (labelled_priority, dense_findings, memo_max, label_context, rest_reads))
 * `rest_of_values(text, low, cut)` of the `cut` `engine._cut_labelled_values` chooses from `spans`
 * (sorted) and `kept` (their `_resolve_overlaps`), in the same order with the same kept
 * answers: a list of spans; or None for input it leaves to the Python (offsets that are not
 * ints in the text, spans that are not tuples). */
static PyObject *
py_cut_rest(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "cut_rest(text, low, spans, kept, labelled, span_type, "
                                         "detector, rest_of_value, value_ok, limits)");
        return NULL;
    }
    PyObject *text = args[0], *low = args[1], *spans = args[2], *kept = args[3];
    PyObject *labelled = args[4], *span_type = args[5], *detector = args[6];
    PyObject *rest_cb = args[7], *ok_cb = args[8], *limits = args[9];
    if (ready(text) < 0 || ready(low) < 0)
        return NULL;
    if (!PyList_Check(spans) || !PyList_Check(kept) || !PyAnySet_Check(labelled) ||
        !span_type_ok(span_type, "cut_rest") || !PyTuple_Check(limits) ||
        PyTuple_GET_SIZE(limits) != 5) {
        PyErr_SetString(PyExc_TypeError, "cut_rest: bad arguments");
        return NULL;
    }
    Py_ssize_t lim[5];
    for (int k = 0; k < 5; k++) {
        int r = exact_ssize(PyTuple_GET_ITEM(limits, k), &lim[k]);
        if (r <= 0) {
            if (r == 0)
                PyErr_SetString(PyExc_TypeError, "cut_rest: limits are ints");
            return NULL;
        }
    }
    Py_ssize_t labelled_priority = lim[0], dense_findings = lim[1], memo_max = lim[2];
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_GET_LENGTH(low) != n || lim[3] < 0 || lim[4] < 0)
        Py_RETURN_NONE;
    /* `spans` and `kept` as they are at the call, as the Python chooses every cut value before
     * it calls `rest_of_value`/`value_ok`: the spans and hits read below are borrowed from these
     * tuples, which a callback changing the lists cannot free (a callback clearing `spans` freed
     * the span whose type was still to be read; one clearing `kept` left kept[k] a NULL read). */
    PyObject *spans_t = PyList_AsTuple(spans), *kept_t = NULL;
    if (spans_t == NULL || (kept_t = PyList_AsTuple(kept)) == NULL) {
        Py_XDECREF(spans_t);
        return NULL;
    }
    cut_ctx c = {text, low, PyUnicode_KIND(text), PyUnicode_KIND(low), PyUnicode_DATA(text),
                 PyUnicode_DATA(low), n, kept_t, NULL, NULL, lim[3], lim[4]};
    PyObject *result = NULL, *out = NULL, *seen = NULL, *once = NULL, *twice = NULL;
    PyObject *kept_set = NULL;
    /* `_GENERIC`, the priority of what `_rest_of_value` finds: `LABELLED_PRIORITY` */
    PyObject *generic = PyTuple_GET_ITEM(limits, 0);
    Py_ssize_t nk = PyTuple_GET_SIZE(kept_t);
    Py_ssize_t *kstart = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(3 * nk + 1));
    Py_ssize_t *stretch = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(2 * nk + 2));
    if (kstart == NULL || stretch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t *kend = kstart + nk, *kprio = kstart + 2 * nk;
    c.kstart = kstart;
    c.kend = kend;
    int sorted = 1;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *h = PyTuple_GET_ITEM(kept_t, k);
        int r;
        if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) < 5)
            goto python;
        if ((r = exact_ssize(PyTuple_GET_ITEM(h, 0), &kstart[k])) <= 0 ||
            (r = exact_ssize(PyTuple_GET_ITEM(h, 1), &kend[k])) <= 0 ||
            (r = exact_ssize(PyTuple_GET_ITEM(h, 4), &kprio[k])) <= 0) {
            if (r < 0)
                goto done;
            goto python;
        }
        if (kstart[k] < 0 || kstart[k] > kend[k] || kend[k] > n)
            goto python;
        if (k && kstart[k] < kstart[k - 1])
            sorted = 0;
    }
    if ((out = PyList_New(0)) == NULL || (seen = PyDict_New()) == NULL ||
        (once = PyDict_New()) == NULL || (twice = PySet_New(NULL)) == NULL)
        goto done;
    Py_ssize_t stored = 0;
    for (Py_ssize_t idx = 0; idx < PyTuple_GET_SIZE(spans_t); idx++) {
        PyObject *s = PyTuple_GET_ITEM(spans_t, idx);
        Py_ssize_t p, vs, ve;
        int r;
        if (!PyTuple_Check(s) || PyTuple_GET_SIZE(s) < 5)
            goto python;
        if ((r = exact_ssize(PyTuple_GET_ITEM(s, 4), &p)) <= 0) {
            if (r < 0)
                goto done;
            goto python;
        }
        if (p != labelled_priority)
            continue;
        if ((r = exact_ssize(PyTuple_GET_ITEM(s, 0), &vs)) <= 0 ||
            (r = exact_ssize(PyTuple_GET_ITEM(s, 1), &ve)) <= 0) {
            if (r < 0)
                goto done;
            goto python;
        }
        /* `s in set(kept)` */
        int in_kept = 0;
        if (sorted) {
            for (Py_ssize_t k = bisect_left_ss(kstart, 0, nk, vs); k < nk && kstart[k] == vs;
                 k++) {
                PyObject *h = PyTuple_GET_ITEM(kept_t, k);
                in_kept = h == s ? 1 : PyObject_RichCompareBool(h, s, Py_EQ);
                if (in_kept)
                    break;
            }
        }
        else {
            if (kept_set == NULL && (kept_set = PySet_New(kept_t)) == NULL)
                goto done;
            in_kept = PySet_Contains(kept_set, s);
        }
        if (in_kept < 0)
            goto done;
        if (in_kept)
            continue;
        PyObject *type = PyTuple_GET_ITEM(s, 3);
        if ((r = PySet_Contains(labelled, type)) <= 0) {
            if (r < 0)
                goto done;
            continue;
        }
        Py_ssize_t i = bisect_right_ss(kend, 0, nk, vs);
        Py_ssize_t j = bisect_left_ss(kstart, i, nk, ve);
        Py_ssize_t top = j > i ? kprio[i] : 0; /* `max(…, default=0)` */
        for (Py_ssize_t h = i + 1; h < j; h++)
            top = kprio[h] > top ? kprio[h] : top;
        if (top <= p)
            continue;
        /* rest_of_values of (s, kept[i:j]) */
        if (!PyUnicode_CheckExact(type) || vs < 0 || vs > ve || ve > n)
            goto python;
        Py_ssize_t ns = 0, pos = vs;
        for (Py_ssize_t h = i; h < j; h++) {
            if (kstart[h] - pos >= 8) {
                stretch[2 * ns] = pos;
                stretch[2 * ns + 1] = kstart[h];
                ns++;
            }
            pos = kend[h];
        }
        if (ve - pos >= 8) {
            stretch[2 * ns] = pos;
            stretch[2 * ns + 1] = ve;
            ns++;
        }
        if (ns == 0)
            continue;
        int quoted = cut_quoted(&c, vs, type);
        PyObject *vtext = PyUnicode_Substring(text, vs, ve);
        PyObject *key = NULL, *found = NULL;
        if (vtext == NULL)
            goto done;
        PyObject *first = PyDict_GetItemWithError(once, vtext);
        if (first == NULL && PyErr_Occurred())
            goto value_failed;
        if (first != NULL) {
            /* (vs, ve, type, i, j, found) of the first value of this text */
            Py_INCREF(first);
            Py_ssize_t f[4];
            for (int k = 0; k < 4; k++)
                f[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(first, k == 0 ? 0 : k == 1 ? 1 : k + 1));
            PyObject *k1 = cut_key(&c, f[0], f[1], PyTuple_GET_ITEM(first, 2), f[2], f[3]);
            int e = k1 == NULL || PyDict_SetItem(seen, k1, PyTuple_GET_ITEM(first, 5)) < 0 ||
                    PyDict_DelItem(once, vtext) < 0 || PySet_Add(twice, vtext) < 0;
            Py_XDECREF(k1);
            Py_DECREF(first);
            if (e)
                goto value_failed;
        }
        if ((r = PySet_Contains(twice, vtext)) < 0)
            goto value_failed;
        if (r) {
            if ((key = cut_key(&c, vs, ve, type, i, j)) == NULL)
                goto value_failed;
            found = PyDict_GetItemWithError(seen, key);
            if (found == NULL && PyErr_Occurred())
                goto value_failed;
            Py_XINCREF(found);
        }
        if (found == NULL) {
            int dense = PyList_GET_SIZE(out) >= dense_findings;
            if ((found = PyList_New(0)) == NULL)
                goto value_failed;
            for (Py_ssize_t k = 0; k < ns; k++) {
                if (rest_of_stretch(&c, found, type, quoted, stretch[2 * k], stretch[2 * k + 1],
                                    vs, dense, rest_cb, ok_cb, generic) < 0)
                    goto value_failed;
            }
            if (stored < memo_max) {
                stored++;
                if (key == NULL) {
                    PyObject *entry = Py_BuildValue("(nnOnnO)", vs, ve, type, i, j, found);
                    if (entry == NULL || PyDict_SetItem(once, vtext, entry) < 0) {
                        Py_XDECREF(entry);
                        goto value_failed;
                    }
                    Py_DECREF(entry);
                }
                else if (PyDict_SetItem(seen, key, found) < 0)
                    goto value_failed;
            }
        }
        if (!PyList_Check(found))
            goto value_bad;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(found); k++) {
            PyObject *f = PyList_GET_ITEM(found, k);
            Py_ssize_t a, b;
            if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) != 4)
                goto value_bad;
            if ((r = exact_ssize(PyTuple_GET_ITEM(f, 0), &a)) <= 0 ||
                (r = exact_ssize(PyTuple_GET_ITEM(f, 1), &b)) <= 0) {
                if (r < 0)
                    goto value_failed;
                goto value_bad;
            }
            PyObject *span = new_span((PyTypeObject *)span_type, vs + a, vs + b, detector,
                                      PyTuple_GET_ITEM(f, 2), PyTuple_GET_ITEM(f, 3));
            if (span == NULL)
                goto value_failed;
            r = PyList_Append(out, span);
            Py_DECREF(span);
            if (r < 0)
                goto value_failed;
        }
        Py_DECREF(vtext);
        Py_XDECREF(key);
        Py_DECREF(found);
        continue;
    value_bad:
        Py_DECREF(vtext);
        Py_XDECREF(key);
        Py_XDECREF(found);
        PyErr_SetString(PyExc_TypeError, "cut_rest: a finding is (start, end, type, priority)");
        goto done;
    value_failed:
        Py_DECREF(vtext);
        Py_XDECREF(key);
        Py_XDECREF(found);
        goto done;
    }
    result = out;
    out = NULL;
    goto done;
python:
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(kstart);
    PyMem_Free(stretch);
    Py_XDECREF(out);
    Py_XDECREF(seen);
    Py_XDECREF(once);
    Py_XDECREF(twice);
    Py_XDECREF(kept_set);
    Py_DECREF(spans_t);
    Py_DECREF(kept_t);
    return result;
}
/* secrets._AWS (secrets.py uses `aws_spans` only where it is this). */
#define AWS                                                                                      \
    "(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"                              \
    "(?:[\\s\\\"',:;|=]{1,8}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=]))?"

static int
upper_or_digit(Py_UCS4 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int
ascii_alnum(Py_UCS4 c)
{
    return ascii_letter(c) || (c >= '0' && c <= '9');
}

static int
b64_char(Py_UCS4 c)
{ /* `[A-Za-z0-9/+]` */
    return ascii_alnum(c) || c == '/' || c == '+';
}

/* Where `_AWS.match(text, p)` ends (and its group 1 in *g, -1 if none), or -1. */
static Py_ssize_t
aws_match(int kind, const void *d, Py_ssize_t n, Py_ssize_t p, Py_ssize_t *g)
{
    *g = -1;
    if (p + 20 > n || PyUnicode_READ(kind, d, p) != 'A')
        return -1;
    Py_UCS4 a = PyUnicode_READ(kind, d, p + 1), b = PyUnicode_READ(kind, d, p + 2),
            c = PyUnicode_READ(kind, d, p + 3);
    if (!((a == 'K' && b == 'I' && c == 'A') || (a == 'S' && b == 'I' && c == 'A') ||
          (a == 'B' && b == 'I' && c == 'A') || (a == 'C' && b == 'C' && c == 'A') ||
          (a == '3' && b == 'T' && upper_or_digit(c))))
        return -1;
    for (Py_ssize_t i = p + 4; i < p + 20; i++)
        if (!upper_or_digit(PyUnicode_READ(kind, d, i)))
            return -1;
    Py_ssize_t q = p + 20;
    if (q < n && ascii_alnum(PyUnicode_READ(kind, d, q)))
        return -1;
    /* `[\s"',:;|=]{1,8}`: its class and the value's share no character, so it takes the whole
     * run of them, 1 to 8 long, or fails. */
    Py_ssize_t r = 0;
    while (r <= 8 && q + r < n) {
        Py_UCS4 s = PyUnicode_READ(kind, d, q + r);
        if (!(Py_UNICODE_ISSPACE(s) || s == '"' || s == '\'' || s == ',' || s == ':' ||
              s == ';' || s == '|' || s == '='))
            break;
        r++;
    }
    if (r < 1 || r > 8 || q + r + 40 > n)
        return q;
    Py_ssize_t v = q + r;
    for (Py_ssize_t i = v; i < v + 40; i++)
        if (!b64_char(PyUnicode_READ(kind, d, i)))
            return q;
    if (v + 40 < n) {
        Py_UCS4 e = PyUnicode_READ(kind, d, v + 40);
        if (b64_char(e) || e == '=')
            return q;
    }
    *g = v;
    return v + 40;
}

/* `"EXAMPLE" in text[a:b]`. */
static int
has_example(int kind, const void *d, Py_ssize_t a, Py_ssize_t b)
{
    static const char ex[] = "EXAMPLE";
    for (Py_ssize_t i = a; i + 7 <= b; i++) {
        Py_ssize_t k = 0;
        while (k < 7 && PyUnicode_READ(kind, d, i + k) == (Py_UCS4)ex[k])
            k++;
        if (k == 7)
            return 1;
    }
    return 0;
}

/* aws_spans(text, span_type, detector, (access_type, secret_type, priority), random_looking)
 * `list(secrets._aws(text))`: AWS key ids and the secret after one, in one pass. A secret's
 * `random_looking(…, 4.0)` the C cannot decide (at the entropy bar) is asked of the Python. */
static PyObject *
py_aws_spans(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "aws_spans(text, span_type, detector, types, random_looking)");
        return NULL;
    }
    PyObject *text = args[0], *span_type = args[1], *detector = args[2], *types = args[3];
    PyObject *random_cb = args[4];
    if (ready(text) < 0)
        return NULL;
    if (!span_type_ok(span_type, "aws_spans"))
        return NULL;
    if (!PyTuple_Check(types) || PyTuple_GET_SIZE(types) != 3) {
        PyErr_SetString(PyExc_TypeError, "aws_spans: bad arguments");
        return NULL;
    }
    PyObject *access = PyTuple_GET_ITEM(types, 0), *secret = PyTuple_GET_ITEM(types, 1);
    PyObject *priority = PyTuple_GET_ITEM(types, 2);
    int kind = PyUnicode_KIND(text);
    const void *d = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t p = 0;
    while (p + 20 <= n) {
        if ((p = find_char(kind, d, p, n - 19, 'A')) < 0)
            break;
        Py_ssize_t g, end = aws_match(kind, d, n, p, &g);
        if (end < 0) {
            p++;
            continue;
        }
        Py_ssize_t start = p;
        p = end;
        if (start && (ascii_alnum(PyUnicode_READ(kind, d, start - 1)) ||
                      PyUnicode_READ(kind, d, start - 1) == '_'))
            continue;
        if (has_example(kind, d, start, start + 20))
            continue;
        int all_x = 1, run = 1, ascending = 0;
        for (Py_ssize_t i = start + 4; i < start + 20; i++)
            all_x &= PyUnicode_READ(kind, d, i) == 'X';
        for (Py_ssize_t i = start + 1; i < start + 20 && !ascending; i++) {
            run = PyUnicode_READ(kind, d, i) == PyUnicode_READ(kind, d, i - 1) + 1 ? run + 1 : 1;
            ascending = run >= 8;
        }
        if (all_x || ascending)
            continue;
        PyObject *span = new_span((PyTypeObject *)span_type, start, start + 20, detector, access,
                                  priority);
        if (span == NULL || PyList_Append(out, span) < 0) {
            Py_XDECREF(span);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(span);
        if (g < 0 || has_example(kind, d, g, g + 40))
            continue;
        PyObject *sk = PyUnicode_Substring(text, g, g + 40);
        if (sk == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        int ok = 0;
        if (two_classes(sk)) {
            Py_ssize_t distinct;
            ok = entropy_verdict(sk, 4.0, &distinct);
            if (ok == -1) { /* at the bar: the Python's answer */
                PyObject *r = PyObject_CallFunction(random_cb, "Od", sk, 4.0);
                ok = r == NULL ? -2 : PyObject_IsTrue(r);
                Py_XDECREF(r);
                if (ok < 0)
                    ok = -2;
            }
        }
        Py_DECREF(sk);
        if (ok == -2) {
            Py_DECREF(out);
            return NULL;
        }
        if (!ok)
            continue;
        span = new_span((PyTypeObject *)span_type, g, g + 40, detector, secret, priority);
        if (span == NULL || PyList_Append(out, span) < 0) {
            Py_XDECREF(span);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(span);
    }
    return out;
}

/* secrets._BEARER and secrets._BEARER_VALUE (secrets.py uses `bearer_spans` only where they are
 * these). */
#define BEARER "bearer[ \\t]+"
#define BEARER_VALUE "[A-Za-z0-9\\-._~+/]{20,2048}+=*+"

static int has_word(PyObject *low);
static int shape(PyObject *low, int three);

static int
bearer_char(Py_UCS4 c)
{ /* `[A-Za-z0-9\-._~+/]` */
    return ascii_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

/* `not placeholder(value) and random_looking(value, 3.0)` of an ASCII `value`: 1, 0, -1 where
 * only the Python can tell (a regex of `placeholder_shape`, the entropy at the bar), -2 on an
 * error. */
static int
bearer_verdict(PyObject *value)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    const Py_UCS1 *v = PyUnicode_1BYTE_DATA(value);
    PyObject *low = PyUnicode_New(n, 127);
    if (low == NULL)
        return -2;
    Py_UCS1 *l = PyUnicode_1BYTE_DATA(low);
    for (Py_ssize_t i = 0; i < n; i++)
        l[i] = (v[i] >= 'A' && v[i] <= 'Z') ? v[i] + 32 : v[i];
    int word = has_word(low), sh = word ? 1 : shape(low, 0);
    Py_DECREF(low);
    if (sh == 1 || !two_classes(value))
        return 0;
    Py_ssize_t distinct;
    int e = entropy_verdict(value, 3.0, &distinct);
    if (e == -2 || e == 0)
        return e;
    return sh < 0 || e < 0 ? -1 : 1;
}

/* bearer_spans(text, low, span_type, detector, (type, priority), ok)
 * `list(secrets._bearer(text, low))`: a bearer token after each `bearer` label, its verdict asked
 * of `ok` (the Python's) where the C cannot tell; None where `low` is not `text`'s length. */
static PyObject *
py_bearer_spans(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "bearer_spans(text, low, span_type, detector, types, ok)");
        return NULL;
    }
    PyObject *text = args[0], *low = args[1], *span_type = args[2], *detector = args[3];
    PyObject *types = args[4], *ok_cb = args[5];
    if (ready(text) < 0 || ready(low) < 0)
        return NULL;
    if (!span_type_ok(span_type, "bearer_spans"))
        return NULL;
    if (!PyTuple_Check(types) || PyTuple_GET_SIZE(types) != 2) {
        PyErr_SetString(PyExc_TypeError, "bearer_spans: bad arguments");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (PyUnicode_GET_LENGTH(low) != n)
        Py_RETURN_NONE;
    PyObject *type = PyTuple_GET_ITEM(types, 0), *priority = PyTuple_GET_ITEM(types, 1);
    int tk = PyUnicode_KIND(text), lk = PyUnicode_KIND(low);
    const void *td = PyUnicode_DATA(text), *ld = PyUnicode_DATA(low);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    static const char label[] = "bearer";
    Py_ssize_t pos = 0;
    while (pos + 7 <= n) {
        /* `_BEARER.search(low, pos)` */
        Py_ssize_t p = pos, me = -1;
        for (; p + 7 <= n; p++) {
            if ((p = find_char(lk, ld, p, n - 6, 'b')) < 0)
                break;
            Py_ssize_t k = 0;
            while (k < 6 && PyUnicode_READ(lk, ld, p + k) == (Py_UCS4)label[k])
                k++;
            if (k < 6)
                continue;
            Py_UCS4 c = PyUnicode_READ(lk, ld, p + 6);
            if (c != ' ' && c != '\t')
                continue;
            for (me = p + 7; me < n; me++) {
                c = PyUnicode_READ(lk, ld, me);
                if (c != ' ' && c != '\t')
                    break;
            }
            break;
        }
        if (me < 0)
            break;
        /* `_BEARER_VALUE.match(text, me)` */
        Py_ssize_t ve = me;
        while (ve < n && ve - me < 2048 && bearer_char(PyUnicode_READ(tk, td, ve)))
            ve++;
        if (ve - me < 20) {
            pos = me;
            continue;
        }
        while (ve < n && PyUnicode_READ(tk, td, ve) == '=')
            ve++;
        pos = ve;
        PyObject *value = PyUnicode_Substring(text, me, ve);
        if (value == NULL)
            goto failed;
        /* (ASCII, as its class is: a str of one byte a character) */
        int ok = PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND ? bearer_verdict(value) : -1;
        if (ok == -1) {
            PyObject *r = PyObject_CallOneArg(ok_cb, value);
            ok = r == NULL ? -2 : PyObject_IsTrue(r);
            Py_XDECREF(r);
            if (ok < 0)
                ok = -2;
        }
        Py_DECREF(value);
        if (ok == -2)
            goto failed;
        if (!ok)
            continue;
        PyObject *span = new_span((PyTypeObject *)span_type, me, ve, detector, type, priority);
        if (span == NULL || PyList_Append(out, span) < 0) {
            Py_XDECREF(span);
            goto failed;
        }
        Py_DECREF(span);
    }
    return out;
failed:
    Py_DECREF(out);
    return NULL;
}

/* ---- end of the cut path, AWS key ids and bearer tokens (issue C) ---- */

static PyObject *
py_ascending_run(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ascending_run(value, n)");
        return NULL;
    }
    if (ready(args[0]) < 0)
        return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 2) {
        PyErr_SetString(PyExc_ValueError, "ascending_run: n must be 2 or more");
        return NULL;
    }
    return PyBool_FromLong(run_of(args[0], n));
}

static PyObject *
py_two_char_classes(PyObject *Py_UNUSED(self), PyObject *value)
{
    if (ready(value) < 0)
        return NULL;
    return PyBool_FromLong(two_classes(value));
}

static int
entropy_args(PyObject *const *args, Py_ssize_t nargs, const char *name, double *t)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(value, min_entropy)", name);
        return -1;
    }
    if (ready(args[0]) < 0)
        return -1;
    *t = PyFloat_AsDouble(args[1]);
    if (*t == -1.0 && PyErr_Occurred())
        return -1;
    return 0;
}

/* `entropy_at_least(value, min_entropy)`, or None: ask `entropy(value) >= min_entropy`. */
static PyObject *
py_entropy_at_least(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    double t;
    Py_ssize_t d;
    if (entropy_args(args, nargs, "entropy_at_least", &t) < 0)
        return NULL;
    int v = entropy_verdict(args[0], t, &d);
    if (v == -2)
        return NULL;
    return verdict(v);
}

/* `random_looking(value, min_entropy)`, or None: ask the Python. */
static PyObject *
py_random_looking(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    double t;
    Py_ssize_t d;
    if (entropy_args(args, nargs, "random_looking", &t) < 0)
        return NULL;
    if (!two_classes(args[0]))
        Py_RETURN_FALSE;
    int v = entropy_verdict(args[0], t, &d);
    if (v == -2)
        return NULL;
    return verdict(v);
}

static const char *const placeholder_values[] = {
    "password", "passwd", "secret", "token", "pass", "pwd", "undefined", "true", "false", NULL,
};

/* `placeholder_shape(low, three)` but for its regexes: 1 a placeholder, 0 not, -1 only a regex
 * (`_TEMPLATE`, `_FILE_PATH`) can tell. */
static int
shape(PyObject *low, int three)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(low);
    int kind = PyUnicode_KIND(low);
    const void *data = PyUnicode_DATA(low);
    if (n == 0)
        return 1;
    Py_UCS4 first = PyUnicode_READ(kind, data, 0);
    if (first == '$' || first == '%' || first == '@' || first == '<')
        return 1;
    if (n <= 9 && PyUnicode_IS_ASCII(low)) {
        for (const char *const *w = placeholder_values; *w; w++) {
            if (PyUnicode_CompareWithASCIIString(low, *w) == 0)
                return 1;
        }
    }
    if (!three) { /* at most two distinct characters */
        Py_UCS4 second = first;
        int two = 0, more = 0;
        for (Py_ssize_t i = 1; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == first)
                continue;
            if (!two) {
                second = c;
                two = 1;
            }
            else if (c != second) {
                more = 1;
                break;
            }
        }
        if (!more)
            return 1;
    }
    if (n >= 4 && PyUnicode_READ(kind, data, n - 4) == 'h' &&
        PyUnicode_READ(kind, data, n - 3) == 'e' && PyUnicode_READ(kind, data, n - 2) == 'r' &&
        PyUnicode_READ(kind, data, n - 1) == 'e')
        return 1;
    int lt = 0, gt = 0, tmpl = 0;
    Py_ssize_t last_sep = -1, last_dot = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == '<')
            lt = 1;
        else if (c == '>')
            gt = 1;
        else if (c == '$' || c == '{')
            tmpl = 1;
        else if (c == '/' || c == '\\')
            last_sep = i;
        else if (c == '.')
            last_dot = i;
    }
    if (lt && gt)
        return 1;
    int unknown = tmpl; /* `_TEMPLATE.search(low)` */
    if (first == '/' || first == '~' || first == '.' || first == '\\' ||
        (n >= 3 && PyUnicode_READ(kind, data, 1) == ':' && PyUnicode_READ(kind, data, 2) == '\\')) {
        /* `_FILE_PATH.fullmatch(low)` matters only where the last part holds a `.` */
        if (last_dot > last_sep)
            unknown = 1;
    }
    return unknown ? -1 : 0;
}

/* checks._PLACEHOLDER_WORDS (checks.py uses this module only where they are the same). */
static const char *const placeholder_words[] = {
    "example", "placeholder", "your_", "your-", "yourpass", "changeme", "change_me", "change-me",
    "redacted", "dummy", "sample", "xxxx", "****", "....", "####", "%(", "%s",
    "secret_here", "token_here", "key_here", "replace", "insert", "todo", "fixme", "null", "none",
    "not-a-real", "not_a_real", "not-real", "not_real", "fake-", "fake_", "-fake", "_fake",
    "path/to/", NULL,
};

/* How many of the words an ASCII character starts (set at import). */
static char word_head[128];
/* The words by their first character, in their order (set at import): a character is compared
 * with the words it can start, not with all of them (~1 us a 32-character value before). */
#define WORDS_PER_HEAD 16
static unsigned char words_of[128][WORDS_PER_HEAD];

/* `_PLACEHOLDER_WORD.search(low) is not None`: any of the words in `low`. */
static int
has_word(PyObject *low)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(low);
    int kind = PyUnicode_KIND(low);
    const void *data = PyUnicode_DATA(low);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 128 || !word_head[c])
            continue;
        for (int h = 0; h < word_head[c]; h++) {
            const char *const *w = &placeholder_words[words_of[c][h]];
            Py_ssize_t k = 1;
            while ((*w)[k] && i + k < n &&
                   PyUnicode_READ(kind, data, i + k) == (Py_UCS4)(unsigned char)(*w)[k])
                k++;
            if ((*w)[k] == '\0')
                return 1;
        }
    }
    return 0;
}

static int
ref_start(Py_UCS4 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '$';
}

static int
ref_char(Py_UCS4 c)
{ /* `[\w$]`: sre's word character for str patterns, or `$` */
    return Py_UNICODE_ISALNUM(c) || c == '_' || c == '$';
}

/* secrets._CODE_REF's pattern (a test checks they are the same). */
#define CODE_REF "[A-Za-z_$][\\w$]*+(?:\\.[A-Za-z_$][\\w$]*+)*+(?:[\\[(:].*)?"

/* `secrets._CODE_REF.fullmatch(value) is not None`:
 * `[A-Za-z_$][\w$]*+(?:\.[A-Za-z_$][\w$]*+)*+(?:[\[(:].*)?` */
static int
code_ref(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t i = 0;
    if (n == 0 || !ref_start(PyUnicode_READ(kind, data, 0)))
        return 0;
    i = 1;
    for (;;) {
        while (i < n && ref_char(PyUnicode_READ(kind, data, i)))
            i++;
        if (i + 1 < n && PyUnicode_READ(kind, data, i) == '.' &&
            ref_start(PyUnicode_READ(kind, data, i + 1)))
            i += 2;
        else
            break;
    }
    if (i == n)
        return 1;
    Py_UCS4 c = PyUnicode_READ(kind, data, i);
    if (c != '[' && c != '(' && c != ':')
        return 0;
    for (i++; i < n; i++) { /* `.*` to the end: no line feed */
        if (PyUnicode_READ(kind, data, i) == '\n')
            return 0;
    }
    return 1;
}

/* `secrets._value_ok(value, quoted, kind, counted)`, `low` being `value`'s lower-cased text,
 * `few` 0 where counted (else 6 for a password, 8 for a secret) and `min_entropy` its kind's: the same answer, or None where a regex (`_TEMPLATE`, `_FILE_PATH`)
 * or `entropy` must decide. Every check is a refusal, so any refusal here is the answer. */
static PyObject *
py_value_ok(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "value_ok(value, low, quoted, few, min_entropy)");
        return NULL;
    }
    PyObject *value = args[0], *low = args[1];
    if (ready(value) < 0 || ready(low) < 0)
        return NULL;
    int quoted = PyObject_IsTrue(args[2]);
    if (quoted < 0)
        return NULL;
    Py_ssize_t few = PyLong_AsSsize_t(args[3]);
    if (few == -1 && PyErr_Occurred())
        return NULL;
    double t = PyFloat_AsDouble(args[4]);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n < 8)
        Py_RETURN_FALSE;
    if (n > XLOGX_MAX)
        Py_RETURN_NONE; /* (not counted here) */
    /* The counts first: the fewest steps, and what refuses most values of a flood. */
    Py_ssize_t d;
    int v = entropy_verdict(value, t, &d);
    if (v == -2)
        return NULL;
    if ((d >= 0 && d < few) || v == 0)
        Py_RETURN_FALSE;
    if (has_word(low))
        Py_RETURN_FALSE;
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    if (!quoted) {
        /* code, not a value: `get_token()`, `a[1]`, `{x}`, `settings.api_key`, `API_KEY` */
        int dot = 0, digit = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == '(' || c == '[' || c == '{')
                Py_RETURN_FALSE;
            if (c == '.' || c == ':')
                dot = 1;
            else if (c < 128 ? c >= '0' && c <= '9' : Py_UNICODE_ISDIGIT(c)) /* (ASCII: 0-9) */
                digit = 1;
        }
        if ((dot || !digit) && code_ref(value))
            Py_RETURN_FALSE;
    }
    int sh = shape(low, PyUnicode_IS_ASCII(value));
    if (sh == 1)
        Py_RETURN_FALSE;
    int has = PyUnicode_Contains(value, example_str);
    if (has < 0)
        return NULL;
    if (has || run_of(value, 8))
        Py_RETURN_FALSE;
    if (!two_classes(value))
        Py_RETURN_FALSE;
    if (sh < 0 || v < 0 || d < 0)
        Py_RETURN_NONE;
    Py_RETURN_TRUE;
}

/* `card_brand_ok(value) and luhn_ok(value)` of a non-empty str of ASCII digits (every card
 * candidate), or None for any other str: ask the Python (which reads `int()` of its prefixes and
 * the UTF-8 bytes of the rest). */
static PyObject *
py_card_ok(PyObject *Py_UNUSED(self), PyObject *value)
{
    if (ready(value) < 0)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n == 0 || PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND)
        Py_RETURN_NONE;
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(value);
    for (Py_ssize_t i = 0; i < n; i++)
        if (d[i] < '0' || d[i] > '9')
            Py_RETURN_NONE;
    /* `int(value[:k])` for k = 2, 3, 4 (of the digits there are). */
    long p2 = 0, p3 = 0, p4 = 0;
    for (Py_ssize_t i = 0; i < 4 && i < n; i++) {
        p4 = p4 * 10 + (d[i] - '0');
        if (i < 3)
            p3 = p4;
        if (i < 2)
            p2 = p4;
    }
    int brand;
    if (d[0] == '4')
        brand = n == 13 || n == 16 || n == 19;
    else if ((51 <= p2 && p2 <= 55) || (2221 <= p4 && p4 <= 2720))
        brand = n == 16;
    else if (p2 == 34 || p2 == 37)
        brand = n == 15;
    else if ((n >= 4 && memcmp(d, "6011", 4) == 0) || p2 == 65 || (644 <= p3 && p3 <= 649) ||
             p2 == 62)
        brand = 16 <= n && n <= 19;
    else if (3528 <= p4 && p4 <= 3589)
        brand = 16 <= n && n <= 19;
    else if ((300 <= p3 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39)
        brand = 14 <= n && n <= 19;
    else
        brand = 0;
    if (!brand)
        Py_RETURN_FALSE;
    /* Luhn: from the right, every second digit doubled (its digit sum). */
    static const int doubled[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    long total = 0;
    for (Py_ssize_t i = n - 1, k = 0; i >= 0; i--, k++)
        total += (k & 1) ? doubled[d[i] - '0'] : d[i] - '0';
    return PyBool_FromLong(total % 10 == 0);
}

/* ---- PII scanners (pii.py): a whole detector loop in one call, the same spans as its Python
 * fallback (tests/policies/test_guardrails_pii_c.py compares them). Each takes the text and
 * what a Span holds besides its offsets, and returns the list of Spans, built as
 * `tuple.__new__(Span, (start, end, detector, type, priority, complete))` would. ---- */

static int
pii_alnum(Py_UCS4 c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
pii_alpha(Py_UCS4 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* `[A-Za-z0-9\-]`: a domain label's character. */
static int
pii_dom(Py_UCS4 c)
{
    return pii_alnum(c) || c == '-';
}

/* pii._LOCAL: `[A-Za-z0-9._%+\-]`. */
static int
pii_local(Py_UCS4 c)
{
    return pii_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* The first index at or after `i` where `text[i] == ch` (an ASCII character), or `n`: memchr on
 * 1-byte text (prose pays this per character where the regexes skipped to their first one). */
static Py_ssize_t
pii_next(int kind, const void *data, Py_ssize_t n, Py_ssize_t i, char ch)
{
    if (i >= n)
        return n;
    if (kind == PyUnicode_1BYTE_KIND) {
        const char *p = memchr((const char *)data + i, ch, (size_t)(n - i));
        return p == NULL ? n : p - (const char *)data;
    }
    while (i < n && PyUnicode_READ(kind, data, i) != (Py_UCS4)ch)
        i++;
    return i;
}

/* A Span of `type` (a tuple subclass) holding (s, e) and `rest` (the four other fields). */
static PyObject *
pii_span(PyTypeObject *type, Py_ssize_t s, Py_ssize_t e, PyObject *const *rest)
{
    PyObject *a = PyLong_FromSsize_t(s);
    if (a == NULL)
        return NULL;
    PyObject *b = PyLong_FromSsize_t(e);
    if (b == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *o = type->tp_alloc(type, 6);
    if (o == NULL) {
        Py_DECREF(a);
        Py_DECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(o, 0, a);
    PyTuple_SET_ITEM(o, 1, b);
    for (int i = 0; i < 4; i++) {
        Py_INCREF(rest[i]);
        PyTuple_SET_ITEM(o, 2 + i, rest[i]);
    }
    return o;
}

/* Append a Span to `out`: -1 on a memory error. */
static int
pii_add(PyObject *out, PyTypeObject *type, Py_ssize_t s, Py_ssize_t e, PyObject *const *rest)
{
    PyObject *o = pii_span(type, s, e, rest);
    if (o == NULL)
        return -1;
    int r = PyList_Append(out, o);
    Py_DECREF(o);
    return r;
}

/* The arguments every scanner takes after the text: (Span, detector, type, priority, complete),
 * Span a subclass of tuple. */
static int
pii_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s", usage);
        return -1;
    }
    if (ready(args[0]) < 0)
        return -1;
    if (!span_type_ok(args[1], usage))
        return -1;
    return 0;
}

/* Whether `text[lo:hi]` (ASCII letters, digits, dashes and dots) ends with the ASCII `tail`,
 * ignoring case (`tail` lower-case). */
static int
pii_ends_with(int kind, const void *data, Py_ssize_t lo, Py_ssize_t hi, const char *tail)
{
    Py_ssize_t k = (Py_ssize_t)strlen(tail);
    if (hi - lo < k)
        return 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, hi - k + i);
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != (Py_UCS4)(unsigned char)tail[i])
            return 0;
    }
    return 1;
}

static const char *const pii_reserved[] = {
    "example.com", "example.net", "example.org", ".example", ".test", ".invalid", ".localhost",
    ".local", NULL,
};

/* The end of `_EMAIL_DOMAIN`'s match at the `@` `text[at]`, or -1 where it has none. The regex
 * can only take the run of `[A-Za-z0-9.\-]` after the `@`, cut at its dots into labels: its first
 * label must be the whole first one (only a dot may follow it) and start and end with a letter or
 * digit; each later label the repeated group takes is whole and non-empty (a dot must follow);
 * the top-level domain is a whole label too (the look-ahead refuses a letter, digit or dash after
 * it): 2-24 letters or `xn--` and 1-59 more. The group is greedy, so the last such label of the
 * non-empty ones after the first. */
static Py_ssize_t
pii_domain_end(int kind, const void *data, Py_ssize_t n, Py_ssize_t at)
{
    Py_ssize_t i = at + 1, j = i;
    while (j < n && pii_dom(PyUnicode_READ(kind, data, j)))
        j++;
    if (j == i || !pii_alnum(PyUnicode_READ(kind, data, i)) ||
        !pii_alnum(PyUnicode_READ(kind, data, j - 1)))
        return -1;
    Py_ssize_t best = -1;
    while (j < n && PyUnicode_READ(kind, data, j) == '.') {
        Py_ssize_t a = j + 1, b = a;
        int letters = 1;
        while (b < n) {
            Py_UCS4 c = PyUnicode_READ(kind, data, b);
            if (!pii_dom(c))
                break;
            if (!pii_alpha(c))
                letters = 0;
            b++;
        }
        if (b == a)
            break;
        Py_ssize_t len = b - a;
        if ((letters && len >= 2 && len <= 24) ||
            (len >= 5 && len <= 63 && PyUnicode_READ(kind, data, a) == 'x' &&
             PyUnicode_READ(kind, data, a + 1) == 'n' && PyUnicode_READ(kind, data, a + 2) == '-' &&
             PyUnicode_READ(kind, data, a + 3) == '-'))
            best = b;
        j = b;
    }
    return best;
}

/* `text.rfind(ch, lo, hi)` of one character. */
static Py_ssize_t
pii_rfind1(int kind, const void *data, Py_ssize_t lo, Py_ssize_t hi, Py_UCS4 ch)
{
    for (Py_ssize_t i = hi - 1; i >= lo; i--)
        if (PyUnicode_READ(kind, data, i) == ch)
            return i;
    return -1;
}

/* `text.rfind("://", lo, hi)`. */
static Py_ssize_t
pii_rfind_url(int kind, const void *data, Py_ssize_t lo, Py_ssize_t hi)
{
    for (Py_ssize_t i = hi - 3; i >= lo; i--)
        if (PyUnicode_READ(kind, data, i) == ':' && PyUnicode_READ(kind, data, i + 1) == '/' &&
            PyUnicode_READ(kind, data, i + 2) == '/')
            return i;
    return -1;
}

/* `pii._emails_py(text)`: emails(text, Span, detector, type, priority, complete, dense). */
static PyObject *
py_pii_emails(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (pii_args(args, nargs, 7,
                 "pii_emails(text, Span, detector, type, priority, complete, dense)") < 0)
        return NULL;
    Py_ssize_t dense = PyLong_AsSsize_t(args[6]);
    if (dense == -1 && PyErr_Occurred())
        return NULL;
    PyObject *text = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    int urls = pii_rfind_url(kind, data, 0, n) >= 0;
    Py_ssize_t space = -1, url = -1, done = 0, found = 0;
    for (Py_ssize_t at = pii_next(kind, data, n, 1, '@'); at < n;
         at = pii_next(kind, data, n, at + 1, '@')) {
        if (!pii_local(PyUnicode_READ(kind, data, at - 1)))
            continue;
        Py_ssize_t end = pii_domain_end(kind, data, n, at);
        if (end < 0)
            continue;
        Py_ssize_t s = at - 1; /* the run of local characters before it, up to 64 */
        while (s > 0 && at - s < 64 && pii_local(PyUnicode_READ(kind, data, s - 1)))
            s--;
        if (found >= dense) {
            if (pii_add(out, type, s, end, args + 2) < 0)
                goto error;
            continue;
        }
        while (s < at) {
            Py_UCS4 c = PyUnicode_READ(kind, data, s);
            if (c != '.' && c != '-' && c != '+')
                break;
            s++;
        }
        if (s == at)
            continue;
        if (at - s == 3 && PyUnicode_READ(kind, data, s) == 'g' &&
            PyUnicode_READ(kind, data, s + 1) == 'i' && PyUnicode_READ(kind, data, s + 2) == 't')
            continue;
        /* A Message-ID: two dots or more, and digits besides. */
        Py_ssize_t dots = 0, digits = 0;
        for (Py_ssize_t i = s; i < at; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == '.')
                dots++;
            else if (c >= '0' && c <= '9')
                digits++;
        }
        if (dots >= 2 && digits && dots + digits == at - s)
            continue;
        int reserved = 0;
        for (const char *const *r = pii_reserved; *r && !reserved; r++)
            reserved = pii_ends_with(kind, data, at + 1, end, *r);
        if (reserved)
            continue;
        if (urls) {
            if (s > done) {
                Py_ssize_t a = pii_rfind1(kind, data, done, s, ' ');
                Py_ssize_t b = pii_rfind1(kind, data, done, s, '\n');
                if (a > space)
                    space = a;
                if (b > space)
                    space = b;
                Py_ssize_t u = pii_rfind_url(kind, data, done > 2 ? done - 2 : 0, s);
                if (u > url)
                    url = u;
                done = s;
            }
            if (url > space)
                continue;
        }
        found++;
        if (pii_add(out, type, s, end, args + 2) < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* A span's field `i` (start 0, end 1, priority 4) as an integer: -1 with an error set when it is
 * none. */
static int
pii_field(PyObject *span, Py_ssize_t i, Py_ssize_t *v)
{
    if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) <= 4) {
        PyErr_SetString(PyExc_TypeError, "settle: a span is a tuple of 5 fields or more");
        return -1;
    }
    *v = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, i));
    if (*v == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* The largest group of overlapping hits `settle` settles itself (`engine._resolve_group`'s
 * sort and settling, O(m^2) here): larger ones are handed to `resolve_group` (O(m log m)). */
#define SETTLE_SMALL 64
/* Offsets `settle` settles itself (no overflow in an end minus a start): larger ones, or an end
 * before its start, hand the group to `resolve_group`. */
#define SETTLE_OFFSET_MAX (PY_SSIZE_T_MAX / 4)

/* `_specific(a) < _specific(b)` of the hits at `a` and `b` of `f` (start, end, priority each):
 * higher priority, then longer, then the earlier start. */
static int
settle_before(const Py_ssize_t *f, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t pa = f[3 * a + 2], pb = f[3 * b + 2];
    if (pa != pb)
        return pa > pb;
    Py_ssize_t la = f[3 * a + 1] - f[3 * a], lb = f[3 * b + 1] - f[3 * b];
    if (la != lb)
        return la > lb;
    return f[3 * a] < f[3 * b];
}

/* Whether `settle_group` settles the group `first`..`last` of `f`: SETTLE_SMALL hits at most,
 * each with 0 <= start <= end <= SETTLE_OFFSET_MAX. */
static int
settle_small(const Py_ssize_t *f, Py_ssize_t first, Py_ssize_t last)
{
    if (last - first + 1 > SETTLE_SMALL)
        return 0;
    for (Py_ssize_t j = first; j <= last; j++)
        if (f[3 * j] < 0 || f[3 * j + 1] < f[3 * j] || f[3 * j + 1] > SETTLE_OFFSET_MAX)
            return 0;
    return 1;
}

/* `engine._resolve_group` of the group of hits `first`..`last` (m of them, 2 <= m <=
 * SETTLE_SMALL, offsets checked by the caller) of `f`: their indices kept, in the order the
 * Python keeps them, in `out`; returns how many. */
static Py_ssize_t
settle_group(const Py_ssize_t *f, Py_ssize_t first, Py_ssize_t last, Py_ssize_t *out)
{
    Py_ssize_t order[SETTLE_SMALL], m = last - first + 1, nk = 0;
    int differ = 0;
    for (Py_ssize_t k = 0; k < m; k++) {
        order[k] = first + k;
        Py_ssize_t j = first + k;
        if (f[3 * j + 2] != f[3 * first + 2] ||
            f[3 * j + 1] - f[3 * j] != f[3 * first + 1] - f[3 * first])
            differ = 1;
    }
    if (differ) {
        /* `spans.sort(key=_specific)`: stable (an insertion sort, strict comparisons). */
        for (Py_ssize_t a = 1; a < m; a++) {
            Py_ssize_t x = order[a], b = a;
            while (b > 0 && settle_before(f, x, order[b - 1])) {
                order[b] = order[b - 1];
                b--;
            }
            order[b] = x;
        }
        int sorted = 1;
        for (Py_ssize_t a = 1; a < m && sorted; a++)
            sorted = f[3 * order[a - 1]] <= f[3 * order[a]];
        if (!sorted) {
            /* `_resolve_sorted`: each hit against its neighbours among those kept (by start). */
            for (Py_ssize_t a = 0; a < m; a++) {
                Py_ssize_t s = order[a], start = f[3 * s], end = f[3 * s + 1];
                Py_ssize_t i = 0; /* bisect_right of `start` in the kept starts */
                while (i < nk && f[3 * out[i]] <= start)
                    i++;
                if (i > 0 && f[3 * out[i - 1] + 1] > start)
                    continue;
                if (i < nk && f[3 * out[i]] < end)
                    continue;
                memmove(out + i + 1, out + i, sizeof(Py_ssize_t) * (size_t)(nk - i));
                out[i] = s;
                nk++;
            }
            return nk;
        }
    }
    /* In text order (or `_specific` order where that keeps the starts in order): each hit can
     * only collide with the last one kept. */
    Py_ssize_t end = -1;
    for (Py_ssize_t a = 0; a < m; a++) {
        Py_ssize_t s = order[a];
        if (end <= f[3 * s]) {
            out[nk++] = s;
            end = f[3 * s + 1];
        }
    }
    return nk;
}

/* `engine._resolve_overlaps` of `spans` once sorted and known to overlap: settle(spans,
 * resolve_group). Groups of hits that touch no hit of another group are settled on their own, as
 * there: one hit is kept, two overlapping ones keep the more specific, a chain of hits of one
 * priority and one length keeps each that starts at or after the last kept one's end, and any
 * other group is `resolve_group(group, starts, ends)`'s. */
static PyObject *
py_settle(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "settle(spans: list, resolve_group)");
        return NULL;
    }
    /* A copy: the call-backs cannot change what is read here. */
    PyObject *spans = PyList_AsTuple(args[0]), *group = args[1];
    if (spans == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(spans);
    Py_ssize_t *f = PyMem_Malloc(sizeof(Py_ssize_t) * 3 * (n ? n : 1));
    if (f == NULL) {
        Py_DECREF(spans);
        return PyErr_NoMemory();
    }
    PyObject *kept = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyTuple_GET_ITEM(spans, i);
        if (pii_field(s, 0, f + 3 * i) < 0 || pii_field(s, 1, f + 3 * i + 1) < 0 ||
            pii_field(s, 4, f + 3 * i + 2) < 0)
            goto error;
    }
#define START(i) f[3 * (i)]
#define END(i) f[3 * (i) + 1]
#define PRIO(i) f[3 * (i) + 2]
    kept = PyList_New(0);
    if (kept == NULL)
        goto error;
    Py_ssize_t first = 0, reach = n ? END(0) : 0;
    for (Py_ssize_t i = 1; i <= n; i++) {
        if (i < n && START(i) <= reach) { /* glued to the group */
            if (END(i) > reach)
                reach = END(i);
            continue;
        }
        Py_ssize_t last = i - 1;
        if (i < n)
            reach = END(i);
        if (last == first) {
            if (PyList_Append(kept, PyTuple_GET_ITEM(spans, first)) < 0)
                goto error;
        }
        else if (last == first + 1 && END(first) > START(last) && START(last) < END(last)) {
            Py_ssize_t pa = PRIO(first), pb = PRIO(last);
            int a = pa > pb || (pa == pb && END(first) - START(first) >= END(last) - START(last));
            if (PyList_Append(kept, PyTuple_GET_ITEM(spans, a ? first : last)) < 0)
                goto error;
        }
        else {
            int chain = last > first + 1;
            for (Py_ssize_t k = first + 1; chain && k <= last; k++)
                chain = PRIO(k) == PRIO(first) &&
                        END(k) - START(k) == END(first) - START(first);
            if (chain) {
                Py_ssize_t end = -1;
                for (Py_ssize_t k = first; k <= last; k++) {
                    if (end <= START(k)) {
                        if (PyList_Append(kept, PyTuple_GET_ITEM(spans, k)) < 0)
                            goto error;
                        end = END(k);
                    }
                }
            }
            else if (settle_small(f, first, last)) {
                /* `resolve_group`'s answer, settled here (a text of labelled values cut by a
                 * hit, each holding a second label, paid ~1.6 us a group in Python). */
                Py_ssize_t idx[SETTLE_SMALL];
                Py_ssize_t nk = settle_group(f, first, last, idx);
                for (Py_ssize_t k = 0; k < nk; k++)
                    if (PyList_Append(kept, PyTuple_GET_ITEM(spans, idx[k])) < 0)
                        goto error;
            }
            else {
                Py_ssize_t m = last - first + 1;
                PyObject *g = PyList_New(m);
                PyObject *st = PyList_New(m), *en = PyList_New(m);
                PyObject *r = NULL;
                if (g != NULL && st != NULL && en != NULL) {
                    for (Py_ssize_t k = 0; k < m; k++) {
                        PyObject *t = PyTuple_GET_ITEM(spans, first + k);
                        PyList_SET_ITEM(g, k, Py_NewRef(t));
                        PyList_SET_ITEM(st, k, Py_NewRef(PyTuple_GET_ITEM(t, 0)));
                        PyList_SET_ITEM(en, k, Py_NewRef(PyTuple_GET_ITEM(t, 1)));
                    }
                    PyObject *cargs[3] = {g, st, en};
                    r = PyObject_Vectorcall(group, cargs, 3, NULL);
                }
                Py_XDECREF(g);
                Py_XDECREF(st);
                Py_XDECREF(en);
                if (r == NULL)
                    goto error;
                Py_ssize_t len = PyList_Check(r) ? PyList_GET_SIZE(r) : -1;
                int bad = len < 0 || PyList_SetSlice(kept, PyList_GET_SIZE(kept),
                                                     PyList_GET_SIZE(kept), r) < 0;
                if (len < 0)
                    PyErr_SetString(PyExc_TypeError, "settle: resolve_group gave no list");
                Py_DECREF(r);
                if (bad)
                    goto error;
            }
        }
        first = i;
    }
#undef START
#undef END
#undef PRIO
    PyMem_Free(f);
    Py_DECREF(spans);
    return kept;
error:
    PyMem_Free(f);
    Py_DECREF(spans);
    Py_XDECREF(kept);
    return NULL;
}

/* pii._ALNUM: `[A-Za-z0-9_]`. */
static int
pii_word(Py_UCS4 c)
{
    return pii_alnum(c) || c == '_';
}

/* `pii._phone_end(text, e)`: where a phone candidate ending at `e` really ends (after an
 * extension `x` and 1-5 digits, `str.isdigit`), or -1 where a word character, or a `.`, `-` or
 * `/` before a digit, is glued to it (`_free_right`). */
static Py_ssize_t
pii_phone_end(int kind, const void *data, Py_ssize_t n, Py_ssize_t e)
{
    if (e < n) {
        Py_UCS4 c = PyUnicode_READ(kind, data, e);
        if (c == 'x' || c == 'X') {
            Py_ssize_t k = e + 1;
            while (k < n && k - e <= 6 && Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, k)))
                k++;
            if (2 <= k - e && k - e <= 6)
                e = k;
        }
    }
    if (e >= n)
        return e;
    Py_UCS4 c = PyUnicode_READ(kind, data, e);
    if (pii_word(c))
        return -1;
    if ((c == '.' || c == '-' || c == '/') && e + 1 < n &&
        Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, e + 1)))
        return -1;
    return e;
}

/* `pii._phone_digits_ok(text[s:e], lo, hi)` of a phone candidate (ASCII digits and separators):
 * no doubled space, dot or dash, and `lo`-`hi` digits. */
static int
pii_digits_ok(int kind, const void *data, Py_ssize_t s, Py_ssize_t e, Py_ssize_t lo,
              Py_ssize_t hi)
{
    Py_ssize_t d = 0;
    for (Py_ssize_t i = s; i < e; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= '0' && c <= '9')
            d++;
        else if ((c == ' ' || c == '.' || c == '-') && i + 1 < e &&
                 PyUnicode_READ(kind, data, i + 1) == c)
            return 0;
    }
    return lo <= d && d <= hi;
}

/* `pii._groups_head(text[s:e], lo, hi)` (not `intl`): the length of the longest run of first
 * digit groups (cut at each of ` ().-+`) holding `lo`-`hi` digits, or 0. */
static Py_ssize_t
pii_groups_head(int kind, const void *data, Py_ssize_t s, Py_ssize_t e, Py_ssize_t lo,
                Py_ssize_t hi)
{
    Py_ssize_t n = 0, head = 0, i = 0, g = s;
    for (;;) { /* each group: [g, k) */
        Py_ssize_t k = g;
        while (k < e) {
            Py_UCS4 c = PyUnicode_READ(kind, data, k);
            if (c == ' ' || c == '(' || c == ')' || c == '.' || c == '-' || c == '+')
                break;
            k++;
        }
        Py_ssize_t len = k - g;
        if (len) {
            n += len;
            if (n > hi)
                break;
            i += len;
            if (n >= lo)
                head = i;
        }
        i += 1;
        if (k >= e)
            break;
        g = k + 1;
    }
    return head;
}

/* `pii._e164_end(text, s, e, text[s:e])`. */
static Py_ssize_t
pii_e164_end(int kind, const void *data, Py_ssize_t n, Py_ssize_t s, Py_ssize_t e)
{
    if (!pii_digits_ok(kind, data, s, e, 8, 15)) {
        Py_ssize_t k = pii_groups_head(kind, data, s, e, 8, 15);
        if (!k || !pii_digits_ok(kind, data, s, s + k, 8, 15))
            return -1;
        e = s + k;
    }
    Py_ssize_t dots = 0;
    for (Py_ssize_t i = s; i < e; i++)
        dots += PyUnicode_READ(kind, data, i) == '.';
    if (dots == 1)
        return -1; /* a signed decimal */
    if (e < n) {
        Py_UCS4 c = PyUnicode_READ(kind, data, e);
        if (pii_word(c) || ((c == '.' || c == '-' || c == '/') && e + 1 < n &&
                            Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, e + 1))))
            return (c == 'x' || c == 'X') ? pii_phone_end(kind, data, n, e) : -1;
    }
    return e;
}

static int
pii_phone_char(Py_UCS4 c)
{ /* `[0-9 ().\-]` */
    return (c >= '0' && c <= '9') || c == ' ' || c == '(' || c == ')' || c == '.' || c == '-';
}

static int
pii_digit(Py_UCS4 c)
{
    return c >= '0' && c <= '9';
}

/* The E.164 and `(415) 555-0132` phones of `pii._phones_py`, in its order:
 * pii_phones(text, Span, detector, type, priority, complete). */
static PyObject *
py_pii_phones(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (pii_args(args, nargs, 6, "pii_phones(text, Span, detector, type, priority, complete)") <
        0)
        return NULL;
    PyObject *text = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* `_E164`: `\+(?<![A-Za-z0-9_]\+)[1-9][0-9 ().\-]{6,22}[0-9]`, its greedy repeat backed off
     * to the last digit it can end on. No match holds a `+` but its first. */
    for (Py_ssize_t s = pii_next(kind, data, n, 0, '+'); s + 9 <= n;
         s = pii_next(kind, data, n, s + 1, '+')) {
        if (s > 0 && pii_word(PyUnicode_READ(kind, data, s - 1)))
            continue;
        Py_UCS4 c = PyUnicode_READ(kind, data, s + 1);
        if (c < '1' || c > '9')
            continue;
        Py_ssize_t j0 = s + 2, r = j0;
        while (r < n && r - j0 < 23 && pii_phone_char(PyUnicode_READ(kind, data, r)))
            r++;
        Py_ssize_t e = -1; /* after the last digit at j0 + 6 .. j0 + 22 */
        for (Py_ssize_t k = r - 1; k >= j0 + 6; k--) {
            if (pii_digit(PyUnicode_READ(kind, data, k))) {
                e = k + 1;
                break;
            }
        }
        if (e < 0)
            continue;
        Py_ssize_t end = pii_e164_end(kind, data, n, s, e);
        if (end >= 0 && pii_add(out, type, s, end, args + 2) < 0)
            goto error;
    }
    /* `_NANP_PAREN`: `\((?<![A-Za-z0-9_]\()[2-9][0-9]{2}\) ?[2-9][0-9]{2}[\-. ][0-9]{4}`. */
    for (Py_ssize_t s = pii_next(kind, data, n, 0, '('); s + 13 <= n;
         s = pii_next(kind, data, n, s + 1, '(')) {
        if (s > 0 && pii_word(PyUnicode_READ(kind, data, s - 1)))
            continue;
        Py_UCS4 c = PyUnicode_READ(kind, data, s + 1);
        if (c < '2' || c > '9' || !pii_digit(PyUnicode_READ(kind, data, s + 2)) ||
            !pii_digit(PyUnicode_READ(kind, data, s + 3)) || PyUnicode_READ(kind, data, s + 4) != ')')
            continue;
        Py_ssize_t j = s + 5;
        if (PyUnicode_READ(kind, data, j) == ' ')
            j++;
        if (j + 8 > n)
            continue;
        c = PyUnicode_READ(kind, data, j);
        Py_UCS4 sep = PyUnicode_READ(kind, data, j + 3);
        if (c < '2' || c > '9' || !pii_digit(PyUnicode_READ(kind, data, j + 1)) ||
            !pii_digit(PyUnicode_READ(kind, data, j + 2)) ||
            (sep != '-' && sep != '.' && sep != ' '))
            continue;
        int ok = 1;
        for (Py_ssize_t k = j + 4; k < j + 8 && ok; k++)
            ok = pii_digit(PyUnicode_READ(kind, data, k));
        if (!ok)
            continue;
        Py_ssize_t end = pii_phone_end(kind, data, n, j + 8);
        if (end > 0 && pii_add(out, type, s, end, args + 2) < 0)
            goto error;
        s = j + 7; /* the search goes on after the match */
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static int
pii_dash_space(Py_UCS4 c)
{
    return c == ' ' || c == '-';
}

/* `pii._INTL_HEAD.match(text[s:e])`'s end, an offset in the text, or -1:
 * `[0-9](?:[0-9]|[ \-]+(?!00[0-9])[0-9]){9,16}(?![0-9])` on a `00` candidate (digits, spaces,
 * dashes). Each step takes one digit (after a run of separators not before `00` and a digit),
 * so one way only; the repeat backs off to the last step not followed by a digit. */
static Py_ssize_t
pii_intl_head(int kind, const void *data, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t ends[17], steps = 0, i = s + 1;
    if (s >= e || !pii_digit(PyUnicode_READ(kind, data, s)))
        return -1;
    while (steps < 16 && i < e) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (pii_dash_space(c)) {
            while (i < e && pii_dash_space(PyUnicode_READ(kind, data, i)))
                i++;
            if (i + 2 < e && PyUnicode_READ(kind, data, i) == '0' &&
                PyUnicode_READ(kind, data, i + 1) == '0' &&
                pii_digit(PyUnicode_READ(kind, data, i + 2)))
                break;
            if (i >= e || !pii_digit(PyUnicode_READ(kind, data, i)))
                break;
        }
        else if (!pii_digit(c))
            break;
        i++;
        ends[steps++] = i;
    }
    for (Py_ssize_t k = steps; k >= 9; k--) {
        Py_ssize_t at = ends[k - 1];
        if (at >= e || !pii_digit(PyUnicode_READ(kind, data, at)))
            return at;
    }
    return -1;
}

static int pii_code_groups(int kind, const void *data, Py_ssize_t n, Py_ssize_t s);

/* The phones dialled with `00` of `pii._intl_phones`: pii_intl(text, Span, detector, type,
 * priority, complete). */
static PyObject *
py_pii_intl(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (pii_args(args, nargs, 6, "pii_intl(text, Span, detector, type, priority, complete)") < 0)
        return NULL;
    PyObject *text = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* `_INTL_00`: `0(?<![A-Za-z0-9_.+\-]0)0[1-9][0-9]{0,3}[ \-][0-9 \-]{5,20}[0-9]`, searched
     * from where the last candidate's phone ended (maybe inside it). */
    Py_ssize_t s = 0;
    while ((s = pii_next(kind, data, n, s, '0')) + 10 <= n) {
        if (PyUnicode_READ(kind, data, s + 1) != '0') {
            s++;
            continue;
        }
        if (s > 0) {
            Py_UCS4 b = PyUnicode_READ(kind, data, s - 1);
            if (pii_word(b) || b == '.' || b == '+' || b == '-') {
                s++;
                continue;
            }
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, s + 2);
        if (c < '1' || c > '9') {
            s++;
            continue;
        }
        Py_ssize_t j = s + 3, d = 0;
        while (d < 3 && j < n && pii_digit(PyUnicode_READ(kind, data, j))) {
            j++;
            d++;
        }
        if (j >= n || !pii_dash_space(PyUnicode_READ(kind, data, j))) {
            s++;
            continue;
        }
        Py_ssize_t j0 = j + 1, r = j0, e = -1;
        while (r < n && r - j0 < 21) {
            Py_UCS4 x = PyUnicode_READ(kind, data, r);
            if (!pii_digit(x) && !pii_dash_space(x))
                break;
            r++;
        }
        for (Py_ssize_t k = r - 1; k >= j0 + 5; k--) {
            if (pii_digit(PyUnicode_READ(kind, data, k))) {
                e = k + 1;
                break;
            }
        }
        if (e < 0) {
            s++;
            continue;
        }
        /* `_intl(text, s, e, text[s:e])` */
        Py_ssize_t end = -1;
        if (!pii_digits_ok(kind, data, s, e, 10, 17)) {
            Py_ssize_t k = pii_intl_head(kind, data, s, e);
            if (k < 0 || !pii_digits_ok(kind, data, s, k, 10, 17)) {
                s = e;
                continue;
            }
            e = k;
        }
        int groups = pii_code_groups(kind, data, n, s); /* `_in_code_groups(text, s)` */
        if (!groups)
            end = pii_phone_end(kind, data, n, e);
        if (end >= 0 && pii_add(out, type, s, end, args + 2) < 0)
            goto error;
        s = e;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* ---- pii._numeric in C: the numeric regex (`_NUMERIC`, emulated here as written below: the
 * module compares the two at import and runs the Python where they differ) and every check of
 * its candidates, in one call: a text of numbers paid ~1-3 µs of Python per candidate. ---- */

/* The patterns the code below emulates, as pii.py writes them. */
#define NUMERIC                                                                                  \
    "[0-9](?<![0-9][0-9])(?=[0-9 .\\-])(?:(?P<iban>(?<=[A-Za-z][A-Za-z][0-9])[0-9](?:[ \\-]?"    \
    "[A-Za-z0-9]{4}){2,7}(?:[ \\-]?[A-Za-z0-9]{1,4})?)|(?P<nino>(?:(?<=[A-Za-z][A-Za-z][0-9])|" \
    "(?<=[A-Za-z][A-Za-z] [0-9]))[0-9] ?[0-9]{2} ?[0-9]{2} ?[A-Da-d])|(?<![A-Za-z0-9_.+\\-]"     \
    "[0-9])(?=[0-9 .\\-]{6})(?=[0-9]{3}|[0-9]{2}[\\-. ][0-9]{2,3}[\\-. ][0-9]{4}|(?<=0)[0-9]{2}" \
    "[ \\-][0-9]{2}|[0-9]{0,2}\\.)(?:(?P<ip>[0-9]{0,2}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3})|" \
    "(?P<ssn>[0-9]{2}(?P<s0>[\\-. ])[0-9]{2}(?P=s0)[0-9]{4})|(?P<nanp>[0-9]{2}(?P<s1>[\\-. ])"   \
    "[2-9][0-9]{2}(?P=s1)[0-9]{4})|(?P<natl>(?<=0)[0-9]{2,4}+(?:[ \\-][0-9]{2,7}+){1,4}+)|"      \
    "(?P<card>[0-9]{3}(?:[ \\-]?[0-9]){9,18}+)|(?P<ssn9>[0-9]{8}(?![0-9]))))"
#define GROUPS_BEFORE "(?:[A-Za-z0-9]{1,4} ){1,8}$"
#define MIXED_GROUP "[A-Za-z][0-9]|[0-9][A-Za-z]"
#define NATL_HEAD "[0-9](?:[ .\\-]?[0-9]){9,10}(?![0-9])"
#define CARD_4X4                                                                                 \
    "[0-9]{4}([ \\-])[0-9]{4}\\1[0-9]{4}\\1[0-9]{4}(?:$|(?!\\1)[ \\-]|\\1[0-9]{4})"

/* `text[i]`, or 0 past its end (every look below reads through this). */
static inline Py_UCS4
num_at(int kind, const void *data, Py_ssize_t n, Py_ssize_t i)
{
    return (i >= 0 && i < n) ? PyUnicode_READ(kind, data, i) : 0;
}

/* pii._LEFT_STOP: `[A-Za-z0-9_.+\-]`. */
static int
num_left_stop(Py_UCS4 c)
{
    return pii_word(c) || c == '.' || c == '+' || c == '-';
}

/* `pii._free_right(text, j)`. */
static int
num_free_right(int kind, const void *data, Py_ssize_t n, Py_ssize_t j)
{
    if (j >= n)
        return 1;
    Py_UCS4 c = PyUnicode_READ(kind, data, j);
    if (pii_word(c))
        return 0;
    if ((c == '.' || c == '-' || c == '/') && j + 1 < n &&
        Py_UNICODE_ISDIGIT(PyUnicode_READ(kind, data, j + 1)))
        return 0;
    return 1;
}

/* Digits in a row from `i`, at most `cap`. */
static Py_ssize_t
num_digits(int kind, const void *data, Py_ssize_t n, Py_ssize_t i, Py_ssize_t cap)
{
    Py_ssize_t k = 0;
    while (k < cap && pii_digit(num_at(kind, data, n, i + k)))
        k++;
    return k;
}

/* `pii._in_code_groups(text, s)`: `_GROUPS_BEFORE` searched in `text[s - 45 : s]` (its leftmost
 * start: 1-8 groups of 1-4 ASCII letters or digits, each before one space, up to `s`) holds a
 * letter next to a digit (`_MIXED_GROUP`). The cheap looks of the Python are implied by it. */
static int
pii_code_groups(int kind, const void *data, Py_ssize_t n, Py_ssize_t s)
{
    if (s <= 0 || s > n || PyUnicode_READ(kind, data, s - 1) != ' ')
        return 0;
    Py_ssize_t lo = s - 45 > 0 ? s - 45 : 0;
    Py_ssize_t end = s - 1, p = -1; /* end: the space after the group looked at */
    for (int groups = 0; groups < 8; groups++) {
        Py_ssize_t len = 0;
        while (len < 5 && end - len - 1 >= lo &&
               pii_alnum(PyUnicode_READ(kind, data, end - len - 1)))
            len++;
        if (len == 0)
            break;
        if (len == 5) { /* a longer run: the match starts at its last four */
            p = end - 4;
            break;
        }
        p = end - len;
        if (p - 1 < lo || PyUnicode_READ(kind, data, p - 1) != ' ')
            break;
        end = p - 1;
    }
    if (p < 0)
        return 0;
    for (Py_ssize_t i = p; i + 1 < s; i++) {
        Py_UCS4 a = PyUnicode_READ(kind, data, i), b = PyUnicode_READ(kind, data, i + 1);
        if ((pii_alpha(a) && pii_digit(b)) || (pii_digit(a) && pii_alpha(b)))
            return 1;
    }
    return 0;
}

/* in_code_groups(text, s) -> bool: pii._in_code_groups. */
static PyObject *
py_in_code_groups(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t s;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "in_code_groups(text: str, s: int)");
        return NULL;
    }
    if (ready(args[0]) < 0)
        return NULL;
    s = PyLong_AsSsize_t(args[1]);
    if (s == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(args[0]);
    if (s < 0 || s > n) {
        PyErr_SetString(PyExc_ValueError, "in_code_groups: s outside the text");
        return NULL;
    }
    return PyBool_FromLong(
        pii_code_groups(PyUnicode_KIND(args[0]), PyUnicode_DATA(args[0]), n, s));
}

/* `checks.card_ok` of ASCII digits `d[0:n]`: issuer prefix and length, then Luhn. */
static int
num_card_ok(const char *d, Py_ssize_t n)
{
    if (n <= 0)
        return 0;
    long p2 = 0, p3 = 0, p4 = 0;
    for (Py_ssize_t i = 0; i < 4 && i < n; i++) {
        p4 = p4 * 10 + (d[i] - '0');
        if (i < 3)
            p3 = p4;
        if (i < 2)
            p2 = p4;
    }
    int brand;
    if (d[0] == '4')
        brand = n == 13 || n == 16 || n == 19;
    else if ((51 <= p2 && p2 <= 55) || (2221 <= p4 && p4 <= 2720))
        brand = n == 16;
    else if (p2 == 34 || p2 == 37)
        brand = n == 15;
    else if ((n >= 4 && memcmp(d, "6011", 4) == 0) || p2 == 65 || (644 <= p3 && p3 <= 649) ||
             p2 == 62)
        brand = 16 <= n && n <= 19;
    else if (3528 <= p4 && p4 <= 3589)
        brand = 16 <= n && n <= 19;
    else if ((300 <= p3 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39)
        brand = 14 <= n && n <= 19;
    else
        brand = 0;
    if (!brand)
        return 0;
    static const int doubled[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    long total = 0;
    for (Py_ssize_t i = n - 1, k = 0; i >= 0; i--, k++)
        total += (k & 1) ? doubled[d[i] - '0'] : d[i] - '0';
    return total % 10 == 0;
}

/* `pii._card(text[s:e])` (a `card` candidate: ASCII digits, single spaces and dashes, each
 * before a digit; a digit first and last; at most 4 + 2 * 18 characters): the length of the
 * card number at its start, or 0. */
static Py_ssize_t
num_card(int kind, const void *data, Py_ssize_t s, Py_ssize_t e)
{
    char v[48];
    Py_ssize_t len = e - s;
    if (len <= 0 || len > 40)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++)
        v[i] = (char)PyUnicode_READ(kind, data, s + i);
    /* Four groups of four, one separator, then the end, the other separator, or the same one
     * before four digits (`_CARD_4X4`). */
    if (len >= 19 && (v[4] == ' ' || v[4] == '-')) {
        char sep = v[4];
        int ok = 1;
        for (int i = 0; i < 19 && ok; i++)
            ok = (i % 5 == 4) ? v[i] == sep : (v[i] >= '0' && v[i] <= '9');
        if (ok) {
            if (len == 19)
                ok = 1;
            else if ((v[19] == ' ' || v[19] == '-') && v[19] != sep)
                ok = 1;
            else if (v[19] == sep && len >= 24) {
                for (int i = 20; i < 24 && ok; i++)
                    ok = v[i] >= '0' && v[i] <= '9';
            }
            else
                ok = 0;
        }
        if (ok) {
            char d[16];
            for (int i = 0, k = 0; i < 19; i++)
                if (v[i] != sep)
                    d[k++] = v[i];
            return num_card_ok(d, 16) ? 19 : 0;
        }
    }
    Py_ssize_t i = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9')
        i++;
    if (i == len)
        return (13 <= len && len <= 19 && num_card_ok(v, len)) ? len : 0;
    char sep = v[i], other = sep == ' ' ? '-' : ' ';
    Py_ssize_t head = len;
    for (Py_ssize_t k = i; k < len; k++)
        if (v[k] == other) {
            head = k;
            break;
        }
    if (13 <= i && i <= 19 && num_card_ok(v, i))
        return i;
    /* The groups of `v[:head]` cut at `sep`: the first k (k >= 3, most first) whose digits are
     * 13-19 long. */
    char d[48];
    Py_ssize_t ends[48], groups = 0, nd = 0, g = 0;
    for (Py_ssize_t k = 0; k <= head; k++) {
        if (k == head || v[k] == sep) {
            nd += k - g;
            ends[groups++] = nd;
            g = k + 1;
        }
        else
            d[nd + (k - g)] = v[k];
    }
    Py_ssize_t top = 0; /* bisect_right(ends, 19) */
    while (top < groups && ends[top] <= 19)
        top++;
    for (Py_ssize_t k = groups < top ? groups : top; k > 2; k--) {
        Py_ssize_t m = ends[k - 1];
        if (m < 13)
            break;
        if (num_card_ok(d, m))
            return m + k - 1;
    }
    return 0;
}

/* `checks.ssn_ok` of the 3, 2 and 4 digits at `a`, `g` and `r`. */
static int
num_ssn_ok(int kind, const void *data, Py_ssize_t a, Py_ssize_t g, Py_ssize_t r)
{
#define D(i) PyUnicode_READ(kind, data, (i))
    if (D(a) == '9')
        return 0;
    if (D(a) == '0' && D(a + 1) == '0' && D(a + 2) == '0')
        return 0;
    if (D(a) == '6' && D(a + 1) == '6' && D(a + 2) == '6')
        return 0;
    if (D(g) == '0' && D(g + 1) == '0')
        return 0;
    if (D(r) == '0' && D(r + 1) == '0' && D(r + 2) == '0' && D(r + 3) == '0')
        return 0;
#undef D
    return 1;
}

/* ASCII case-insensitive `text[i:i+len(low)] == low` (`low` lower-case ASCII). */
static int
num_is(int kind, const void *data, Py_ssize_t n, Py_ssize_t i, const char *low)
{
    for (; *low; low++, i++) {
        Py_UCS4 c = num_at(kind, data, n, i);
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (i < 0 || i >= n || c != (Py_UCS4)(unsigned char)*low)
            return 0;
    }
    return 1;
}

/* `pii._ip4(text, s, e)` of an `ip` candidate `text[s:e]` (four dot-separated runs of 1-3 ASCII
 * digits); `ranges`: the first and last address of each not-global network, 4 bytes each. */
static int
num_ip4(int kind, const void *data, Py_ssize_t n, Py_ssize_t s, Py_ssize_t e,
        const unsigned char *ranges, Py_ssize_t n_ranges)
{
    if ((s > 0 && num_left_stop(PyUnicode_READ(kind, data, s - 1))) ||
        !num_free_right(kind, data, n, e))
        return 0;
    unsigned long ip = 0;
    Py_ssize_t i = s;
    for (int o = 0; o < 4; o++) {
        Py_ssize_t k = num_digits(kind, data, n, i, 3);
        if (k == 0 || (k > 1 && PyUnicode_READ(kind, data, i) == '0'))
            return 0;
        unsigned long v = 0;
        for (Py_ssize_t j = i; j < i + k; j++)
            v = v * 10 + (PyUnicode_READ(kind, data, j) - '0');
        if (v > 255)
            return 0;
        ip = ip << 8 | v;
        i += k + 1;
    }
    for (Py_ssize_t r = 0; r < n_ranges; r++) {
        const unsigned char *b = ranges + 8 * r;
        unsigned long lo = (unsigned long)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
        unsigned long hi = (unsigned long)b[4] << 24 | b[5] << 16 | b[6] << 8 | b[7];
        if (lo <= ip && ip <= hi)
            return 0;
    }
    if (num_is(kind, data, n, e, ".in-addr."))
        return 0; /* a reverse-DNS label */
    /* `text[s - 9 : s]` lower-cased ends with `v`, or with `version` before whitespace (only
     * ASCII letters lower-case to these, one each). */
    Py_ssize_t lo = s - 9 > 0 ? s - 9 : 0, j = s;
    if (j > lo && (PyUnicode_READ(kind, data, j - 1) | 0x20) == 'v')
        return 0;
    while (j > lo && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, j - 1)))
        j--;
    if (j - lo >= 7 && num_is(kind, data, n, j - 7, "version"))
        return 0;
    return 1;
}

/* `pii._iban_nino(text, kind, s, e)` of an `iban` candidate: the IBAN's end, or -1. `lengths`:
 * `checks.IBAN_LENGTHS` as 26 x 26 bytes (0: no IBAN country). */
static Py_ssize_t
num_iban(int kind, const void *data, Py_ssize_t n, Py_ssize_t s, Py_ssize_t e,
         const unsigned char *lengths)
{
    if (s > 0 && pii_word(PyUnicode_READ(kind, data, s - 1)))
        return -1;
    Py_UCS4 a = PyUnicode_READ(kind, data, s) & ~0x20u, b = PyUnicode_READ(kind, data, s + 1) & ~0x20u;
    if (a < 'A' || a > 'Z' || b < 'A' || b > 'Z')
        return -1;
    Py_ssize_t want = lengths[(a - 'A') * 26 + (b - 'A')];
    Py_UCS4 c2 = PyUnicode_READ(kind, data, s + 2);
    if (want == 0 || c2 == ' ' || c2 == '-')
        return -1;
    int upper = 0, lower = 0;
    Py_ssize_t chars = 0, end = -1;
    for (Py_ssize_t i = s; i < e; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == ' ' || c == '-')
            continue;
        upper |= c >= 'A' && c <= 'Z';
        lower |= c >= 'a' && c <= 'z';
        if (++chars == want)
            end = i + 1;
    }
    if (upper && lower)
        return -1; /* mixed case */
    if (end < 0 || !num_free_right(kind, data, n, end))
        return -1;
    /* mod 97 of the characters after the first four, then those four (`A` 10 ... `Z` 35). */
    long r = 0;
    for (int pass = 0; pass < 2; pass++) {
        Py_ssize_t k = 0;
        for (Py_ssize_t i = s; i < end; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == ' ' || c == '-')
                continue;
            k++;
            if ((pass == 0) == (k <= 4))
                continue;
            if (c >= '0' && c <= '9')
                r = (r * 10 + (long)(c - '0')) % 97;
            else
                r = (r * 100 + (long)((c & ~0x20u) - 'A' + 10)) % 97;
        }
    }
    return r == 1 ? end : -1;
}

/* `pii._iban_nino(text, "nino", s, e)`: whether `text[s:e]` is a UK NINO. */
static int
num_nino(int kind, const void *data, Py_ssize_t n, Py_ssize_t s, Py_ssize_t e)
{
    if (s > 0 && pii_word(PyUnicode_READ(kind, data, s - 1)))
        return 0;
    if (!num_free_right(kind, data, n, e))
        return 0;
    char a = (char)(PyUnicode_READ(kind, data, s) & ~0x20u);
    char b = (char)(PyUnicode_READ(kind, data, s + 1) & ~0x20u);
    static const char *const bad[] = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ", NULL};
    for (const char *const *x = bad; *x; x++)
        if ((*x)[0] == a && (*x)[1] == b)
            return 0;
    if (!strchr("ABCEGHJKLMNOPRSTWXYZ", a) || !strchr("ABCEGHJKLMNPRSTWXYZ", b))
        return 0;
    Py_ssize_t spaces = 0, first = -1;
    for (Py_ssize_t i = s; i < e; i++)
        if (PyUnicode_READ(kind, data, i) == ' ') {
            if (first < 0)
                first = i - s;
            spaces++;
        }
    if (spaces != 0 && spaces != 4 && first != 2)
        return 0;
    if (spaces == 1 && first != 2)
        return 0;
    return 1;
}

/* `pii._NATL_HEAD.match(text[s:e])`'s end (an offset in the text), or -1. */
static Py_ssize_t
num_natl_head(int kind, const void *data, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t ends[10], steps = 0, i = s + 1;
    if (s >= e || !pii_digit(PyUnicode_READ(kind, data, s)))
        return -1;
    while (steps < 10 && i < e) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == ' ' || c == '.' || c == '-') {
            if (i + 1 >= e || !pii_digit(PyUnicode_READ(kind, data, i + 1)))
                break;
            i += 2;
        }
        else if (pii_digit(c))
            i++;
        else
            break;
        ends[steps++] = i;
    }
    for (Py_ssize_t k = steps; k >= 9; k--) {
        Py_ssize_t at = ends[k - 1];
        if (at >= e || !pii_digit(PyUnicode_READ(kind, data, at)))
            return at;
    }
    return -1;
}

enum { NUM_NONE, NUM_IBAN, NUM_NINO, NUM_IP, NUM_SSN, NUM_NANP, NUM_NATL, NUM_CARD, NUM_SSN9 };

static int
num_sep(Py_UCS4 c)
{ /* `[\-. ]` */
    return c == '-' || c == '.' || c == ' ';
}

/* `_NUMERIC.match(text, p)`: the alternative that matched (its group's name) and its end in *e,
 * or NUM_NONE. `text[p]` is an ASCII digit. */
static int
num_match(int kind, const void *data, Py_ssize_t n, Py_ssize_t p, Py_ssize_t *e)
{
#define A(i) num_at(kind, data, n, (i))
#define DG(i) pii_digit(A(i))
    Py_UCS4 c1 = A(p + 1);
    if ((p > 0 && pii_digit(A(p - 1))) || !(pii_digit(c1) || c1 == ' ' || c1 == '.' || c1 == '-'))
        return NUM_NONE;
    if (p >= 2 && pii_alpha(A(p - 2)) && pii_alpha(A(p - 1)) && DG(p + 1)) { /* iban */
        Py_ssize_t i = p + 2, reps = 0;
        while (reps < 7) {
            Py_ssize_t j = i + (A(i) == ' ' || A(i) == '-');
            Py_ssize_t k = 0;
            while (k < 4 && pii_alnum(A(j + k)))
                k++;
            if (k < 4)
                break;
            i = j + 4;
            reps++;
        }
        if (reps >= 2) {
            Py_ssize_t j = i + (A(i) == ' ' || A(i) == '-'), k = 0;
            while (k < 4 && pii_alnum(A(j + k)))
                k++;
            *e = k ? j + k : i;
            return NUM_IBAN;
        }
    }
    if ((p >= 2 && pii_alpha(A(p - 2)) && pii_alpha(A(p - 1))) ||
        (p >= 3 && pii_alpha(A(p - 3)) && pii_alpha(A(p - 2)) && A(p - 1) == ' ')) { /* nino */
        Py_ssize_t i = p + 1;
        int ok = DG(i);
        i++;
        for (int g = 0; g < 2 && ok; g++) {
            i += A(i) == ' ';
            ok = DG(i) && DG(i + 1);
            i += 2;
        }
        if (ok) {
            i += A(i) == ' ';
            Py_UCS4 c = A(i) | 0x20;
            if (c >= 'a' && c <= 'd') {
                *e = i + 1;
                return NUM_NINO;
            }
        }
    }
    if (p > 0 && num_left_stop(A(p - 1)))
        return NUM_NONE;
    for (Py_ssize_t i = p + 1; i < p + 7; i++) {
        Py_UCS4 c = A(i);
        if (!(pii_digit(c) || c == ' ' || c == '.' || c == '-'))
            return NUM_NONE;
    }
    Py_ssize_t run = num_digits(kind, data, n, p + 1, 4); /* digits after the first, up to 4 */
    int look = run >= 3;
    if (!look && run >= 2 && num_sep(A(p + 3)) && DG(p + 4) && DG(p + 5)) {
        Py_ssize_t q = DG(p + 6) ? p + 7 : p + 6;
        look = num_sep(A(q)) && num_digits(kind, data, n, q + 1, 4) == 4;
        if (!look && q == p + 7) /* [0-9]{2,3} backing off to 2 */
            look = num_sep(A(p + 6)) && num_digits(kind, data, n, p + 7, 4) == 4;
    }
    if (!look && A(p) == '0' && run >= 2 && (A(p + 3) == ' ' || A(p + 3) == '-') && DG(p + 4) &&
        DG(p + 5))
        look = 1;
    if (!look && run <= 2 && A(p + 1 + run) == '.')
        look = 1;
    if (!look)
        return NUM_NONE;
    /* ip */
    if (run <= 2 && A(p + 1 + run) == '.') {
        Py_ssize_t i = p + 2 + run;
        int ok = 1;
        for (int o = 0; o < 2 && ok; o++) {
            Py_ssize_t k = num_digits(kind, data, n, i, 4);
            ok = k >= 1 && k <= 3 && A(i + k) == '.';
            i += k + 1;
        }
        if (ok) {
            Py_ssize_t k = num_digits(kind, data, n, i, 3);
            if (k >= 1) {
                *e = i + k;
                return NUM_IP;
            }
        }
    }
    if (run >= 2 && num_sep(A(p + 3))) {
        Py_UCS4 sep = A(p + 3);
        /* ssn */
        if (DG(p + 4) && DG(p + 5) && A(p + 6) == sep &&
            num_digits(kind, data, n, p + 7, 4) == 4) {
            *e = p + 11;
            return NUM_SSN;
        }
        /* nanp */
        Py_UCS4 c = A(p + 4);
        if (c >= '2' && c <= '9' && DG(p + 5) && DG(p + 6) && A(p + 7) == sep &&
            num_digits(kind, data, n, p + 8, 4) == 4) {
            *e = p + 12;
            return NUM_NANP;
        }
    }
    if (A(p) == '0' && run >= 2) { /* natl */
        Py_ssize_t i = p + 1 + (run < 4 ? run : 4), reps = 0;
        while (reps < 4 && (A(i) == ' ' || A(i) == '-')) {
            Py_ssize_t k = num_digits(kind, data, n, i + 1, 7);
            if (k < 2)
                break;
            i += 1 + k;
            reps++;
        }
        if (reps >= 1) {
            *e = i;
            return NUM_NATL;
        }
    }
    if (run >= 3) { /* card */
        Py_ssize_t i = p + 4, reps = 0;
        while (reps < 18) {
            Py_UCS4 c = A(i);
            if ((c == ' ' || c == '-') && DG(i + 1))
                i += 2;
            else if (pii_digit(c))
                i++;
            else
                break;
            reps++;
        }
        if (reps >= 9) {
            *e = i;
            return NUM_CARD;
        }
        /* ssn9 */
        if (num_digits(kind, data, n, p + 1, 9) == 8) {
            *e = p + 9;
            return NUM_SSN9;
        }
    }
    return NUM_NONE;
#undef A
#undef DG
}

/* Whether the text before `s` may hold `pii._SSN_LABEL`'s match (its end: the label's last
 * character, then up to 12 of `[^0-9a-z\n]`, at `s` or before a newline there): 0 where it surely
 * does not (every character looked at is ASCII, and none that could end the label is there). */
static int
num_label_maybe(int kind, const void *data, Py_ssize_t s)
{
    for (int nl = 0; nl < 2; nl++) {
        Py_ssize_t q = s;
        if (nl) {
            if (s < 1 || PyUnicode_READ(kind, data, s - 1) != '\n')
                break;
            q = s - 1;
        }
        for (int k = 0; k <= 12 && q > 0; k++, q--) {
            Py_UCS4 c = PyUnicode_READ(kind, data, q - 1);
            if (c >= 128 || (c < 128 && strchr("nNyYrRoOmMsSfF#", (int)c) && c != 0))
                return 1;
            if (pii_alnum(c) || c == '\n')
                break;
        }
    }
    return 0;
}

/* pii_numeric(text, Span, detector, types, priority, complete, dense, not_global_v4,
 * iban_lengths, ssn_label) -> list of Spans: `pii._numeric_py(text)`. `types`: the Span types of
 * (ip, iban, nino, card, ssn, phone); `not_global_v4`: 8-byte records (first and last address);
 * `iban_lengths`: 676 bytes; `ssn_label(text, s)`: the label search, asked where
 * `num_label_maybe` cannot say no, and kept for a window `text[s - 41 : s]` like the last. */
static PyObject *
py_pii_numeric(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] =
        "pii_numeric(text, Span, detector, types, priority, complete, dense, not_global_v4, "
        "iban_lengths, ssn_label)";
    if (pii_args(args, nargs, 10, usage) < 0)
        return NULL;
    if (!PyTuple_CheckExact(args[3]) || PyTuple_GET_SIZE(args[3]) != 6 ||
        !PyLong_CheckExact(args[6]) || !PyBytes_Check(args[7]) ||
        PyBytes_GET_SIZE(args[7]) % 8 || !PyBytes_Check(args[8]) ||
        PyBytes_GET_SIZE(args[8]) != 676 || !PyCallable_Check(args[9])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    Py_ssize_t dense = PyLong_AsSsize_t(args[6]);
    if (dense == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *v4 = (const unsigned char *)PyBytes_AS_STRING(args[7]);
    Py_ssize_t n_v4 = PyBytes_GET_SIZE(args[7]) / 8;
    const unsigned char *lengths = (const unsigned char *)PyBytes_AS_STRING(args[8]);
    PyObject *text = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    /* (detector, type, priority, complete) of each type, for pii_add. */
    PyObject *rest[6][4];
    for (int t = 0; t < 6; t++) {
        rest[t][0] = args[2];
        rest[t][1] = PyTuple_GET_ITEM(args[3], t);
        rest[t][2] = args[4];
        rest[t][3] = args[5];
    }
    enum { T_IP, T_IBAN, T_NINO, T_CARD, T_SSN, T_PHONE };
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t ips = 0, label_at = -1, label_len = 0; /* the last window asked of ssn_label */
    int label_verdict = 0;
    Py_ssize_t pos = 0;
    while (pos < n) {
        /* The next digit that no digit precedes, before one of `[0-9 .\-]`. */
        Py_ssize_t p = pos;
        if (kind == PyUnicode_1BYTE_KIND) {
            const Py_UCS1 *d = (const Py_UCS1 *)data;
            while (p < n && (d[p] < '0' || d[p] > '9'))
                p++;
        }
        else
            while (p < n && !pii_digit(PyUnicode_READ(kind, data, p)))
                p++;
        if (p >= n)
            break;
        Py_ssize_t e = 0;
        int what = num_match(kind, data, n, p, &e);
        if (what == NUM_NONE) {
            pos = p + 1;
            continue;
        }
        pos = e;
        Py_ssize_t s = p, end = -1;
        int t = -1;
        switch (what) {
        case NUM_IP:
            if (ips >= dense) {
                if (!(s > 0 && num_left_stop(PyUnicode_READ(kind, data, s - 1))) &&
                    num_free_right(kind, data, n, e))
                    end = e;
            }
            else if (num_ip4(kind, data, n, s, e, v4, n_v4)) {
                ips++;
                end = e;
            }
            t = T_IP;
            break;
        case NUM_IBAN:
            s -= 2;
            end = num_iban(kind, data, n, s, e, lengths);
            t = T_IBAN;
            break;
        case NUM_NINO:
            s -= PyUnicode_READ(kind, data, s - 1) == ' ' ? 3 : 2;
            end = num_nino(kind, data, n, s, e) ? e : -1;
            t = T_NINO;
            break;
        case NUM_CARD: {
            Py_ssize_t k = num_card(kind, data, s, e);
            if (k && num_free_right(kind, data, n, s + k)) {
                end = pos = s + k;
            }
            t = T_CARD;
            break;
        }
        case NUM_SSN:
            if (num_free_right(kind, data, n, e) && num_ssn_ok(kind, data, s, s + 4, s + 7))
                end = e;
            t = T_SSN;
            break;
        case NUM_SSN9: {
            t = T_SSN;
            if (!num_free_right(kind, data, n, e) || !num_ssn_ok(kind, data, s, s + 3, s + 5) ||
                !num_label_maybe(kind, data, s))
                break;
            Py_ssize_t w = s - 41 > 0 ? s - 41 : 0;
            if (label_at < 0 || label_len != s - w ||
                memcmp((const char *)data + label_at * kind, (const char *)data + w * kind,
                       (size_t)((s - w) * kind)) != 0) {
                PyObject *at = PyLong_FromSsize_t(s);
                if (at == NULL)
                    goto error;
                PyObject *cargs[2] = {text, at};
                PyObject *got = PyObject_Vectorcall(args[9], cargs, 2, NULL);
                Py_DECREF(at);
                if (got == NULL)
                    goto error;
                label_verdict = PyObject_IsTrue(got);
                Py_DECREF(got);
                if (label_verdict < 0)
                    goto error;
                label_at = w;
                label_len = s - w;
            }
            if (label_verdict)
                end = e;
            break;
        }
        case NUM_NANP:
            if (PyUnicode_READ(kind, data, s) != '0') {
                if (PyUnicode_READ(kind, data, s) != '1')
                    end = pii_phone_end(kind, data, n, e);
                t = T_PHONE;
                break;
            }
            /* Led by a 0: a national number. */
            FALLTHROUGH;
        case NUM_NATL: {
            t = T_PHONE;
            Py_ssize_t h = num_natl_head(kind, data, s, e);
            if (h < 0 || pii_code_groups(kind, data, n, s))
                break;
            end = pii_phone_end(kind, data, n, h);
            if (end >= 0)
                pos = end;
            break;
        }
        }
        if (end >= 0 && t >= 0 && pii_add(out, type, s, end, rest[t]) < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

#ifndef _WIN32 /* (inet_pton: where it has no arpa/inet.h, pii.py runs its Python) */
#include <arpa/inet.h>

static int
pii_hex(Py_UCS4 c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* `[0-9A-Fa-f]{1,4}+` at `i`: how many it takes (0: no match). */
static Py_ssize_t
pii_hex4(int kind, const void *data, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t k = 0;
    while (k < 4 && i + k < n && pii_hex(PyUnicode_READ(kind, data, i + k)))
        k++;
    return k;
}

#define PII_AT(i) ((i) < n ? PyUnicode_READ(kind, data, (i)) : 0)

/* Whether `pii._IPV6_AT` matches at the colon `text[p]`:
 * `:(?:H:H:|(?<=[0-9A-Fa-f]:)(?::H:|H::[0-9A-Fa-f]))`, H `[0-9A-Fa-f]{1,4}+`. */
static int
pii_ipv6_at(int kind, const void *data, Py_ssize_t n, Py_ssize_t p)
{
    Py_ssize_t i = p + 1, k = pii_hex4(kind, data, n, i);
    if (k && PII_AT(i + k) == ':') {
        Py_ssize_t j = i + k + 1, h = pii_hex4(kind, data, n, j);
        if (h && PII_AT(j + h) == ':')
            return 1;
    }
    if (p == 0 || !pii_hex(PyUnicode_READ(kind, data, p - 1)))
        return 0;
    if (PII_AT(i) == ':') {
        Py_ssize_t h = pii_hex4(kind, data, n, i + 1);
        return h && PII_AT(i + 1 + h) == ':';
    }
    return k && PII_AT(i + k) == ':' && PII_AT(i + k + 1) == ':' && i + k + 2 < n &&
           pii_hex(PyUnicode_READ(kind, data, i + k + 2));
}

static int
pii_hexcolon(Py_UCS4 c)
{
    return pii_hex(c) || c == ':' || c == '.';
}

/* The IPv6 addresses of `pii._ipv6_py`: pii_ipv6(text, Span, detector, type, priority, complete,
 * not_global, mapped_global). `not_global`: bytes of 32-byte records, the first and last address
 * (16 bytes each, big-endian) of each range that is not global; `mapped_global(value)`:
 * `_ip6_global` for an IPv4-mapped address (left to `ipaddress`). */
static PyObject *
py_pii_ipv6(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (pii_args(args, nargs, 8,
                 "pii_ipv6(text, Span, detector, type, priority, complete, not_global, "
                 "mapped_global)") < 0)
        return NULL;
    if (!PyBytes_Check(args[6]) || PyBytes_GET_SIZE(args[6]) % 32) {
        PyErr_SetString(PyExc_TypeError, "pii_ipv6: not_global is bytes of 32-byte records");
        return NULL;
    }
    const unsigned char *ranges = (const unsigned char *)PyBytes_AS_STRING(args[6]);
    Py_ssize_t n_ranges = PyBytes_GET_SIZE(args[6]) / 32;
    PyObject *text = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t p = 0;
    while ((p = pii_next(kind, data, n, p, ':')) < n) {
        if (!pii_ipv6_at(kind, data, n, p)) {
            p++;
            continue;
        }
        /* The run of hex, colons and dots around it (looking back at most 46). */
        Py_ssize_t lo = p - 45 - 1 > 0 ? p - 45 - 1 : 0, s = p;
        while (s > lo && pii_hexcolon(PyUnicode_READ(kind, data, s - 1)))
            s--;
        Py_ssize_t e = p;
        while (e < n && pii_hexcolon(PyUnicode_READ(kind, data, e)))
            e++;
        p = e;
        if ((s > 0 && pii_word(PyUnicode_READ(kind, data, s - 1))) ||
            (e < n && pii_word(PyUnicode_READ(kind, data, e))))
            continue;
        Py_ssize_t v = e; /* `.rstrip(".")` */
        while (v > s && PyUnicode_READ(kind, data, v - 1) == '.')
            v--;
        if (v - s > 45)
            continue;
        Py_ssize_t groups = 0;
        for (Py_ssize_t i = s; i < v; i++) {
            if (PyUnicode_READ(kind, data, i) != ':' &&
                (i == s || PyUnicode_READ(kind, data, i - 1) == ':'))
                groups++;
        }
        if (groups < 3)
            continue;
        char buf[48];
        for (Py_ssize_t i = s; i < v; i++)
            buf[i - s] = (char)PyUnicode_READ(kind, data, i);
        buf[v - s] = '\0';
        unsigned char ip[16];
        if (inet_pton(AF_INET6, buf, ip) != 1)
            continue;
        int ff = v - s >= 10;
        for (int i = 0; i < 10 && ff; i++) {
            char c = buf[i];
            if (c >= 'A' && c <= 'Z')
                c += 'a' - 'A';
            ff = c == "ffff:ffff:"[i];
        }
        if (ff)
            continue; /* a netmask */
        int ok;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(ip, mapped, 12) == 0) {
            PyObject *value = PyUnicode_Substring(text, s, v);
            if (value == NULL)
                goto error;
            PyObject *r = PyObject_CallOneArg(args[7], value);
            Py_DECREF(value);
            if (r == NULL)
                goto error;
            ok = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (ok < 0)
                goto error;
        }
        else {
            ok = 1;
            for (Py_ssize_t r = 0; r < n_ranges && ok; r++)
                ok = !(memcmp(ranges + 32 * r, ip, 16) <= 0 &&
                       memcmp(ip, ranges + 32 * r + 16, 16) <= 0);
        }
        if (ok && (e >= n || PyUnicode_READ(kind, data, e) != '/') &&
            pii_add(out, type, s, v, args + 2) < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

#undef PII_AT
#endif /* _WIN32 */
/* ---- The label pass of secrets._assignments: its common step in C (issue A). ---- */

/* `[A-Za-z_$][\w$]{0,248}+:` matches at the start of `s` (sre's `\w` on a str: alphanumeric or
 * `_`, Py_UNICODE_ISALNUM). */
static int
id_head(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (n < 2)
        return 0;
    Py_UCS4 c = PyUnicode_READ(kind, data, 0);
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '$'))
        return 0;
    Py_ssize_t i = 1;
    while (i < n && i <= 248) {
        c = PyUnicode_READ(kind, data, i);
        if (!(Py_UNICODE_ISALNUM(c) || c == '_' || c == '$'))
            break;
        i++;
    }
    return i < n && PyUnicode_READ(kind, data, i) == ':';
}

/* `d[key] = v`; -1 on an error. */
static int
dict_set_ssize(PyObject *d, PyObject *key, Py_ssize_t v)
{
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItem(d, key, o);
    Py_DECREF(o);
    return r;
}

/* `secrets._ID_SECRET.fullmatch(s[:n]) is not None`: `[A-Za-z_$][\w$]*+:([^:/].*)` (sre's `\w` on
 * a str: alphanumeric or `_`; `.`: anything but a newline). */
static int
id_secret(PyObject *s, Py_ssize_t n)
{
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (n < 3)
        return 0;
    Py_UCS4 c = PyUnicode_READ(kind, data, 0);
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '$'))
        return 0;
    Py_ssize_t i = 1;
    while (i < n) {
        c = PyUnicode_READ(kind, data, i);
        if (!(Py_UNICODE_ISALNUM(c) || c == '_' || c == '$'))
            break;
        i++;
    }
    if (i + 1 >= n || PyUnicode_READ(kind, data, i) != ':')
        return 0;
    c = PyUnicode_READ(kind, data, i + 1);
    if (c == ':' || c == '/')
        return 0;
    for (Py_ssize_t j = i + 2; j < n; j++)
        if (PyUnicode_READ(kind, data, j) == '\n')
            return 0;
    return 1;
}

/* The label rules of secrets.py that `owned_label` and the label pass's extended step read
 * (secrets.py uses them in C only where `LABEL_RULES` equals its own): `_STEMS`, `_KEY_OWNERS`,
 * `_NOT_SECRET_OWNER`, `_NOT_SECRET_SUFFIX`, `_CONTINUATIONS`, `_ID_SECRET`, `_KEY_CHARS_STR`,
 * `_REST_READS`, `_LABEL_CONTEXT`; `_label_ok`'s stems are `label_ok_stems`. */
static const char *const label_stems[] = {"pass", "pwd", "secret", "token", "cred", "key", NULL};
static const char *const key_owners[] = {"api", "access", "auth", "private", "secret", "client",
                                         "master", "signing", "encryption", "subscription",
                                         "license", "account", NULL};
static const char *const not_secret_owners[] = {"public", "csrf", "xsrf", "publishable", NULL};
static const char *const not_secret_suffixes[] = {
    "id", "ids", "name", "names", "file", "url", "uri", "path", "type", "len", "length", "count",
    "size", "ttl", "expiry", "expires", "header", "prefix", "ref", "env", "var", NULL};
static const char *const continuations[] = {"", "s", "e", "string", "str", "key", "keys",
                                            "value", NULL};
static const char *const label_ok_stems[] = {"password", "passwd", "pwd", "secret", "token",
                                             "cred", "key", NULL};
#define ID_SECRET "[A-Za-z_$][\\w$]*+:([^:/].*)"
#define KEY_CHARS "abcdefghijklmnopqrstuvwxyz0123456789_-."
#define REST_READS 400
#define KEY_LABEL 5 /* the index of `key` in label_stems: it needs an owner word */

static int
key_char(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* `s[:n].endswith(w)` for one of the NULL-ended `words`. */
static int
ends_with_any(const char *s, Py_ssize_t n, const char *const *words)
{
    for (const char *const *w = words; *w; w++) {
        Py_ssize_t k = (Py_ssize_t)strlen(*w);
        if (k <= n && memcmp(s + n - k, *w, (size_t)k) == 0)
            return 1;
    }
    return 0;
}

/* `s[:n] in words`. */
static int
is_any(const char *s, Py_ssize_t n, const char *const *words)
{
    for (const char *const *w = words; *w; w++)
        if ((Py_ssize_t)strlen(*w) == n && memcmp(s, *w, (size_t)n) == 0)
            return 1;
    return 0;
}

/* `secrets._label_ok(word, word, "")` of the ASCII `word[:n]` ([a-z0-9_] only). */
static int
label_ok(const char *word, Py_ssize_t n)
{
    for (const char *const *st = label_ok_stems; *st; st++) {
        Py_ssize_t k = (Py_ssize_t)strlen(*st);
        if (k > n || memcmp(word, *st, (size_t)k) != 0)
            continue;
        const char *rest = word + k;
        Py_ssize_t rn = n - k;
        if (strcmp(*st, "cred") == 0) {
            if (rn >= 1 && rest[0] == 's') { /* `rest.split("s", 1)[1]` */
                rest++;
                rn--;
            } else if (rn >= 6 && memcmp(rest, "ential", 6) == 0) { /* `rest[6:].lstrip("s")` */
                rest += 6;
                rn -= 6;
                while (rn > 0 && rest[0] == 's') {
                    rest++;
                    rn--;
                }
            }
        }
        if (!(is_any(rest, rn, continuations) ||
              (rn > 0 && (rest[0] == '_' || (rest[0] >= '0' && rest[0] <= '9')))))
            return 0;
        break;
    }
    return !ends_with_any(word, n, not_secret_suffixes);
}

/* `secrets._owned_label(low, i, ms, me, owner)`, `owner` being the ASCII `owner[:on]` (the run of
 * `_KEY_CHARS` before `ms`, at most 40): where the label starts with its owner word, or -1; -3
 * on a memory error. Needs 0 <= ms < me <= len(low). */
static Py_ssize_t
owned_label(int kind, const void *data, long i, Py_ssize_t ms, Py_ssize_t me, const char *owner,
            Py_ssize_t on)
{
    if (on > 0) {
        Py_ssize_t bn = on; /* `bare = owner.rstrip("_-. ")` */
        while (bn > 0 && (owner[bn - 1] == '_' || owner[bn - 1] == '-' ||
                          owner[bn - 1] == '.' || owner[bn - 1] == ' '))
            bn--;
        if (i == KEY_LABEL && !ends_with_any(owner, bn, key_owners))
            return -1;
        if (ends_with_any(owner, bn, not_secret_owners))
            return -1;
        if (PyUnicode_READ(kind, data, me - 1) == ':' && memchr(owner, '.', (size_t)on) != NULL)
            return -1; /* a dotted coordinate (`io.jsonwebtoken:jjwt`) */
    } else if (i == KEY_LABEL) {
        return -1;
    }
    /* The label's word (`_WORD.match(label)`, `_label_word`): "" is refused. */
    Py_ssize_t w = 0;
    while (ms + w < me) {
        Py_UCS4 c = PyUnicode_READ(kind, data, ms + w);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            break;
        w++;
    }
    if (w == 0)
        return -1;
    char stack[128];
    char *word = w <= (Py_ssize_t)sizeof(stack) ? stack : PyMem_Malloc((size_t)w);
    if (word == NULL) {
        PyErr_NoMemory();
        return -3;
    }
    for (Py_ssize_t j = 0; j < w; j++)
        word[j] = (char)PyUnicode_READ(kind, data, ms + j);
    int ok = label_ok(word, w);
    if (ok && w < 7) {
        /* `(owner[-4:] + word).endswith(_NOT_SECRET_SUFFIX)`: the names have 7 characters at
         * most, so from 7 on `word` alone decides (label_ok read its end). */
        char tail[12];
        Py_ssize_t o4 = on < 4 ? on : 4;
        memcpy(tail, owner + on - o4, (size_t)o4);
        memcpy(tail + o4, word, (size_t)w);
        ok = !ends_with_any(tail, o4 + w, not_secret_suffixes);
    }
    if (word != stack)
        PyMem_Free(word);
    return ok ? ms - on : -1;
}

/* The label verdict `secrets._assignments` keeps in `labels` for the label `low[ms:me]` of the
 * regex `i` (`iobj`): where the label starts with its owner word (>= 0), -1 for no label, -2 if
 * none is kept and not `compute`, -3 on an error. The key is (i, owner word, label), the owner
 * word being the run of `_KEY_CHARS` just before `ms`, within 40 characters. With `compute`, a
 * verdict not kept is found (`owned_label`) and kept as the Python keeps it (while `labels`
 * holds fewer than `memo_max`). Needs 0 <= ms <= me <= len(low). */
static Py_ssize_t
label_verdict(PyObject *labels, PyObject *iobj, long i, PyObject *low, Py_ssize_t ms,
              Py_ssize_t me, int compute, Py_ssize_t memo_max)
{
    int kind = PyUnicode_KIND(low);
    const void *data = PyUnicode_DATA(low);
    Py_ssize_t j = ms, lo = ms > 40 ? ms - 40 : 0;
    while (j > lo && key_char(PyUnicode_READ(kind, data, j - 1)))
        j--;
    PyObject *owner = PyUnicode_Substring(low, j, ms);
    if (owner == NULL)
        return -3;
    PyObject *label = PyUnicode_Substring(low, ms, me);
    if (label == NULL) {
        Py_DECREF(owner);
        return -3;
    }
    PyObject *key = PyTuple_Pack(3, iobj, owner, label);
    Py_DECREF(owner);
    Py_DECREF(label);
    if (key == NULL)
        return -3;
    PyObject *n = PyDict_GetItemWithError(labels, key); /* borrowed */
    if (n == NULL) {
        if (PyErr_Occurred() || !compute) {
            Py_DECREF(key);
            return PyErr_Occurred() ? -3 : -2;
        }
        char ob[40];
        for (Py_ssize_t x = j; x < ms; x++)
            ob[x - j] = (char)PyUnicode_READ(kind, data, x); /* (key characters: ASCII) */
        Py_ssize_t k = me > ms ? owned_label(kind, data, i, ms, me, ob, ms - j) : -1;
        if (k == -3 || (PyDict_GET_SIZE(labels) < memo_max &&
                        dict_set_ssize(labels, key, k < 0 ? k : ms - k) < 0)) {
            Py_DECREF(key);
            return -3;
        }
        Py_DECREF(key);
        return k;
    }
    Py_DECREF(key);
    Py_ssize_t v = PyLong_AsSsize_t(n);
    if (v == -1 && PyErr_Occurred())
        return -3;
    return v >= 0 ? ms - v : -1;
}

/* (start, end) of the match `m`'s group `g` (NULL: the whole match); -1 on an error. */
static int
match_span(PyObject *m, PyObject *g, Py_ssize_t *start, Py_ssize_t *end)
{
    static PyObject *span_str;
    if (span_str == NULL && (span_str = PyUnicode_InternFromString("span")) == NULL)
        return -1;
    PyObject *t = g == NULL ? PyObject_CallMethodNoArgs(m, span_str)
                            : PyObject_CallMethodOneArg(m, span_str, g);
    if (t == NULL)
        return -1;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "span() must be a pair");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 0));
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
    Py_DECREF(t);
    return PyErr_Occurred() ? -1 : 0;
}

/* secrets._LABEL_CONTEXT and secrets._LABEL_TAIL, which `label_scan` reports spans with (the
 * module's LABEL_SCAN_REPORTS: secrets.py asks it to only where they are these). */
#define LABEL_CONTEXT 80
#define LABEL_TAIL 64

/* `"aws" in low[a:b]`. */
static int
has_aws(PyObject *low, Py_ssize_t a, Py_ssize_t b)
{
    int kind = PyUnicode_KIND(low);
    const void *d = PyUnicode_DATA(low);
    for (Py_ssize_t i = a; i + 3 <= b; i++)
        if (PyUnicode_READ(kind, d, i) == 'a' && PyUnicode_READ(kind, d, i + 1) == 'w' &&
            PyUnicode_READ(kind, d, i + 2) == 's')
            return 1;
    return 0;
}

/* Whether `text[gs:gs + 40]` is `secrets._AWS_SECRET_VALUE` (`[A-Za-z0-9/+]{40}`), `sn` (the
 * value's length without its trailing dots) being 40. */
static int
aws_shaped(int kind, const void *d, Py_ssize_t gs, Py_ssize_t sn)
{
    if (sn != 40)
        return 0;
    for (Py_ssize_t i = gs; i < gs + 40; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, d, i);
        if (!(ascii_alnum(c) || c == '/' || c == '+'))
            return 0;
    }
    return 1;
}

/* Append `tuple.__new__(span_type, (start, end, detector, type, priority, True))` to `out`: -1
 * on an error. */
static int
add_span(PyObject *out, PyObject *span_type, Py_ssize_t start, Py_ssize_t end,
         PyObject *detector, PyObject *type, PyObject *priority)
{
    PyObject *span = new_span((PyTypeObject *)span_type, start, end, detector, type, priority);
    if (span == NULL)
        return -1;
    int r = PyList_Append(out, span);
    Py_DECREF(span);
    return r;
}

/* secrets._LONG_OR_ID_VALUE and secrets._VALUE, which `label_scan` reads a label's value with
 * where asked to (secrets.py asks only where they are these, as written here). */
static const char LONG_OR_ID_VALUE[] =
    "(?=[brfu@]?(?:\\\"[^\\\"\\s]{8}|'[^'\\s]{8}|`[^`\\s]{8}|[^\\s\\\"'`,;)}\\]<>]{8}))(?!(?=[\\w$.]{0,249}+(?![\\w$.]))[A-Za-z_$][\\w$]*+(?:(?:\\.[A-Za-z_$][\\w$]*+)++[\\[(:]|[\\[(]|:(?![^\\s\\\"'`,;)}\\]<>:/])))";
static const char VALUE_RE[] =
    "[brfu@]?(?:\\\"([^\\\"\\s]{1,256})\\\"|'([^'\\s]{1,256})'|`([^`\\s]{1,256})`)|([^\\s\\\"'`,;)}\\]<>]{1,256})";

#define LREAD(i) PyUnicode_READ(kind, d, (i))

/* `[^\s"'`,;)}\]<>]` (`\s` of a str pattern: `str.isspace`). */
static int
unquoted_char(Py_UCS4 c)
{
    if (c < 128 && c > ' ')
        return !(c == '"' || c == '\'' || c == '`' || c == ',' || c == ';' || c == ')' ||
                 c == '}' || c == ']' || c == '<' || c == '>');
    return !(Py_UNICODE_ISSPACE(c) || c == '"' || c == '\'' || c == '`' || c == ',' ||
             c == ';' || c == ')' || c == '}' || c == ']' || c == '<' || c == '>');
}

/* `[\w$]` (`\w` of a str pattern: `str.isalnum` or `_`). */
static int
name_char(Py_UCS4 c)
{
    if (c < 128)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '$';
    return Py_UNICODE_ISALNUM(c);
}

/* `[A-Za-z_$]`. */
static int
name_start(Py_UCS4 c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '$';
}

/* `"[^"\s]{8}|'[^'\s]{8}|`[^`\s]{8}|[^\s"'`,;)}\]<>]{8}` matches at `q` of `low[:n]`. */
static int
eight_at(int kind, const void *d, Py_ssize_t n, Py_ssize_t q)
{
    if (q >= n)
        return 0;
    Py_UCS4 c = LREAD(q);
    if (c == '"' || c == '\'' || c == '`') {
        if (n - q < 9)
            return 0;
        for (Py_ssize_t i = q + 1; i <= q + 8; i++)
            if (LREAD(i) == c || Py_UNICODE_ISSPACE(LREAD(i)))
                return 0;
        return 1; /* (a quote fails the unquoted alternative) */
    }
    if (n - q < 8)
        return 0;
    for (Py_ssize_t i = q; i < q + 8; i++)
        if (!unquoted_char(LREAD(i)))
            return 0;
    return 1;
}

/* `secrets._LONG_OR_ID_VALUE` matches at `e` of `low` (a zero-width test). */
static int
long_or_id_value(PyObject *low, Py_ssize_t e)
{
    int kind = PyUnicode_KIND(low);
    const void *d = PyUnicode_DATA(low);
    Py_ssize_t n = PyUnicode_GET_LENGTH(low);
    if (e < 0 || e >= n)
        return 0;
    /* (?=[brfu@]?(?:…{8})): with the prefix first, then without. */
    Py_UCS4 c = LREAD(e);
    int prefix = c == 'b' || c == 'r' || c == 'f' || c == 'u' || c == '@';
    if (!((prefix && eight_at(kind, d, n, e + 1)) || eight_at(kind, d, n, e)))
        return 0;
    /* (?!…): a code reference within 250 characters refuses it. Its run of `[\w$.]` from `e`
     * is 249 characters at most ((?=[\w$.]{0,249}+(?![\w$.]))), … */
    Py_ssize_t k = e;
    while (k < n && k - e < 250 && (name_char(LREAD(k)) || LREAD(k) == '.'))
        k++;
    if (k - e >= 250)
        return 1;
    /* … a name ([A-Za-z_$][\w$]*+) … */
    if (!name_start(c))
        return 1;
    Py_ssize_t q = e + 1;
    while (q < n && name_char(LREAD(q)))
        q++;
    /* … and dotted names then `[`, `(` or `:` ((?:\.[A-Za-z_$][\w$]*+)++[\[(:]), … */
    Py_ssize_t j = q;
    int dotted = 0;
    while (j + 1 < n && LREAD(j) == '.' && name_start(LREAD(j + 1))) {
        j += 2;
        while (j < n && name_char(LREAD(j)))
            j++;
        dotted = 1;
    }
    if (dotted && j < n && (LREAD(j) == '[' || LREAD(j) == '(' || LREAD(j) == ':'))
        return 0;
    if (q >= n)
        return 1;
    /* … or `[` or `(` ([\[(]), or `:` and no more of a value (:(?![^\s"'`,;)}\]<>:/])). */
    Py_UCS4 x = LREAD(q);
    if (x == '[' || x == '(')
        return 0;
    if (x == ':' && (q + 1 >= n || !unquoted_char(LREAD(q + 1)) || LREAD(q + 1) == ':' ||
                     LREAD(q + 1) == '/'))
        return 0;
    return 1;
}

/* `"…"`, `'…'` or `` `…` `` at `q` (`"([^"\s]{1,256})"` …): its group (1-3) and its span, or 0. */
static int
quoted_at(int kind, const void *d, Py_ssize_t n, Py_ssize_t q, Py_ssize_t *gs, Py_ssize_t *ge)
{
    if (q >= n)
        return 0;
    Py_UCS4 c = LREAD(q);
    int g = c == '"' ? 1 : c == '\'' ? 2 : c == '`' ? 3 : 0;
    if (!g)
        return 0;
    Py_ssize_t r = 0;
    while (q + 1 + r < n && r < 256 && LREAD(q + 1 + r) != c &&
           !Py_UNICODE_ISSPACE(LREAD(q + 1 + r)))
        r++;
    if (r < 1 || q + 1 + r >= n || LREAD(q + 1 + r) != c)
        return 0;
    *gs = q + 1;
    *ge = q + 1 + r;
    return g;
}

/* `secrets._VALUE.match(low, e)`: its `lastindex` (1-4) and that group's span, or 0 for none. */
static int
value_at(PyObject *low, Py_ssize_t e, Py_ssize_t *gs, Py_ssize_t *ge)
{
    int kind = PyUnicode_KIND(low);
    const void *d = PyUnicode_DATA(low);
    Py_ssize_t n = PyUnicode_GET_LENGTH(low);
    if (e < 0 || e >= n)
        return 0;
    Py_UCS4 c = LREAD(e);
    int g = 0;
    if (c == 'b' || c == 'r' || c == 'f' || c == 'u' || c == '@')
        g = quoted_at(kind, d, n, e + 1, gs, ge);
    if (!g)
        g = quoted_at(kind, d, n, e, gs, ge);
    if (g)
        return g;
    Py_ssize_t r = 0;
    while (e + r < n && r < 256 && unquoted_char(LREAD(e + r)))
        r++;
    if (r < 1)
        return 0;
    *gs = e;
    *ge = e + r;
    return 4;
}

#undef LREAD

/* `regex(low, at)`'s result (a search or match call). */
static PyObject *
call_at(PyObject *regex, PyObject *low, Py_ssize_t at)
{
    PyObject *at_obj = PyLong_FromSsize_t(at);
    if (at_obj == NULL)
        return NULL;
    PyObject *call_args[2] = {low, at_obj};
    PyObject *m = PyObject_Vectorcall(regex, call_args, 2, NULL);
    Py_DECREF(at_obj);
    return m;
}

/* The match `label_scan` hands back: `m`, or where it read the label's value itself (`m` NULL)
 * the full regex's match at `ms` (`full_match`), which is the one `full_search` finds (ends at
 * `me`; else, never expected, what `full_search` finds from `ms`). */
static PyObject *
handed(PyObject *m, PyObject *full_search, PyObject *full_match, PyObject *low, Py_ssize_t ms,
       Py_ssize_t me)
{
    if (m != NULL)
        return m;
    m = call_at(full_match, low, ms);
    if (m == NULL || m == Py_None) {
        Py_XDECREF(m);
        return m == NULL ? NULL : call_at(full_search, low, ms);
    }
    Py_ssize_t a, b;
    if (match_span(m, NULL, &a, &b) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (a == ms && b == me)
        return m;
    Py_DECREF(m);
    return call_at(full_search, low, ms);
}

/* The last label verdict `label_scan` looked up (the owner word from `j`, the label `ms:me`)
 * and what `label_verdict` gave (as the owner word's length, or -1, -2): in one call the dict is
 * not changed, so a run of one label (a text of distinct values after it) builds and hashes its
 * key once. */
typedef struct {
    Py_ssize_t j, ms, me, v;
    int valid;
} label_cache;

/* `label_verdict`, the verdict of the label read last kept in `cache`. Needs 0 <= ms <= me <=
 * len(low). */
static Py_ssize_t
label_verdict_cached(label_cache *cache, PyObject *labels, PyObject *iobj, long i, PyObject *low,
                     Py_ssize_t ms, Py_ssize_t me, int compute, Py_ssize_t memo_max)
{
    int kind = PyUnicode_KIND(low);
    const char *data = PyUnicode_DATA(low);
    Py_ssize_t j = ms, lo = ms > 40 ? ms - 40 : 0;
    while (j > lo) {
        Py_UCS4 c = PyUnicode_READ(kind, data, j - 1);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            break;
        j--;
    }
    if (cache->valid && ms - j == cache->ms - cache->j && me - ms == cache->me - cache->ms &&
        memcmp(data + j * kind, data + cache->j * kind, (size_t)((me - j) * kind)) == 0)
        return cache->v >= 0 ? ms - cache->v : cache->v;
    Py_ssize_t k = label_verdict(labels, iobj, i, low, ms, me, compute, memo_max);
    if (k >= -1) { /* (a verdict: not "none kept", which `compute` may change) */
        cache->j = j, cache->ms = ms, cache->me = me, cache->v = k >= 0 ? ms - k : k;
        cache->valid = 1;
    }
    return k;
}

/* `label_scan(search, text, low, pos, stem, reach, memo, memo_quoted, few, min_entropy, pw,
 * memo_max)`: the next match of `search(low, pos)` that `secrets._assignments` must examine, or
 * None at the end. The matches it passes over are those whose step there is a `continue` that
 * needs nothing but the value's verdict: no value (lastindex None), or an unquoted or quoted
 * value the checks refuse (`value_ok` False, kept in its memo as the Python keeps it), with no
 * stem of this regex from the label's end to past the value, and not `B"…"` with no prefix in
 * `text`; such a value is resumed after (`vend`), or past the label's start if it is an unquoted
 * `id:` head. Anything else (a value found, an AWS-shaped or `id:secret` value, a verdict the C
 * cannot give, a stem inside) is returned as the match, for the Python to examine in full: it
 * reaches the same answers (its memo holds what this one stored).
 *
 * With four more arguments, `out, span_type, detector, (kind, priority, aws_type, aws_priority,
 * dense)`, it also reports, appending their Spans to `out` (the Python yields them, in order,
 * before the match returned): an AWS-shaped value whose label verdict is kept, the label being
 * one and `aws` in the 40 characters before its owner word, that is random-looking and holds no
 * `EXAMPLE` (the Python's `_AWS_SECRET_FOUND`; any other such value is handed back), a kept
 * label verdict of no label (passed over, as the Python's `continue`); and if `dense` (the
 * kind's findings are DENSE_FINDINGS: the Python's dense branch) every value but an AWS-shaped
 * one after an `aws` context (handed back), unchecked, the scan resumed in its tail.
 *
 * With four more (22 arguments: `_ASSIGN[i].match`, `_assignments`'s `held` and `tally`, and
 * REFUSED_LABELS; given where secrets.py's label rules are `LABEL_RULES`), it also passes over
 * (a distinct owner word, a value glued to the next label, paid ~1 us of Python a label): a label
 * whose verdict is not kept (found here, `owned_label`, and kept as the Python keeps it); an
 * unquoted value with a `:` that is no `id:secret` (`_ID_SECRET`); and a refused value holding
 * a stem of this regex with an operator's `=` or `:` (or quoted), where the Python's step ends
 * in a `continue` (no label at the stem inside, or one whose value ends past this one) or finds
 * in `held` that the value holds no finding (`_labels_in_refused`'s kept answer), resumed where
 * the Python resumes.
 *
 * With a last `full` (19 or 23 arguments: the full label regex's `search` and `match`, `search`
 * being its head's, the label and operator alone, and the full regex that head then
 * `_LONG_OR_ID_VALUE` and `(?=_VALUE|)`), it reads each value itself: the head matches at one
 * place only (its parts are possessive, atomic or exclusive alternatives), so the full regex
 * matches there where the value's lookaheads hold (`long_or_id_value`), with `_VALUE`'s groups
 * (`value_at`); where they do not, the full regex searches on from past the head's start. What
 * it hands back is the full regex's match. */
static PyObject *
py_label_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static PyObject *lastindex_str, *lower_str, *end_str;
    if (nargs != 14 && nargs != 18 && nargs != 19 && nargs != 22 && nargs != 23) {
        PyErr_SetString(PyExc_TypeError,
                        "label_scan(search, text, low, pos, stem, reach, memo, memo_quoted, "
                        "few, min_entropy, pw, memo_max, i, labels[, out, span_type, detector, "
                        "(kind, priority, aws_type, aws_priority, dense)[, match, held, tally, "
                        "refused_labels][, full]])");
        return NULL;
    }
    /* `full` (the last of 19 or 23): (search, match) of the full label regex, `search` being
     * its head's. */
    PyObject *full_search = NULL, *full_match = NULL;
    if ((nargs == 19 || nargs == 23) && args[nargs - 1] != Py_None) {
        PyObject *t = args[nargs - 1];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 ||
            !PyCallable_Check(PyTuple_GET_ITEM(t, 0)) ||
            !PyCallable_Check(PyTuple_GET_ITEM(t, 1))) {
            PyErr_SetString(PyExc_TypeError, "label_scan: full must be (search, match)");
            return NULL;
        }
        full_search = PyTuple_GET_ITEM(t, 0), full_match = PyTuple_GET_ITEM(t, 1);
    }
    /* What it reports itself, if asked (18 arguments). */
    PyObject *out = NULL, *span_type = NULL, *detector = NULL, *kind_type = NULL;
    PyObject *kind_prio = NULL, *aws_type = NULL, *aws_prio = NULL;
    int dense = 0;
    if (nargs >= 18) {
        out = args[14], span_type = args[15], detector = args[16];
        PyObject *t = args[17];
        if (!PyList_Check(out) || !PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) {
            PyErr_SetString(PyExc_TypeError, "label_scan: out must be a list, the types a "
                                             "tuple of 5");
            return NULL;
        }
        if (!span_type_ok(span_type, "label_scan"))
            return NULL;
        kind_type = PyTuple_GET_ITEM(t, 0), kind_prio = PyTuple_GET_ITEM(t, 1);
        aws_type = PyTuple_GET_ITEM(t, 2), aws_prio = PyTuple_GET_ITEM(t, 3);
        if ((dense = PyObject_IsTrue(PyTuple_GET_ITEM(t, 4))) < 0)
            return NULL;
    }
    if (lastindex_str == NULL && (lastindex_str = PyUnicode_InternFromString("lastindex")) == NULL)
        return NULL;
    if (lower_str == NULL && (lower_str = PyUnicode_InternFromString("lower")) == NULL)
        return NULL;
    if (end_str == NULL && (end_str = PyUnicode_InternFromString("end")) == NULL)
        return NULL;
    /* What it passes over besides, if asked (22 arguments). */
    int ext = nargs >= 22;
    PyObject *match = NULL, *held = NULL, *tally = NULL;
    Py_ssize_t refused_labels = 0;
    long li = -1;
    if (ext) {
        match = args[18], held = args[19], tally = args[20];
        if (!PyDict_Check(held) || !PyList_Check(tally)) {
            PyErr_SetString(PyExc_TypeError, "label_scan: held must be a dict, tally a list");
            return NULL;
        }
        refused_labels = PyLong_AsSsize_t(args[21]);
        if (refused_labels == -1 && PyErr_Occurred())
            return NULL;
        li = PyLong_AsLong(args[12]);
        if (li == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *search = args[0], *text = args[1], *low = args[2], *stem = args[4];
    PyObject *memos[2] = {args[6], args[7]};
    if (ready(text) < 0 || ready(low) < 0 || ready(stem) < 0)
        return NULL;
    PyObject *labels = args[13];
    if (!PyDict_Check(memos[0]) || !PyDict_Check(memos[1]) || !PyDict_Check(labels)) {
        PyErr_SetString(PyExc_TypeError, "label_scan: the memos and labels must be dicts");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[3]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t reach = PyLong_AsSsize_t(args[5]);
    if (reach == -1 && PyErr_Occurred())
        return NULL;
    int pw = PyObject_IsTrue(args[10]);
    if (pw < 0)
        return NULL;
    Py_ssize_t memo_max = PyLong_AsSsize_t(args[11]);
    if (memo_max == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t tn = PyUnicode_GET_LENGTH(text);
    int tkind = PyUnicode_KIND(text);
    const void *tdata = PyUnicode_DATA(text);
    Py_ssize_t stem_len = PyUnicode_GET_LENGTH(stem);
    label_cache cache = {0, 0, 0, 0, 0};
    for (;;) {
        PyObject *m = call_at(search, low, pos);
        if (m == NULL || m == Py_None)
            return m;
        Py_ssize_t ms, me, gs = 0, ge = 0;
        long gi = 0;
        if (match_span(m, NULL, &ms, &me) < 0)
            goto error;
        if (full_search != NULL) {
            /* The label regex's head matched: its value read here where it has one the full
             * regex takes (`_LONG_OR_ID_VALUE`, then `_VALUE`'s groups), its match made only if
             * handed back (the value's lookaheads in the regex cost ~1 us a label); else the
             * full regex searched from past its start (a flood of labels with no value: one
             * search). */
            int odd = !(ms >= pos && me >= ms && me <= tn && me <= PyUnicode_GET_LENGTH(low));
            if (!odd && long_or_id_value(low, me)) {
                Py_XDECREF(m);
                m = NULL;
                gi = value_at(low, me, &gs, &ge);
                if (gi == 0) {
                    pos = me;
                    continue; /* nothing to examine */
                }
            }
            else {
                Py_XDECREF(m);
                m = call_at(full_search, low, odd ? pos : ms + 1);
                if (m == NULL || m == Py_None)
                    return m;
                if (match_span(m, NULL, &ms, &me) < 0)
                    goto error;
            }
        }
        if (m != NULL) {
            PyObject *g = PyObject_GetAttr(m, lastindex_str);
            if (g == NULL)
                goto error;
            if (g == Py_None) {
                Py_DECREF(g);
                Py_XDECREF(m);
                pos = me;
                continue; /* nothing to examine */
            }
            gi = PyLong_AsLong(g);
            int r = gi == -1 && PyErr_Occurred() ? -1 : match_span(m, g, &gs, &ge);
            Py_DECREF(g);
            if (r < 0)
                goto error;
        }
        if (gs < 0 || ge < gs || ge > tn || ms < 0 || me < ms || me > tn ||
            me > PyUnicode_GET_LENGTH(low))
            return handed(m, full_search, full_match, low, ms, me); /* (the Python decides) */
        if (gs - me == 2) {
            Py_UCS4 c = me < tn ? PyUnicode_READ(tkind, tdata, me) : 0;
            if (!(c == 'b' || c == 'r' || c == 'f' || c == 'u' || c == '@'))
                /* `B"…"`: the value is read from `text` */
                return handed(m, full_search, full_match, low, ms, me);
        }
        int quoted = gi < 4;
        Py_ssize_t vend = quoted ? ge + 1 : ge;
        if (dense) {
            /* The Python's dense branch: the value, without its trailing dots, unchecked (but
             * an AWS secret after an `aws` context, judged in full: handed back). */
            Py_ssize_t sn = ge - gs;
            while (sn > 0 && PyUnicode_READ(tkind, tdata, gs + sn - 1) == '.')
                sn--;
            if (!pw && aws_shaped(tkind, tdata, gs, sn) &&
                has_aws(low, ms > LABEL_CONTEXT ? ms - LABEL_CONTEXT : 0, ms))
                return handed(m, full_search, full_match, low, ms, me);
            if (add_span(out, span_type, gs, gs + sn, detector, kind_type, kind_prio) < 0)
                goto error;
            /* Resumed in this value's tail (`_LABEL_TAIL`): a label there can have its value
             * after it. */
            pos = vend - LABEL_TAIL > me ? vend - LABEL_TAIL : me;
            Py_XDECREF(m);
            continue;
        }
        Py_ssize_t p = PyUnicode_Find(low, stem, me, vend + reach, 1);
        if (p == -2)
            goto error;
        /* A stem inside the value that may start a label of this regex: `0 <= p <= ge -
         * len(stem)` and the value quoted or holding an operator's `=` or `:`. */
        int inside = 0;
        if (p >= 0 && p <= ge - stem_len) {
            inside = quoted;
            for (Py_ssize_t i = gs; i < ge && !inside; i++) {
                Py_UCS4 c = PyUnicode_READ(tkind, tdata, i);
                inside = c == '=' || c == ':';
            }
            if (inside && !ext) /* examined in full by the Python */
                return handed(m, full_search, full_match, low, ms, me);
        }
        Py_ssize_t k = -2;
        if (p >= 0 && !ext) {
            /* (Without `ext`, a label whose verdict is not kept is handed back at once.) */
            k = label_verdict_cached(&cache, labels, args[12], li, low, ms, me, 0, memo_max);
            if (k == -3)
                goto error;
            if (k == -2)
                return handed(m, full_search, full_match, low, ms, me);
        }
        if (out != NULL && !pw) {
            Py_ssize_t sn = ge - gs;
            while (sn > 0 && PyUnicode_READ(tkind, tdata, gs + sn - 1) == '.')
                sn--;
            if (aws_shaped(tkind, tdata, gs, sn)) {
                /* An AWS-shaped value (no verdict of one is kept in the memos: judged on its
                 * label's context): the Python's `_judged` of it where its label's verdict is
                 * kept (or, with `ext`, found): no label (passed over, the scan going on inside
                 * its value), or a label and an `aws` context before its owner word, the value
                 * random-looking (else handed back: refused, it may hold labels). */
                if (k == -2)
                    k = label_verdict_cached(&cache, labels, args[12], li, low, ms, me, ext,
                                             memo_max);
                if (k == -3)
                    goto error;
                if (k == -2)
                    return handed(m, full_search, full_match, low, ms, me);
                if (k == -1) {
                    pos = me;
                    Py_XDECREF(m);
                    continue;
                }
                if (!has_aws(low, k > 40 ? k - 40 : 0, ms) ||
                    has_example(tkind, tdata, gs, gs + 40))
                    return handed(m, full_search, full_match, low, ms, me);
                PyObject *sk = PyUnicode_Substring(text, gs, gs + 40); /* `stripped` */
                if (sk == NULL)
                    goto error;
                Py_ssize_t distinct;
                int ok = two_classes(sk) ? entropy_verdict(sk, 4.0, &distinct) : 0;
                Py_DECREF(sk);
                if (ok == -2)
                    goto error;
                if (ok != 1) /* refused, or at the bar: the Python's */
                    return handed(m, full_search, full_match, low, ms, me);
                if (add_span(out, span_type, gs, gs + 40, detector, aws_type, aws_prio) < 0)
                    goto error;
                pos = vend;
                Py_XDECREF(m);
                continue;
            }
        }
        PyObject *value = PyUnicode_Substring(text, gs, ge);
        if (value == NULL)
            goto error;
        PyObject *memo = memos[quoted];
        PyObject *found = PyDict_GetItemWithError(memo, value); /* borrowed */
        if (found == NULL) {
            if (PyErr_Occurred())
                goto error_value;
            /* `stripped = value.rstrip(".")` */
            Py_ssize_t sn = ge - gs;
            int vkind = PyUnicode_KIND(value);
            const void *vdata = PyUnicode_DATA(value);
            while (sn > 0 && PyUnicode_READ(vkind, vdata, sn - 1) == '.')
                sn--;
            if (!pw && sn == 40) {
                int aws = 1;
                for (Py_ssize_t i = 0; i < 40 && aws; i++) {
                    Py_UCS4 c = PyUnicode_READ(vkind, vdata, i);
                    aws = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '/' || c == '+';
                }
                if (aws)
                    goto python; /* judged on its label's context (reported above) */
            }
            if (!quoted) {
                /* An unquoted value with a `:` may be an `id:secret` (`_value_ok` judges its
                 * secret): with `ext`, only one that is (`_ID_SECRET`) is the Python's. */
                int colon = 0;
                for (Py_ssize_t i = 0; i < sn && !colon; i++)
                    colon = PyUnicode_READ(vkind, vdata, i) == ':';
                if (colon && (!ext || id_secret(value, sn)))
                    goto python;
            }
            PyObject *stripped = PyUnicode_Substring(value, 0, sn);
            if (stripped == NULL)
                goto error_value;
            PyObject *slow = PyObject_CallMethodNoArgs(stripped, lower_str);
            if (slow == NULL) {
                Py_DECREF(stripped);
                goto error_value;
            }
            PyObject *ok_args[5] = {stripped, slow, quoted ? Py_True : Py_False, args[8], args[9]};
            PyObject *ok = py_value_ok(self, ok_args, 5);
            Py_DECREF(stripped);
            Py_DECREF(slow);
            if (ok == NULL)
                goto error_value;
            Py_DECREF(ok); /* (a singleton) */
            if (ok != Py_False)
                goto python; /* a finding, or the Python's checks decide */
            if (PyDict_GET_SIZE(memo) < memo_max && PyDict_SetItem(memo, value, Py_None) < 0)
                goto error_value;
            found = Py_None;
        }
        if (found != Py_None)
            goto python;
        if (!quoted && id_head(value)) {
            pos = ms + 1; /* an `id:` head refused: no value */
            goto next;
        }
        if (p < 0) {
            pos = vend; /* refused, no stem inside: resumed after it */
            goto next;
        }
        if (ext) {
            k = label_verdict_cached(&cache, labels, args[12], li, low, ms, me, 1, memo_max);
            if (k == -3)
                goto error_value;
        }
        if (k < 0) {
            pos = me; /* a stem inside, no label: the scan goes on inside its value */
            goto next;
        }
        pos = vend; /* a stem inside a label's value */
        if (!inside)
            goto next; /* (that holds no label of its regex) */
        {
            /* `_assignments`'s step at a refused value holding a stem of its regex: the label
             * regex at that stem (`first`), or another stem inside; REFUSED_LABELS; a label whose
             * value ends past this one; `_labels_in_refused`'s kept answer. */
            PyObject *pa = PyLong_FromSsize_t(p);
            PyObject *pb = PyLong_FromSsize_t(vend + REST_READS);
            if (pa == NULL || pb == NULL) {
                Py_XDECREF(pa);
                Py_XDECREF(pb);
                goto error_value;
            }
            PyObject *margs[3] = {low, pa, pb};
            PyObject *first = PyObject_Vectorcall(match, margs, 3, NULL);
            Py_DECREF(pa);
            Py_DECREF(pb);
            if (first == NULL)
                goto error_value;
            if (first == Py_None) {
                Py_DECREF(first);
                Py_ssize_t q = PyUnicode_Find(low, stem, p + 1, ge, 1);
                if (q == -2)
                    goto error_value;
                if (q < 0)
                    goto next; /* no label inside */
                first = NULL;
            }
            PyObject *t0 = PyList_GET_SIZE(tally) > 0 ? PyList_GET_ITEM(tally, 0) : NULL;
            Py_ssize_t t = t0 != NULL && PyLong_CheckExact(t0) ? PyLong_AsSsize_t(t0) : -1;
            if (t == -1 && PyErr_Occurred()) {
                Py_XDECREF(first);
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    goto error_value;
                PyErr_Clear();
                goto python; /* (a tally past any Py_ssize_t: the Python compares it) */
            }
            if (t < 0 || t >= refused_labels) {
                Py_XDECREF(first);
                goto python; /* reported whole, or a tally the C does not read */
            }
            if (first != NULL) {
                PyObject *e = PyObject_CallMethodNoArgs(first, end_str);
                Py_DECREF(first);
                if (e == NULL)
                    goto error_value;
                Py_ssize_t fe = PyLong_AsSsize_t(e);
                Py_DECREF(e);
                if (fe == -1 && PyErr_Occurred())
                    goto error_value;
                if (fe > ge)
                    goto next; /* its first stem is no label inside it: the value's own name */
            }
            /* `_labels_in_refused`'s key: (i, ms - w, low[w:stop], text[me:stop]). */
            Py_ssize_t w = ms > LABEL_CONTEXT ? ms - LABEL_CONTEXT : 0;
            Py_ssize_t stop = vend + REST_READS;
            PyObject *off = PyLong_FromSsize_t(ms - w);
            PyObject *win = PyUnicode_Substring(low, w, stop);
            PyObject *after = PyUnicode_Substring(text, me, stop);
            PyObject *key = off && win && after ? PyTuple_Pack(4, args[12], off, win, after)
                                                : NULL;
            Py_XDECREF(off);
            Py_XDECREF(win);
            Py_XDECREF(after);
            if (key == NULL)
                goto error_value;
            PyObject *got = PyDict_GetItemWithError(held, key); /* borrowed */
            Py_DECREF(key);
            if (got == NULL) {
                if (PyErr_Occurred())
                    goto error_value;
                goto python; /* not kept: the Python finds it */
            }
            if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 2 ||
                !PyTuple_Check(PyTuple_GET_ITEM(got, 0)) ||
                PyTuple_GET_SIZE(PyTuple_GET_ITEM(got, 0)) != 0 ||
                !PyLong_CheckExact(PyTuple_GET_ITEM(got, 1)))
                goto python; /* findings to report (or not a kept answer) */
            Py_ssize_t resume = PyLong_AsSsize_t(PyTuple_GET_ITEM(got, 1));
            if (resume == -1 && PyErr_Occurred())
                goto error_value;
            if (resume > PY_SSIZE_T_MAX - ms || resume + ms < 0)
                goto python;
            pos = resume + ms; /* it holds nothing to report */
        }
    next:
        Py_DECREF(value);
        Py_XDECREF(m);
        continue;
    python:
        Py_DECREF(value);
        return handed(m, full_search, full_match, low, ms, me);
    error_value:
        Py_DECREF(value);
    error:
        Py_XDECREF(m);
        return NULL;
    }
}

/* `owned_label(low, i, ms, me, owner)`: `secrets._owned_label` (for the tests comparing the two;
 * `owner` is the run of `_KEY_CHARS` before `ms`, up to 40, as its callers give it). */
static PyObject *
py_owned_label(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "owned_label(low, i, ms, me, owner)");
        return NULL;
    }
    PyObject *low = args[0], *owner = args[4];
    if (ready(low) < 0 || ready(owner) < 0)
        return NULL;
    long i = PyLong_AsLong(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t ms = PyLong_AsSsize_t(args[2]);
    if (ms == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t me = PyLong_AsSsize_t(args[3]);
    if (me == -1 && PyErr_Occurred())
        return NULL;
    if (!(0 <= ms && ms < me && me <= PyUnicode_GET_LENGTH(low))) {
        PyErr_SetString(PyExc_ValueError, "owned_label: needs 0 <= ms < me <= len(low)");
        return NULL;
    }
    Py_ssize_t on = PyUnicode_GET_LENGTH(owner);
    int okind = PyUnicode_KIND(owner);
    const void *odata = PyUnicode_DATA(owner);
    int lkind = PyUnicode_KIND(low);
    const void *ldata = PyUnicode_DATA(low);
    char ob[40];
    for (Py_ssize_t x = 0; x < on; x++) {
        Py_UCS4 c = PyUnicode_READ(okind, odata, x);
        if (x >= 40 || on > ms || !key_char(c) || PyUnicode_READ(lkind, ldata, ms - on + x) != c) {
            PyErr_SetString(PyExc_ValueError, "owned_label: the owner word is up to 40 of "
                                              "secrets._KEY_CHARS, the text's just before ms");
            return NULL;
        }
        ob[x] = (char)c;
    }
    Py_ssize_t k = owned_label(lkind, ldata, i, ms, me, ob, on);
    return k == -3 ? NULL : PyLong_FromSsize_t(k);
}

/* ---- end of the label pass block ---- */

static PyMethodDef methods[] = {
    {"bearer_spans", (PyCFunction)(void (*)(void))py_bearer_spans, METH_FASTCALL,
     "bearer_spans(text, low, span_type, detector, types, ok) -> list | None: secrets._bearer."},
    {"aws_spans", (PyCFunction)(void (*)(void))py_aws_spans, METH_FASTCALL,
     "aws_spans(text, span_type, detector, types, random_looking) -> list: secrets._aws(text)."},
    {"cut_rest", (PyCFunction)(void (*)(void))py_cut_rest, METH_FASTCALL,
     "cut_rest(text, low, spans, kept, labelled, span_type, detector, rest_of_value, value_ok, "
     "limits) -> list | None: secrets.rest_of_values of what engine._cut_labelled_values cuts."},
    {"ascending_run", (PyCFunction)(void (*)(void))py_ascending_run, METH_FASTCALL,
     "ascending_run(value, n) -> bool: n (>= 2) consecutive code points in a row."},
    {"two_char_classes", py_two_char_classes, METH_O,
     "two_char_classes(value) -> bool: char_classes(value) >= 2."},
    {"entropy_at_least", (PyCFunction)(void (*)(void))py_entropy_at_least, METH_FASTCALL,
     "entropy_at_least(value, min_entropy) -> bool | None (None: ask entropy())."},
    {"random_looking", (PyCFunction)(void (*)(void))py_random_looking, METH_FASTCALL,
     "random_looking(value, min_entropy) -> bool | None (None: ask the Python)."},
    {"value_ok", (PyCFunction)(void (*)(void))py_value_ok, METH_FASTCALL,
     "value_ok(value, low, quoted, few, min_entropy) -> bool | None (None: ask the Python)."},
    {"card_ok", py_card_ok, METH_O,
     "card_ok(value) -> bool | None: card_brand_ok and luhn_ok of ASCII digits (None: ask)."},
    {"pii_emails", (PyCFunction)(void (*)(void))py_pii_emails, METH_FASTCALL,
     "pii_emails(text, Span, detector, type, priority, complete, dense) -> list of Spans."},
    {"settle", (PyCFunction)(void (*)(void))py_settle, METH_FASTCALL,
     "settle(spans, resolve_group) -> the kept spans (engine._resolve_overlaps, sorted spans)."},
    {"pii_phones", (PyCFunction)(void (*)(void))py_pii_phones, METH_FASTCALL,
     "pii_phones(text, Span, detector, type, priority, complete) -> E.164 and (NNN) phones."},
    {"pii_intl", (PyCFunction)(void (*)(void))py_pii_intl, METH_FASTCALL,
     "pii_intl(text, Span, detector, type, priority, complete) -> 00 phones."},
    {"pii_numeric", (PyCFunction)(void (*)(void))py_pii_numeric, METH_FASTCALL,
     "pii_numeric(text, Span, detector, types, priority, complete, dense, not_global_v4, "
     "iban_lengths, ssn_label) -> the spans of pii._numeric_py."},
    {"in_code_groups", (PyCFunction)(void (*)(void))py_in_code_groups, METH_FASTCALL,
     "in_code_groups(text, s) -> bool: pii._in_code_groups."},
#ifndef _WIN32
    {"pii_ipv6", (PyCFunction)(void (*)(void))py_pii_ipv6, METH_FASTCALL,
     "pii_ipv6(text, Span, detector, type, priority, complete, not_global, mapped_global) -> "
     "the global IPv6 addresses."},
#endif
    {"label_scan", (PyCFunction)(void (*)(void))py_label_scan, METH_FASTCALL,
     "label_scan(search, text, low, pos, stem, reach, memo, memo_quoted, few, min_entropy, pw, "
     "memo_max, i, labels[, out, span_type, detector, types[, match, held, tally, "
     "refused_labels]]) -> the next label match secrets._assignments must examine, or None."},
    {"owned_label", (PyCFunction)(void (*)(void))py_owned_label, METH_FASTCALL,
     "owned_label(low, i, ms, me, owner) -> int: secrets._owned_label."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_checks_c", "C versions of the pure guardrail checks.", -1, methods,
    NULL, NULL, NULL, NULL,
};

/* A tuple of the NULL-ended `items`. */
static PyObject *
strings(const char *const *items)
{
    Py_ssize_t n = 0;
    while (items[n])
        n++;
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++) {
        PyObject *o = PyUnicode_FromString(items[i]);
        if (o == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

/* The module's LABEL_RULES (see `label_stems`). */
static int
add_label_rules(PyObject *m)
{
    const char *const *lists[] = {label_stems, key_owners, not_secret_owners, not_secret_suffixes,
                                  continuations, label_ok_stems};
    PyObject *rules = PyTuple_New(10);
    if (rules == NULL)
        return -1;
    for (int j = 0; j < 6; j++) {
        PyObject *t = strings(lists[j]);
        if (t == NULL) {
            Py_DECREF(rules);
            return -1;
        }
        PyTuple_SET_ITEM(rules, j, t);
    }
    PyObject *more[4] = {PyUnicode_FromString(ID_SECRET), PyUnicode_FromString(KEY_CHARS),
                         PyLong_FromLong(REST_READS), PyLong_FromLong(LABEL_CONTEXT)};
    int bad = 0;
    for (int j = 0; j < 4; j++) {
        if (more[j] == NULL)
            bad = 1;
        else
            PyTuple_SET_ITEM(rules, 6 + j, more[j]);
    }
    if (bad) {
        Py_DECREF(rules); /* (its NULL items are skipped) */
        return -1;
    }
    int r = PyModule_AddObjectRef(m, "LABEL_RULES", rules);
    Py_DECREF(rules);
    return r;
}

PyMODINIT_FUNC
PyInit__checks_c(void)
{
    for (int c = 1; c <= XLOGX_MAX; c++)
        xlogx[c] = (double)c * log2((double)c);
    xlogx[0] = 0.0;
    for (const char *const *w = placeholder_words; *w; w++) {
        unsigned char c = (unsigned char)(*w)[0] & 127;
        if (word_head[c] >= WORDS_PER_HEAD) {
            PyErr_SetString(PyExc_ImportError, "_checks_c: too many words of one first letter");
            return NULL;
        }
        words_of[c][(int)word_head[c]++] = (unsigned char)(w - placeholder_words);
    }
    if (example_str == NULL) {
        example_str = PyUnicode_InternFromString("EXAMPLE");
        if (example_str == NULL)
            return NULL;
    }
    if (s_password == NULL) {
        s_password = PyUnicode_InternFromString("password");
        s_generic_secret = PyUnicode_InternFromString("generic_secret");
        if (s_password == NULL || s_generic_secret == NULL)
            return NULL;
    }
    if (class_dealloc == NULL) {
        PyObject *probe = PyErr_NewException("_checks_c._probe", NULL, NULL);
        if (probe == NULL)
            return NULL;
        class_dealloc = ((PyTypeObject *)probe)->tp_dealloc;
        Py_DECREF(probe);
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *words = strings(placeholder_words), *values = strings(placeholder_values);
    PyObject *margin = PyFloat_FromDouble(ENTROPY_MARGIN);
    PyObject *reports = Py_BuildValue("(ii)", LABEL_CONTEXT, LABEL_TAIL);
    int bad = words == NULL || values == NULL || margin == NULL || reports == NULL;
    if (bad || PyModule_AddIntConstant(m, "XLOGX_MAX", XLOGX_MAX) < 0 ||
        PyModule_AddObjectRef(m, "ENTROPY_MARGIN", margin) < 0 ||
        PyModule_AddObjectRef(m, "PLACEHOLDER_WORDS", words) < 0 ||
        PyModule_AddObjectRef(m, "PLACEHOLDER_VALUES", values) < 0 ||
        PyModule_AddStringConstant(m, "CODE_REF", CODE_REF) < 0 ||
        PyModule_AddStringConstant(m, "ANY_STEM", ANY_STEM) < 0 ||
        PyModule_AddStringConstant(m, "PARAM", PARAM) < 0 ||
        PyModule_AddStringConstant(m, "AWS", AWS) < 0 ||
        PyModule_AddStringConstant(m, "BEARER", BEARER) < 0 ||
        PyModule_AddStringConstant(m, "BEARER_VALUE", BEARER_VALUE) < 0 ||
        PyModule_AddStringConstant(m, "NUMERIC", NUMERIC) < 0 ||
        PyModule_AddStringConstant(m, "GROUPS_BEFORE", GROUPS_BEFORE) < 0 ||
        PyModule_AddStringConstant(m, "MIXED_GROUP", MIXED_GROUP) < 0 ||
        PyModule_AddStringConstant(m, "NATL_HEAD", NATL_HEAD) < 0 ||
        PyModule_AddStringConstant(m, "CARD_4X4", CARD_4X4) < 0 ||
        PyModule_AddObjectRef(m, "LABEL_SCAN_REPORTS", reports) < 0 ||
        PyModule_AddStringConstant(m, "LONG_OR_ID_VALUE", LONG_OR_ID_VALUE) < 0 ||
        PyModule_AddStringConstant(m, "VALUE", VALUE_RE) < 0 || add_label_rules(m) < 0) {
        Py_XDECREF(reports);
        Py_XDECREF(words);
        Py_XDECREF(values);
        Py_XDECREF(margin);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(reports);
    Py_DECREF(words);
    Py_DECREF(values);
    Py_DECREF(margin);
    return m;
}
