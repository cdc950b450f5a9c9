/*
 * trio_dxlink._speedups, part two: the recorder's batch writes (see trio_dxlink/_record.py).
 *
 * The recorder queues each line as pieces (a frame's own str between a bytes prefix and
 * suffix) and a worker thread writes a batch of them while the event loop's thread decodes.
 * These two functions do the copying or the writing with the GIL released, so the worker thread
 * takes the GIL back once per batch instead of once per step. Their pure-Python twins are
 * _join_text and _write_text in _record.py; tests/test_speedups.py checks that both agree.
 *
 * The pieces' data is read without the GIL: every piece is held by a new reference, and its
 * address and size read, before the GIL is released. A str's UTF-8 bytes live as long as the
 * str (an ASCII str's own data, else the UTF-8 copy CPython caches in it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* join_text: the recorder's batch of line pieces as one bytes object, copied without the GIL */

#define JOIN_WITHOUT_GIL_FROM 65536 /* bytes: smaller joins keep the GIL (releasing it costs more) */

PyObject *
trio_dxlink_join_text(PyObject *module, PyObject *pieces)
{
    if (!PyList_CheckExact(pieces)) {
        PyErr_Format(PyExc_TypeError, "join_text() takes a list, not %.100s",
                     Py_TYPE(pieces)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    PyObject **held = PyMem_Malloc(sizeof(PyObject *) * (size_t)(n > 0 ? n : 1));
    const char **data = PyMem_Malloc(sizeof(const char *) * (size_t)(n > 0 ? n : 1));
    Py_ssize_t *sizes = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n > 0 ? n : 1));
    PyObject *out = NULL;
    Py_ssize_t taken = 0, total = 0;
    if (held == NULL || data == NULL || sizes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; taken < n; taken++) {
        PyObject *piece = PyList_GET_ITEM(pieces, taken);
        if (PyUnicode_Check(piece)) {
            data[taken] = PyUnicode_AsUTF8AndSize(piece, &sizes[taken]);
            if (data[taken] == NULL) {
                goto done;
            }
        }
        else if (PyBytes_Check(piece)) {
            data[taken] = PyBytes_AS_STRING(piece);
            sizes[taken] = PyBytes_GET_SIZE(piece);
        }
        else {
            PyErr_Format(PyExc_TypeError, "join_text() pieces are str or bytes, not %.100s",
                         Py_TYPE(piece)->tp_name);
            goto done;
        }
        if (sizes[taken] > PY_SSIZE_T_MAX - total) {
            PyErr_NoMemory();
            goto done;
        }
        total += sizes[taken];
        Py_INCREF(piece);
        held[taken] = piece;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        goto done;
    }
    char *to = PyBytes_AS_STRING(out);
    if (total >= JOIN_WITHOUT_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(to, data[i], (size_t)sizes[i]);
            to += sizes[i];
        }
        Py_END_ALLOW_THREADS
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(to, data[i], (size_t)sizes[i]);
            to += sizes[i];
        }
    }
done:
    for (Py_ssize_t i = 0; i < taken; i++) {
        Py_DECREF(held[i]);
    }
    PyMem_Free(held);
    PyMem_Free(data);
    PyMem_Free(sizes);
    return out;
}

/* write_text: the recorder's batch of line pieces written to a file descriptor with writev,
 * without the GIL and without joining them first */

#ifndef _WIN32
#include <errno.h>
#include <limits.h>
#include <sys/uio.h>
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

PyObject *
trio_dxlink_write_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "write_text(fd, pieces) takes a file descriptor and a list");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd == -1) {
        return NULL;
    }
    PyObject *pieces = args[1];
    Py_ssize_t n = PyList_GET_SIZE(pieces);
    PyObject **held = PyMem_Malloc(sizeof(PyObject *) * (size_t)(n > 0 ? n : 1));
    struct iovec *iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)(n > 0 ? n : 1));
    PyObject *result = NULL;
    Py_ssize_t taken = 0, written = 0;
    int error = 0;
    if (held == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; taken < n; taken++) {
        PyObject *piece = PyList_GET_ITEM(pieces, taken);
        Py_ssize_t size;
        const char *data;
        if (PyUnicode_Check(piece)) {
            data = PyUnicode_AsUTF8AndSize(piece, &size);
            if (data == NULL) {
                goto done;
            }
        }
        else if (PyBytes_Check(piece)) {
            data = PyBytes_AS_STRING(piece);
            size = PyBytes_GET_SIZE(piece);
        }
        else {
            PyErr_Format(PyExc_TypeError, "write_text() pieces are str or bytes, not %.100s",
                         Py_TYPE(piece)->tp_name);
            goto done;
        }
        iov[taken].iov_base = (void *)data;
        iov[taken].iov_len = (size_t)size;
        Py_INCREF(piece);
        held[taken] = piece;
    }
    Py_BEGIN_ALLOW_THREADS
    struct iovec *next = iov;
    Py_ssize_t left = n;
    while (left > 0) {
        if (next->iov_len == 0) { /* an empty piece */
            next++;
            left--;
            continue;
        }
        ssize_t done_now = writev(fd, next, left > IOV_MAX ? IOV_MAX : (int)left);
        if (done_now < 0) {
            if (errno == EINTR) {
                continue;
            }
            error = errno;
            break;
        }
        if (done_now == 0) { /* nothing written of a piece that is not empty: never retried */
            error = EIO;
            break;
        }
        written += done_now;
        while (left > 0 && (size_t)done_now >= next->iov_len) { /* whole pieces written */
            done_now -= (ssize_t)next->iov_len;
            next++;
            left--;
        }
        if (left > 0) { /* a piece written in part: the rest of it next */
            next->iov_base = (char *)next->iov_base + done_now;
            next->iov_len -= (size_t)done_now;
        }
    }
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromSsize_t(written);
done:
    for (Py_ssize_t i = 0; i < taken; i++) {
        Py_DECREF(held[i]);
    }
    PyMem_Free(held);
    PyMem_Free(iov);
    return result;
}
#endif
