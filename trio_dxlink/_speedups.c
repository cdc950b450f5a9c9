/*
 * trio_dxlink._speedups: the per-event steps, in C. Each part stays only while the end-to-end
 * benchmark shows its gain (benchmarks/README.md records the figures).
 *
 * Optional. trio_dxlink works the same without it (pure Python, a few times slower per event);
 * see trio_dxlink/_accel.py, which picks the implementation, and tests/test_speedups.py, which
 * checks that both give identical results.
 *
 * RowDecoder   turns one COMPACT value array (rows laid out back to back) into frozen event
 *              instances, storing each value straight into the instance's slot. It only decodes
 *              values that are valid for their kind; on anything else (a ragged array, a value of
 *              the wrong kind) it returns None, and the caller re-runs the pure-Python decoder,
 *              which raises the detailed error. So the two can never disagree on what is valid.
 *
 * Cursor       the iterator behind `async for event in subscription`: while the current batch
 *              has events it hands them out without creating a coroutine per event; every 256th
 *              event, and whenever the batch is used up, it calls back into Python (which checks
 *              for cancellation, or waits for the next batch).
 *
 * route        the dispatch step for one handle of an event type: records the latest event of
 *              each routed symbol in its route and keeps the routed events (see _router.py).
 *
 * use_slot_dealloc  gives an event class a deallocator that clears its object slots directly,
 *              instead of CPython's generic one for Python classes.
 *
 * fan_out      the dispatch step for several handles of one event type: splits a decoded batch
 *              into each handle's share, in order, and records the latest event of each symbol.
 *
 * join_text, write_text (in _speedups_text.c)  the recorder's batch of line pieces (str and
 *              bytes) joined, or written with writev, without holding the GIL (see _record.py).
 *
 * Memory safety: a RowDecoder never takes a raw offset from Python. It is given slot
 * descriptors, checks that each is an object slot of a base of the class it instantiates, and
 * reads the offset from the descriptor itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

/* Bumped whenever what Python expects of this module changes; trio_dxlink/_accel.py refuses a
 * module built from other sources (say, a stale build left in a source tree). */
#define API_VERSION 5

enum { KIND_SYMBOL = 0, KIND_DOUBLE = 1, KIND_LONG = 2, KIND_STRING = 3, KIND_BOOL = 4 };

static PyObject *float_nan;     /* the float objects for "NaN", "Infinity", "-Infinity" */
static PyObject *float_inf;
static PyObject *float_neg_inf;

/* ------------------------------------------------------------------------------------------ */
/* value conversion: a new reference, or NULL (no error set: not valid, so fall back;          */
/* error set: a real failure such as MemoryError)                                              */

static PyObject *
convert(PyObject *v, int kind)
{
    switch (kind) {
    case KIND_DOUBLE:
        if (PyFloat_CheckExact(v)) {
            Py_INCREF(v);
            return v;
        }
        if (PyLong_CheckExact(v)) {
            double d = PyLong_AsDouble(v);
            if (d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear(); /* too large: the Python path reports it */
                return NULL;
            }
            return PyFloat_FromDouble(d);
        }
        if (PyUnicode_CheckExact(v)) {
            PyObject *special = NULL;
            if (PyUnicode_CompareWithASCIIString(v, "NaN") == 0) {
                special = float_nan;
            }
            else if (PyUnicode_CompareWithASCIIString(v, "Infinity") == 0) {
                special = float_inf;
            }
            else if (PyUnicode_CompareWithASCIIString(v, "-Infinity") == 0) {
                special = float_neg_inf;
            }
            Py_XINCREF(special);
            return special;
        }
        if (v == Py_None) {
            Py_INCREF(float_nan);
            return float_nan;
        }
        return NULL;
    case KIND_LONG:
        if (PyLong_CheckExact(v)) {
            Py_INCREF(v);
            return v;
        }
        if (PyFloat_CheckExact(v)) {
            double d = PyFloat_AS_DOUBLE(v);
            if (isfinite(d) && d == floor(d)) {
                return PyLong_FromDouble(d);
            }
        }
        return NULL;
    case KIND_STRING:
        if (PyUnicode_CheckExact(v) || v == Py_None) {
            Py_INCREF(v);
            return v;
        }
        return NULL;
    case KIND_BOOL:
        if (PyBool_Check(v)) {
            Py_INCREF(v);
            return v;
        }
        return NULL;
    case KIND_SYMBOL:
        if (PyUnicode_CheckExact(v)) {
            Py_INCREF(v);
            return v;
        }
        return NULL;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* RowDecoder                                                                                 */

typedef struct {
    Py_ssize_t column; /* index within a row */
    Py_ssize_t offset; /* the slot's offset in the instance */
    int kind;
} Column;

typedef struct {
    Py_ssize_t offset;
    PyObject *value; /* owned */
} Default;

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls; /* owned */
    Py_ssize_t width;
    Py_ssize_t ncolumns;
    Column *columns;
    Py_ssize_t ndefaults;
    Default *defaults;
    int untrack; /* take instances off the garbage collector's lists (see below) */
    vectorcallfunc vectorcall;
} RowDecoder;

static int
is_atom(PyObject *v)
{
    return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v) ||
           PyUnicode_CheckExact(v);
}

/* The offset of an object slot of `cls` (or of one of its bases), from its member descriptor. */
static Py_ssize_t
slot_offset(PyTypeObject *cls, PyObject *descr)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a slot descriptor, got %R", descr);
        return -1;
    }
    PyMemberDescrObject *m = (PyMemberDescrObject *)descr;
    PyMemberDef *def = m->d_member;
    if (!PyType_IsSubtype(cls, PyDescr_TYPE(m)) || def->type != T_OBJECT_EX ||
        (def->flags & READONLY) || def->offset < (Py_ssize_t)sizeof(PyObject) ||
        def->offset + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%R is not a writable object slot of %R", descr, cls);
        return -1;
    }
    return def->offset;
}

static void
RowDecoder_free_parts(RowDecoder *self)
{
    if (self->defaults != NULL) {
        for (Py_ssize_t i = 0; i < self->ndefaults; i++) {
            Py_XDECREF(self->defaults[i].value);
        }
        PyMem_Free(self->defaults);
        self->defaults = NULL;
    }
    self->ndefaults = 0;
    PyMem_Free(self->columns);
    self->columns = NULL;
    self->ncolumns = 0;
    Py_CLEAR(self->cls);
}

static PyObject *RowDecoder_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);

/* Whether allocating an instance of `cls` and filling its slots makes a valid object: its
 * layout must come from `object` plus __slots__ only (no built-in base with state of its own),
 * with object's __new__, no __dict__ and a fixed size. */
static int
instantiable_plainly(PyTypeObject *cls)
{
    if (cls->tp_new != PyBaseObject_Type.tp_new || cls->tp_itemsize != 0 ||
        cls->tp_dictoffset != 0) {
        return 0;
    }
    PyTypeObject *base = cls;
    while (base != NULL && (base->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        base = base->tp_base;
    }
    return base == &PyBaseObject_Type;
}

/* RowDecoder(cls, width, columns, defaults)
 *   columns:  sequence of (column index, slot descriptor, kind)
 *   defaults: sequence of (slot descriptor, value) for slots no column fills
 * Every slot is assigned at most once. */
static PyObject *
RowDecoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *cls, *columns, *defaults;
    Py_ssize_t width;
    static char *names[] = {"cls", "width", "columns", "defaults", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nOO:RowDecoder", names, &PyType_Type, &cls,
                                     &width, &columns, &defaults)) {
        return NULL;
    }
    if (width < 1) {
        PyErr_SetString(PyExc_ValueError, "width must be at least 1");
        return NULL;
    }
    PyObject *cols = PySequence_Fast(columns, "columns must be a sequence");
    if (cols == NULL) {
        return NULL;
    }
    PyObject *defs = PySequence_Fast(defaults, "defaults must be a sequence");
    if (defs == NULL) {
        Py_DECREF(cols);
        return NULL;
    }
    RowDecoder *self = NULL;
    if (!instantiable_plainly((PyTypeObject *)cls)) {
        PyErr_Format(PyExc_TypeError,
                     "%R cannot be instantiated by filling its slots: it must be a class of "
                     "plain objects with no __new__, no __dict__ and no variable size",
                     cls);
        goto fail;
    }
    self = (RowDecoder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto fail;
    }
    self->vectorcall = RowDecoder_vectorcall;
    Py_INCREF(cls);
    self->cls = (PyTypeObject *)cls;
    self->width = width;
    Py_ssize_t nc = PySequence_Fast_GET_SIZE(cols), nd = PySequence_Fast_GET_SIZE(defs);
    self->columns = PyMem_Calloc(nc ? nc : 1, sizeof(Column));
    self->defaults = PyMem_Calloc(nd ? nd : 1, sizeof(Default));
    if (self->columns == NULL || self->defaults == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < nc; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(cols, i);
        Py_ssize_t column;
        PyObject *descr;
        int kind;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "nOi", &column, &descr, &kind)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a column is (index, descriptor, kind)");
            }
            goto fail;
        }
        if (column < 0 || column >= width || kind < KIND_SYMBOL || kind > KIND_BOOL) {
            PyErr_Format(PyExc_ValueError, "bad column (%zd, kind %d)", column, kind);
            goto fail;
        }
        Py_ssize_t offset = slot_offset(self->cls, descr);
        if (offset < 0) {
            goto fail;
        }
        self->columns[i] = (Column){column, offset, kind};
        self->ncolumns = i + 1;
    }
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(defs, i);
        PyObject *descr, *value;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "OO", &descr, &value)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "a default is (descriptor, value)");
            }
            goto fail;
        }
        Py_ssize_t offset = slot_offset(self->cls, descr);
        if (offset < 0) {
            goto fail;
        }
        Py_INCREF(value);
        self->defaults[i] = (Default){offset, value};
        self->ndefaults = i + 1;
    }
    /* Instances may leave the collector's lists only if every slot holds an atom: converted
     * values always are; defaults must be too; and no slot may be left unset for later. */
    self->untrack = PyType_IS_GC(self->cls) && self->cls->tp_dictoffset == 0;
    for (Py_ssize_t i = 0; i < self->ndefaults; i++) {
        if (!is_atom(self->defaults[i].value)) {
            self->untrack = 0;
        }
    }
    /* each slot at most once, or a value would leak */
    for (Py_ssize_t i = 0; i < self->ncolumns + self->ndefaults; i++) {
        Py_ssize_t a = i < self->ncolumns ? self->columns[i].offset
                                          : self->defaults[i - self->ncolumns].offset;
        for (Py_ssize_t j = i + 1; j < self->ncolumns + self->ndefaults; j++) {
            Py_ssize_t b = j < self->ncolumns ? self->columns[j].offset
                                              : self->defaults[j - self->ncolumns].offset;
            if (a == b) {
                PyErr_SetString(PyExc_ValueError, "a slot is assigned twice");
                goto fail;
            }
        }
    }
    Py_DECREF(cols);
    Py_DECREF(defs);
    return (PyObject *)self;
fail:
    Py_DECREF(cols);
    Py_DECREF(defs);
    Py_XDECREF(self);
    return NULL;
}

static void
RowDecoder_dealloc(RowDecoder *self)
{
    PyObject_GC_UnTrack(self);
    RowDecoder_free_parts(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
RowDecoder_traverse(RowDecoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cls);
    for (Py_ssize_t i = 0; i < self->ndefaults; i++) {
        Py_VISIT(self->defaults[i].value);
    }
    return 0;
}

static int
RowDecoder_clear(RowDecoder *self)
{
    RowDecoder_free_parts(self);
    return 0;
}

/* decoder(values) -> list of events, or None when `values` holds anything not valid */
static PyObject *
RowDecoder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RowDecoder *self = (RowDecoder *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a RowDecoder takes one argument, the value array");
        return NULL;
    }
    if (self->cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RowDecoder was cleared");
        return NULL;
    }
    PyObject *values = args[0];
    if (!PyList_CheckExact(values)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t size = PyList_GET_SIZE(values), width = self->width;
    if (size % width) {
        Py_RETURN_NONE;
    }
    Py_ssize_t rows = size / width;
    PyObject *out = PyList_New(rows);
    if (out == NULL) {
        return NULL;
    }
    PyTypeObject *cls = self->cls;
    for (Py_ssize_t r = 0; r < rows; r++) {
        PyObject *obj = cls->tp_alloc(cls, 0);
        if (obj == NULL) {
            goto error;
        }
        PyList_SET_ITEM(out, r, obj); /* `out` owns it from here, even half-filled */
        /* An allocation can run the garbage collector, and so finalizers: take the row only now,
         * and give up if anything changed the array. Conversion itself runs no Python code. */
        if (PyList_GET_SIZE(values) != size) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        PyObject *const *row = ((PyListObject *)values)->ob_item + r * width;
        char *base = (char *)obj;
        for (Py_ssize_t c = 0; c < self->ncolumns; c++) {
            const Column *col = &self->columns[c];
            PyObject *v = convert(row[col->column], col->kind);
            if (v == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                Py_DECREF(out);
                Py_RETURN_NONE;
            }
            *(PyObject **)(base + col->offset) = v;
        }
        for (Py_ssize_t d = 0; d < self->ndefaults; d++) {
            PyObject *v = self->defaults[d].value;
            Py_INCREF(v);
            *(PyObject **)(base + self->defaults[d].offset) = v;
        }
        if (self->untrack) {
            /* Every slot holds an atom (str, int, float, bool or None), so the event can never
             * be part of a reference cycle: the garbage collector need not look at it, just
             * as it stops looking at tuples of atoms. */
            PyObject_GC_UnTrack(obj);
        }
    }
    return out;
error:
    /* unset items are NULL, which list dealloc skips */
    Py_DECREF(out);
    return NULL;
}

static PyObject *
RowDecoder_get_width(RowDecoder *self, void *closure)
{
    return PyLong_FromSsize_t(self->width);
}

static PyGetSetDef RowDecoder_getset[] = {
    {"width", (getter)RowDecoder_get_width, NULL, "values per row", NULL},
    {NULL},
};

static PyTypeObject RowDecoder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trio_dxlink._speedups.RowDecoder",
    .tp_basicsize = sizeof(RowDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "RowDecoder(cls, width, columns, defaults): decodes COMPACT rows into cls instances",
    .tp_new = RowDecoder_new,
    .tp_dealloc = (destructor)RowDecoder_dealloc,
    .tp_traverse = (traverseproc)RowDecoder_traverse,
    .tp_clear = (inquiry)RowDecoder_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(RowDecoder, vectorcall),
    .tp_getset = RowDecoder_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Cursor, and Ready: the awaitable its __anext__ returns when the next event is at hand.     */

typedef struct {
    PyObject_HEAD
    PyObject *ready; /* the batch being iterated: a list */
    Py_ssize_t pos;  /* the next event's index in it */
    PyObject *slow;  /* called (no arguments) for an awaitable when the fast path can't serve */
    PyObject *spare; /* the last Ready handed out, reused once nobody else holds it */
} Cursor;

/* within a batch, every 256th event goes through `slow` (a cancellation check) */
#define CANCEL_CHECK_MASK 255

/* The next event, if the fast path can serve it: a new reference, or NULL (no error set). */
static PyObject *
Cursor_take(Cursor *self)
{
    Py_ssize_t pos = self->pos;
    PyObject *ready = self->ready;
    if (ready != NULL && PyList_CheckExact(ready) && pos >= 0 && pos < PyList_GET_SIZE(ready) &&
        (pos & CANCEL_CHECK_MASK) != CANCEL_CHECK_MASK) {
        PyObject *value = PyList_GET_ITEM(ready, pos);
        Py_INCREF(value);
        self->pos = pos + 1;
        return value;
    }
    return NULL;
}

/* Ready completes without suspending. It takes its event when awaited, not when created (as
 * a Python `async def __anext__` would), so an __anext__() that is never awaited takes
 * nothing. */
typedef struct {
    PyObject_HEAD
    PyObject *cursor; /* owned */
    int awaited;
} Ready;

static PyTypeObject Ready_Type;

static int
Ready_traverse(Ready *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cursor);
    return 0;
}

static int
Ready_clear(Ready *self)
{
    Py_CLEAR(self->cursor);
    return 0;
}

static void
Ready_dealloc(Ready *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->cursor);
    PyObject_GC_Del(self);
}

static PyObject *
Ready_await(Ready *self)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

/* The event, as a new reference; NULL with an error set if it cannot be had. */
static PyObject *
Ready_result(Ready *self)
{
    if (self->awaited || self->cursor == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this awaitable was already awaited");
        return NULL;
    }
    self->awaited = 1;
    PyObject *value = Cursor_take((Cursor *)self->cursor);
    if (value == NULL) {
        /* only if another __anext__() was awaited in between and used the event up */
        PyErr_SetString(PyExc_RuntimeError,
                        "overlapping __anext__() calls on a subscription: await each one "
                        "before asking for the next");
    }
    return value;
}

/* What `await` uses first (via PyIter_Send): the value comes back with no StopIteration. */
static PySendResult
Ready_send(Ready *self, PyObject *arg, PyObject **result)
{
    *result = Ready_result(self);
    return *result == NULL ? PYGEN_ERROR : PYGEN_RETURN;
}

/* What `await` uses where it does not look for am_send (CPython 3.12 and later). */
static PyObject *
Ready_iternext(Ready *self)
{
    PyObject *value = Ready_result(self);
    if (value == NULL) {
        return NULL;
    }
    if (PyTuple_Check(value) || PyExceptionInstance_Check(value)) {
        /* these would be taken apart as arguments: wrap them explicitly */
        PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
        if (exc != NULL) {
            PyErr_SetObject(PyExc_StopIteration, exc);
            Py_DECREF(exc);
        }
    }
    else {
        PyErr_SetObject(PyExc_StopIteration, value);
    }
    Py_DECREF(value);
    return NULL;
}

static PyAsyncMethods Ready_async = {
    .am_await = (unaryfunc)Ready_await,
    .am_send = (sendfunc)Ready_send,
};

static PyTypeObject Ready_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trio_dxlink._speedups.Ready",
    .tp_basicsize = sizeof(Ready),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "an awaitable that completes at once with the cursor's next event",
    .tp_dealloc = (destructor)Ready_dealloc,
    .tp_traverse = (traverseproc)Ready_traverse,
    .tp_clear = (inquiry)Ready_clear,
    .tp_as_async = &Ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Ready_iternext,
};

static PyObject *
Cursor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *slow;
    static char *names[] = {"slow", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Cursor", names, &slow)) {
        return NULL;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return NULL;
    }
    Cursor *self = (Cursor *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->ready = PyList_New(0);
    if (self->ready == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(slow);
    self->slow = slow;
    return (PyObject *)self;
}

static int
Cursor_traverse(Cursor *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ready);
    Py_VISIT(self->slow);
    Py_VISIT(self->spare);
    return 0;
}

static int
Cursor_clear(Cursor *self)
{
    Py_CLEAR(self->ready);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->spare);
    return 0;
}

static void
Cursor_dealloc(Cursor *self)
{
    PyObject_GC_UnTrack(self);
    Cursor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Cursor_aiter(Cursor *self)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
Cursor_anext(Cursor *self)
{
    Py_ssize_t pos = self->pos;
    PyObject *ready = self->ready;
    if (ready != NULL && PyList_CheckExact(ready) && pos >= 0 && pos < PyList_GET_SIZE(ready) &&
        (pos & CANCEL_CHECK_MASK) != CANCEL_CHECK_MASK) {
        Ready *r = (Ready *)self->spare;
        if (r != NULL && Py_REFCNT(r) == 1 && r->cursor == (PyObject *)self) {
            r->awaited = 0; /* `async for` has let go of the previous one: reuse it */
        }
        else {
            r = PyObject_GC_New(Ready, &Ready_Type);
            if (r == NULL) {
                return NULL;
            }
            Py_INCREF(self);
            r->cursor = (PyObject *)self;
            r->awaited = 0;
            PyObject_GC_Track(r);
            Py_XSETREF(self->spare, (PyObject *)r);
        }
        Py_INCREF(r);
        return (PyObject *)r;
    }
    if (self->slow == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Cursor was cleared");
        return NULL;
    }
    return PyObject_CallNoArgs(self->slow);
}

static int
Cursor_set_ready(Cursor *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "ready must be a list");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->ready, value);
    return 0;
}

static PyObject *
Cursor_get_ready(Cursor *self, void *closure)
{
    if (self->ready == NULL) {
        return PyList_New(0);
    }
    Py_INCREF(self->ready);
    return self->ready;
}

static PyGetSetDef Cursor_getset[] = {
    {"ready", (getter)Cursor_get_ready, (setter)Cursor_set_ready, "the batch being iterated",
     NULL},
    {NULL},
};

static PyMemberDef Cursor_members[] = {
    {"pos", T_PYSSIZET, offsetof(Cursor, pos), 0, "the next event's index in ready"},
    {NULL},
};

static PyAsyncMethods Cursor_async = {
    .am_aiter = (unaryfunc)Cursor_aiter,
    .am_anext = (unaryfunc)Cursor_anext,
};

static PyTypeObject Cursor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trio_dxlink._speedups.Cursor",
    .tp_basicsize = sizeof(Cursor),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Cursor(slow): async iteration over batches of events",
    .tp_new = Cursor_new,
    .tp_dealloc = (destructor)Cursor_dealloc,
    .tp_traverse = (traverseproc)Cursor_traverse,
    .tp_clear = (inquiry)Cursor_clear,
    .tp_as_async = &Cursor_async,
    .tp_getset = Cursor_getset,
    .tp_members = Cursor_members,
};

/* ------------------------------------------------------------------------------------------ */
/* A route is what a symbol maps to in a router's table: a list whose item 0 is the latest event */
/* routed for the symbol (None before the first) and whose other items are the handles it goes  */
/* to. One lookup per event finds both.                                                          */

/* Record `event` as the latest of `route` (a new reference is taken). -1 with an error set. */
static int
set_latest(PyObject *route, PyObject *event)
{
    if (!PyList_CheckExact(route) || PyList_GET_SIZE(route) < 1) {
        PyErr_SetString(PyExc_TypeError, "a route must be a list [latest event, handles...]");
        return -1;
    }
    Py_INCREF(event);
    /* the previous event may be freed here; the caller holds `route` */
    return PyList_SetItem(route, 0, event);
}

/* route(table, symbols, events): the single-handle dispatch step.                            */
/* For each event whose symbol is in `table`, the event becomes its route's latest. Returns     */
/* None when every symbol was in `table`, else the list of the events whose symbol was.         */

static PyObject *
route(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "route(table, symbols, events)");
        return NULL;
    }
    PyObject *table = args[0], *symbols = args[1], *events = args[2];
    if (!PyDict_Check(table) || !PyList_CheckExact(symbols) || !PyList_CheckExact(events) ||
        PyList_GET_SIZE(symbols) != PyList_GET_SIZE(events)) {
        PyErr_SetString(PyExc_TypeError, "route() takes a dict and two lists of the same length");
        return NULL;
    }
    PyObject *kept = NULL; /* created at the first symbol not in table */
    /* Hold both lists: a key's __eq__ or __hash__, or a replaced event's finalizer, could run
     * Python code (not for str keys and the library's events, but the function must be safe
     * for any input). */
    Py_INCREF(symbols);
    Py_INCREF(events);
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(symbols) && i < PyList_GET_SIZE(events);
         i++) {
        PyObject *symbol = PyList_GET_ITEM(symbols, i);
        PyObject *event = PyList_GET_ITEM(events, i);
        Py_INCREF(symbol);
        Py_INCREF(event);
        PyObject *r = PyDict_GetItemWithError(table, symbol); /* borrowed */
        if (r != NULL) {
            Py_INCREF(r);
            failed = set_latest(r, event) < 0 || (kept != NULL && PyList_Append(kept, event) < 0);
            Py_DECREF(r);
        }
        else if (PyErr_Occurred()) {
            failed = 1;
        }
        else if (kept == NULL) {
            kept = PyList_GetSlice(events, 0, i);
            failed = kept == NULL;
        }
        Py_DECREF(symbol);
        Py_DECREF(event);
    }
    Py_DECREF(symbols);
    Py_DECREF(events);
    if (failed) {
        Py_XDECREF(kept);
        return NULL;
    }
    if (kept == NULL) {
        Py_RETURN_NONE;
    }
    return kept;
}

/* fan_out(table, symbols, events) -> (shares, unrouted): the dispatch step for several
 * handles. For each event whose symbol is in `table`, the event becomes its route's latest and
 * is appended to shares[handle] for each of the route's handles. `unrouted` counts the events
 * whose symbol is not in `table`. */
static PyObject *
fan_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fan_out(table, symbols, events)");
        return NULL;
    }
    PyObject *table = args[0], *symbols = args[1], *events = args[2];
    if (!PyDict_Check(table) || !PyList_CheckExact(symbols) || !PyList_CheckExact(events) ||
        PyList_GET_SIZE(symbols) != PyList_GET_SIZE(events)) {
        PyErr_SetString(PyExc_TypeError,
                        "fan_out() takes a dict and two lists of the same length");
        return NULL;
    }
    PyObject *shares = PyDict_New();
    if (shares == NULL) {
        return NULL;
    }
    Py_ssize_t unrouted = 0;
    Py_INCREF(symbols);
    Py_INCREF(events);
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(symbols) && i < PyList_GET_SIZE(events);
         i++) {
        PyObject *symbol = PyList_GET_ITEM(symbols, i);
        PyObject *event = PyList_GET_ITEM(events, i);
        Py_INCREF(symbol);
        Py_INCREF(event);
        PyObject *route = PyDict_GetItemWithError(table, symbol); /* borrowed */
        if (route == NULL) {
            if (PyErr_Occurred()) {
                failed = 1;
            }
            else {
                unrouted++;
            }
        }
        else {
            Py_INCREF(route);
            failed = set_latest(route, event) < 0;
            for (Py_ssize_t h = 1; !failed && h < PyList_GET_SIZE(route); h++) {
                PyObject *handle = PyList_GET_ITEM(route, h);
                Py_INCREF(handle);
                PyObject *share = PyDict_GetItemWithError(shares, handle); /* borrowed */
                if (share != NULL) {
                    failed = PyList_Append(share, event) < 0;
                }
                else if (PyErr_Occurred()) {
                    failed = 1;
                }
                else {
                    share = PyList_New(1);
                    if (share == NULL) {
                        failed = 1;
                    }
                    else {
                        Py_INCREF(event);
                        PyList_SET_ITEM(share, 0, event);
                        failed = PyDict_SetItem(shares, handle, share) < 0;
                        Py_DECREF(share);
                    }
                }
                Py_DECREF(handle);
            }
            Py_DECREF(route);
        }
        Py_DECREF(symbol);
        Py_DECREF(event);
    }
    Py_DECREF(symbols);
    Py_DECREF(events);
    if (failed) {
        Py_DECREF(shares);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(Nn)", shares, unrouted);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* slot_dealloc: a deallocator for event classes.                                             */
/* CPython frees an instance of a Python class with its generic subtype_dealloc, which walks   */
/* the class hierarchy and each class's slot descriptors on every call. An event class is     */
/* object plus __slots__ only, every slot an object pointer, with no __dict__, no __weakref__ */
/* and no finalizer: its instances can be freed by clearing the pointers between the object   */
/* header and the end of the instance. use_slot_dealloc(cls) checks that and installs it.     */

static void slot_dealloc(PyObject *self);

/* The deallocator CPython gives every class defined in Python (its subtype_dealloc), read from a
 * class made at import: only a class that still has it (or ours) is given ours. */
static destructor python_class_dealloc;

static int
deallocated_by_python_or_us(PyTypeObject *t)
{
    return t->tp_dealloc == python_class_dealloc || t->tp_dealloc == slot_dealloc;
}

static void
slot_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    /* A subclass's instance arrives here from subtype_dealloc, which has already cleared what
     * the subclass added; its slots are NULL now. Clear up to the end of the installed class. */
    PyTypeObject *owner = type;
    while (owner->tp_dealloc != slot_dealloc) {
        owner = owner->tp_base;
    }
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, slot_dealloc)
    PyObject **slot = (PyObject **)((char *)self + sizeof(PyObject));
    PyObject **end = (PyObject **)((char *)self + owner->tp_basicsize);
    for (; slot < end; slot++) {
        Py_CLEAR(*slot);
    }
    type->tp_free(self);
    Py_DECREF(type); /* an instance of a heap type holds a reference to it */
    Py_TRASHCAN_END
}

/* Whether the instance layout of `cls` is exactly: the object header, then object slots. */
static int
only_object_slots(PyTypeObject *cls)
{
    Py_ssize_t covered = 0; /* slot bytes found in the hierarchy */
    for (PyTypeObject *t = cls; t != &PyBaseObject_Type; t = t->tp_base) {
        if (t == NULL || !(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_dictoffset != 0 ||
            t->tp_weaklistoffset != 0 || t->tp_itemsize != 0 || t->tp_del != NULL ||
            t->tp_finalize != NULL || PyTuple_GET_SIZE(t->tp_bases) != 1) {
            return 0;
        }
        for (PyMemberDef *mp = t->tp_members; mp != NULL && mp->name != NULL; mp++) {
            if (mp->type != T_OBJECT_EX || mp->offset < (Py_ssize_t)sizeof(PyObject) ||
                mp->offset + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
                return 0;
            }
            covered += sizeof(PyObject *);
        }
    }
    return covered == cls->tp_basicsize - (Py_ssize_t)sizeof(PyObject);
}

static PyObject *
use_slot_dealloc(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls) || !instantiable_plainly((PyTypeObject *)cls) ||
        !PyType_IS_GC((PyTypeObject *)cls) || !deallocated_by_python_or_us((PyTypeObject *)cls) ||
        !only_object_slots((PyTypeObject *)cls)) {
        PyErr_Format(PyExc_TypeError,
                     "%R is not a class of object slots only (no __dict__, no __weakref__, no "
                     "finalizer)",
                     cls);
        return NULL;
    }
    /* The bases of the same size get it too (the slot-holding base of an event class): CPython
     * lets an instance's __class__ change only between classes whose deallocators agree.
     * (A class with __del__ is refused and keeps CPython's deallocator; a __del__ added to the
     * class after this would not run when an instance is freed by its reference count.) */
    PyTypeObject *type = (PyTypeObject *)cls;
    for (PyTypeObject *t = type; t != &PyBaseObject_Type && (t->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
                                 t->tp_basicsize == type->tp_basicsize &&
                                 deallocated_by_python_or_us(t);
         t = t->tp_base) {
        t->tp_dealloc = slot_dealloc;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* The recorder's batch writes: in _speedups_text.c                                            */

PyObject *trio_dxlink_join_text(PyObject *module, PyObject *pieces);
#ifndef _WIN32
PyObject *trio_dxlink_write_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
#endif

static PyMethodDef speedups_methods[] = {
    {"use_slot_dealloc", (PyCFunction)use_slot_dealloc, METH_O,
     "use_slot_dealloc(cls): free cls's instances by clearing their object slots directly"},
    {"fan_out", (PyCFunction)(void (*)(void))fan_out, METH_FASTCALL,
     "fan_out(table, symbols, events): each handle's share of a batch, and the count of "
     "events no handle wanted; records the latest event of each routed symbol in its route"},
    {"route", (PyCFunction)(void (*)(void))route, METH_FASTCALL,
     "route(table, symbols, events): record the latest event of each routed symbol in its "
     "route; None if every symbol is routed, else the routed events"},
    {"join_text", (PyCFunction)trio_dxlink_join_text, METH_O,
     "join_text(pieces): a list's str (as UTF-8) and bytes pieces as one bytes object, copied "
     "without the GIL"},
#ifndef _WIN32
    {"write_text", (PyCFunction)(void (*)(void))trio_dxlink_write_text, METH_FASTCALL,
     "write_text(fd, pieces): write a list's str (as UTF-8) and bytes pieces to fd with "
     "writev, without the GIL; the count of bytes written"},
#endif
    {NULL},
};

/* ------------------------------------------------------------------------------------------ */

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trio_dxlink._speedups",
    .m_doc = "C implementations of trio_dxlink's per-event steps (optional).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RowDecoder_Type) < 0 || PyType_Ready(&Ready_Type) < 0 ||
        PyType_Ready(&Cursor_Type) < 0) {
        return NULL;
    }
    if (float_nan == NULL) {
        float_nan = PyFloat_FromDouble(Py_NAN);
        float_inf = PyFloat_FromDouble(Py_HUGE_VAL);
        float_neg_inf = PyFloat_FromDouble(-Py_HUGE_VAL);
        if (float_nan == NULL || float_inf == NULL || float_neg_inf == NULL) {
            return NULL;
        }
    }
    if (python_class_dealloc == NULL) {
        PyObject *probe = PyObject_CallFunction((PyObject *)&PyType_Type, "s()N", "_probe",
                                                PyDict_New());
        if (probe == NULL) {
            return NULL;
        }
        python_class_dealloc = ((PyTypeObject *)probe)->tp_dealloc;
        Py_DECREF(probe);
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RowDecoder", (PyObject *)&RowDecoder_Type) < 0 ||
        PyModule_AddObjectRef(m, "Cursor", (PyObject *)&Cursor_Type) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SYMBOL", KIND_SYMBOL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_DOUBLE", KIND_DOUBLE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_LONG", KIND_LONG) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STRING", KIND_STRING) < 0 ||
        PyModule_AddIntConstant(m, "KIND_BOOL", KIND_BOOL) < 0 ||
        PyModule_AddIntConstant(m, "CANCEL_CHECK_MASK", CANCEL_CHECK_MASK) < 0 ||
        PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
