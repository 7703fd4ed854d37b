/* keepa_ops.diagnosis._runs: the runs of a worker log's pool processes in one pass of C.
 *
 * The native half of keepa_ops.diagnosis.runs._process_runs: Python sorts the events into rows
 * of a few integer kinds, this file walks them once, and runs.py builds the runs from what it
 * finds. runs._process_runs_numpy gives the same answer without the extension; tests compare
 * the two.
 *
 * Invariants: never reads or writes outside the buffers it was given (it checks their sizes
 * first); holds no GIL while it walks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* process_runs(group, what, stream, flags, task, target, wait, nproc, run_of, open_row, last_row, end_row,
 *              how, run_task, last_target, announced, run_flags, lost) -> (runs, lost)
 *
 * The runs of the lines that name their pool process (keepa_ops.diagnosis.runs._process_runs,
 * whose numpy form this is), in one pass over the rows in time order.
 *
 * Per row (n rows): group int32, the row's (stream, process) as stream * nproc + process, or -1;
 * what int8: 1 a start (or a skip: flags bit 7), 2 an end (a finish, or a retry: flags bit 6),
 * 3 any other line of the group, 4 a process's exit (group: the process it names), 5 a worker
 * restart (closes every run of its stream), 0 none; stream int32; flags uint8 (bit 0 a target is
 * waited for, 1 a wait that announces its re-check, 2 waiting on, 3 waiting off, 4 a backfill
 * line, 5 a feed line, 6 a retry, 7 a skip); task int32 (-1 none); target and wait float64.
 *
 * On one group, a run is open after a start or any other line and closed after an end, a
 * death or a restart: a row opens a run when it starts one or finds none open; an end with no
 * run open is nobody's. Runs are numbered in the order they open (row order).
 *
 * Out, per row: run_of int32 (-1: in no run). Per run (room for n): open, last and end rows
 * (end -1: none), how int8 (0 open, 1 finished, 2 retry, 3 skip, 4 superseded, 5 died, 6 restart),
 * its first named task, its last waited-for target, the re-check its last wait announced (a
 * retry's own countdown), run_flags uint8 (bit 0 waiting at its end, 1 backfill, 2 feed, 3 began
 * in the log, 4 opened by a skip). lost int64: the exits that closed no run. */
static PyObject *py_process_runs(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer in[7], out[10];
    Py_ssize_t nproc;
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*nw*w*w*w*w*w*w*w*w*w*", &in[0], &in[1], &in[2], &in[3], &in[4],
                          &in[5], &in[6], &nproc, &out[0], &out[1], &out[2], &out[3], &out[4], &out[5], &out[6],
                          &out[7], &out[8], &out[9]))
        return NULL;
    PyObject *result = NULL;
    int32_t *cur = NULL;
    Py_ssize_t n = in[0].len / 4;
    if (in[0].len % 4 || in[1].len != n || in[2].len != n * 4 || in[3].len != n || in[4].len != n * 4 ||
        in[5].len != n * 8 || in[6].len != n * 8 || nproc < 1 || out[0].len != n * 4 || out[1].len < n * 8 ||
        out[2].len < n * 8 || out[3].len < n * 8 || out[4].len < n || out[5].len < n * 4 || out[6].len < n * 8 ||
        out[7].len < n * 8 || out[8].len < n || out[9].len < n * 8) {
        PyErr_SetString(PyExc_ValueError, "linescan: process_runs columns of the wrong size");
        goto done;
    }
    const int32_t *group = in[0].buf, *stream = in[2].buf, *task = in[4].buf;
    const int8_t *what = in[1].buf;
    const uint8_t *flags = in[3].buf;
    const double *target = in[5].buf, *wait = in[6].buf;
    int32_t *run_of = out[0].buf, *run_task = out[5].buf;
    int64_t *open_row = out[1].buf, *last_row = out[2].buf, *end_row = out[3].buf, *lost = out[9].buf;
    int8_t *how = out[4].buf;
    double *last_target = out[6].buf, *announced = out[7].buf;
    uint8_t *run_flags = out[8].buf;
    int32_t maxg = -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (group[i] > maxg) maxg = group[i];
    Py_ssize_t ngroups = (Py_ssize_t)maxg + 1;
    int32_t max_stream = -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (what[i] == 5 && stream[i] > max_stream) max_stream = stream[i];
    if ((Py_ssize_t)(max_stream + 1) * nproc > ngroups) ngroups = (Py_ssize_t)(max_stream + 1) * nproc;
    cur = malloc((ngroups + 1) * sizeof *cur);
    if (!cur) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t nruns = 0, nlost = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t q = 0; q < ngroups; q++) cur[q] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        run_of[i] = -1;
        int8_t w = what[i];
        int32_t q = group[i];
        if (w == 5) { /* a worker restart closes every run open in its stream */
            for (Py_ssize_t p = 0; p < nproc; p++) {
                Py_ssize_t g = (Py_ssize_t)stream[i] * nproc + p;
                if (g < ngroups && cur[g] >= 0) {
                    end_row[cur[g]] = i;
                    how[cur[g]] = 6;
                    cur[g] = -1;
                }
            }
            continue;
        }
        if (w == 0 || q < 0) continue;
        int32_t r = cur[q];
        if (w == 4) { /* the process died */
            if (r >= 0) {
                end_row[r] = i;
                how[r] = 5;
                cur[q] = -1;
            } else {
                lost[nlost++] = i;
            }
            continue;
        }
        if (w == 2 && r < 0) continue; /* an end with no run open is nobody's */
        if (w == 1 && r >= 0) {        /* a start supersedes the run open on its process */
            end_row[r] = i;
            how[r] = 4;
            r = -1;
        }
        if (r < 0) {
            r = (int32_t)nruns++;
            open_row[r] = i;
            end_row[r] = -1;
            how[r] = 0;
            run_task[r] = -1;
            last_target[r] = NAN;
            announced[r] = NAN;
            run_flags[r] = (uint8_t)((w == 1 ? 8 : 0) | (w == 1 && (flags[i] & 128) ? 16 : 0));
            cur[q] = r;
        }
        run_of[i] = r;
        last_row[r] = i;
        uint8_t f = flags[i];
        if (run_task[r] < 0 && task[i] >= 0) run_task[r] = task[i];
        if ((f & 1) && target[i] == target[i]) last_target[r] = target[i];
        if ((f & 2) && wait[i] == wait[i]) announced[r] = wait[i];
        if ((f & 4) && target[i] == target[i]) run_flags[r] |= 1;
        else if (f & 8) run_flags[r] &= (uint8_t)~1;
        if (f & 16) run_flags[r] |= 2;
        if (f & 32) run_flags[r] |= 4;
        if (w == 2) { /* its own end: a finish, a retry (with its countdown), or a skip's */
            end_row[r] = i;
            if (f & 64) {
                how[r] = 2;
                announced[r] = wait[i];
            } else {
                how[r] = (run_flags[r] & 16) ? 3 : 1;
            }
            cur[q] = -1;
        }
    }
    for (Py_ssize_t r = 0; r < nruns; r++) /* a skip's run that never ended is still a skip */
        if (end_row[r] < 0 && (run_flags[r] & 16)) how[r] = 3;
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nn", nruns, nlost);
done:
    free(cur);
    for (int k = 0; k < 7; k++)
        if (in[k].obj) PyBuffer_Release(&in[k]);
    for (int k = 0; k < 10; k++)
        if (out[k].obj) PyBuffer_Release(&out[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"process_runs", py_process_runs, METH_VARARGS, "Split the lines that name their pool process into runs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_runs", NULL, -1, methods};

PyMODINIT_FUNC PyInit__runs(void) { return PyModule_Create(&module); }
