/*
 * Fused CPU kernels for pysnn (see pysnn/native.py, which compiles this file on first use and
 * calls it through ctypes). Plain C11, no Python or torch headers, so it builds in well under a
 * second with any C compiler.
 *
 * Each function performs, element by element and in one pass over memory, exactly the floating-
 * point operations of the torch code it replaces (pysnn/functional/lif.py and trace.py), in the
 * same order, so results are bit-identical. Rounding matters: torch's vectorised addcmul is a
 * fused multiply-add on AVX2/AVX-512 (and ARM) CPUs, a multiply then an add elsewhere.
 * pysnn/native.py probes torch at build time and defines PYSNN_FMA exactly when its addcmul rounds
 * once, and builds with -ffp-contract=off so that the compiler fuses nothing else.
 *
 * Layout: state and input are contiguous (B, N) blocks (N = neurons per sample), inputs of several
 * steps are (T, B, N). Parameters come in a table of int64 pairs (address, stride): stride 0 for
 * one value shared by all neurons, 1 for N per-neuron values. Passing one table instead of a dozen
 * arguments keeps the cost of a call from Python low.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PYSNN_MAX_THREADS 64
/* neurons per block of the LIF kernels (their parameters are expanded onto the stack) */
#define PYSNN_BLOCK 256

/*
 * Run work(jobs + k * job_size) for k = 0 .. n_jobs - 1: job 0 on the calling thread, the others
 * on POSIX threads (a job whose thread cannot start runs on the calling thread afterwards).
 */
static void run_jobs(void *(*work)(void *), char *jobs, size_t job_size, int64_t n_jobs)
{
#ifdef _OPENMP
    /* Built against torch's own OpenMP runtime: its worker threads, which keep spinning for a
       while after each torch operation, take the jobs (separate POSIX threads would compete
       with them for the cores). */
    if (n_jobs > 1) {
#pragma omp parallel for num_threads((int)n_jobs) schedule(static, 1)
        for (int64_t k = 0; k < n_jobs; ++k)
            work(jobs + k * job_size);
        return;
    }
#endif
    pthread_t threads[PYSNN_MAX_THREADS];
    int started[PYSNN_MAX_THREADS] = {0};
    for (int64_t k = 1; k < n_jobs; ++k)
        started[k] = pthread_create(&threads[k], 0, work, jobs + k * job_size) == 0;
    work(jobs);
    for (int64_t k = 1; k < n_jobs; ++k) {
        if (started[k])
            pthread_join(threads[k], 0);
        else
            work(jobs + k * job_size);
    }
}

/* MADD(a, b, c) = a * b + c, rounded as torch's addcmul(c, a, b) rounds it. */
#ifdef PYSNN_FMA
#define MADD(a, b, c) _Generic((a), float: __builtin_fmaf, default: __builtin_fma)((a), (b), (c))
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

#define PARAM(T, table, k) ((const T *)(intptr_t)(table)[2 * (k)])
#define STRIDE(table, k) ((table)[2 * (k) + 1])

/*
 * Threads for an element-wise recursion over n neurons (each thread takes a contiguous range of
 * neurons through all steps and samples, so results do not depend on the thread count): at most
 * n_threads, none beyond one below ~2^18 element updates in all (a thread costs tens of
 * microseconds), and ranges of at least 64 neurons.
 */
static int64_t split_neurons(int64_t n_threads, int64_t n, int64_t work)
{
    if (n_threads > PYSNN_MAX_THREADS)
        n_threads = PYSNN_MAX_THREADS;
    if (n_threads > n / 64)
        n_threads = n / 64;
    if (work < ((int64_t)1 << 18) || n_threads < 1)
        n_threads = 1;
    return n_threads;
}

/*
 * Surrogate derivatives of pysnn.surrogate, out[i] = sigma'(u[i] - thresh[i]) for i < m (x in mV,
 * computed in the precision of the tensors): code 1 FastSigmoid (k), 2 ArcTan (k), 3 Sigmoid (k),
 * 4 Triangle (w), 5 StraightThrough (w).
 */
#define PYSNN_SURROGATE(T, ABS, EXP)                                                              \
    static void surrogate_grad_##T(int code, T p, const T *u, const T *thresh, T *out, int64_t m) \
    {                                                                                            \
        switch (code) {                                                                          \
        case 1:                                                                                  \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                T a = p * ABS(u[i] - thresh[i]) + (T)1;                                          \
                out[i] = (T)1 / (a * a);                                                         \
            }                                                                                    \
            break;                                                                               \
        case 2:                                                                                  \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                T a = (T)(0.5 * 3.14159265358979323846) * p * (u[i] - thresh[i]);                \
                out[i] = (T)0.5 * p / ((T)1 + a * a);                                            \
            }                                                                                    \
            break;                                                                               \
        case 3:                                                                                  \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                T sig = (T)1 / ((T)1 + EXP(-p * (u[i] - thresh[i])));                            \
                out[i] = p * sig * ((T)1 - sig);                                                 \
            }                                                                                    \
            break;                                                                               \
        case 4:                                                                                  \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                T a = (T)1 - ABS(u[i] - thresh[i]) / p;                                          \
                out[i] = a > (T)0 ? a : (T)0;                                                    \
            }                                                                                    \
            break;                                                                               \
        default:                                                                                 \
            for (int64_t i = 0; i < m; ++i)                                                      \
                out[i] = ABS(u[i] - thresh[i]) <= p ? (T)1 : (T)0;                               \
        }                                                                                        \
    }

PYSNN_SURROGATE(float, fabsf, expf)
PYSNN_SURROGATE(double, fabs, exp)

/* out[i] = parameter k of a table (see PARAM) for neurons lo .. lo + m - 1. */
#define PYSNN_EXPAND(T)                                                                           \
    static void expand_##T(T *out, const int64_t *table, int k, int64_t lo, int64_t m)          \
    {                                                                                            \
        const T *p = PARAM(T, table, k);                                                         \
        if (STRIDE(table, k))                                                                    \
            for (int64_t i = 0; i < m; ++i)                                                      \
                out[i] = p[lo + i];                                                              \
        else                                                                                     \
            for (int64_t i = 0; i < m; ++i)                                                      \
                out[i] = p[0];                                                                   \
    }

PYSNN_EXPAND(float)
PYSNN_EXPAND(double)
PYSNN_EXPAND(int64_t)

/*
 * LIF / IF steps (pysnn.functional.lif.lif_step followed by the trace update), for T steps:
 *
 *   v <- leak + v * decay  (MADD)              (leak = v_rest * (1 - decay))
 *   v <- v + (r > 0 ? 0 : x)                   (no input while refractory)
 *   s  = v >= thresh (+ theta)
 *   v <- s ? v_reset : v;  r <- s ? n_ref : max(r - 1, 0)
 *   trace <- additive ? trace * tdecay + tscale * s : (s ? tscale : trace * tdecay)  (MADD)
 *
 * x: (T, B, N) input (mV); v_in, r_in, t_in: (B, N) state before the first step, read only (r
 * int64); v, r, trace: (B, N) state after the last step, written (may alias the inputs);
 * s_out: (T, B, N), spikes written as 0/1; v_save, r_save: NULL (r_save also without v_save: never
 * refractory), or (T, B, N) outputs for
 * backpropagation (pysnn_lif_backward): the voltage before the reset (after the input) and 1 where
 * the neuron was refractory (input ignored); theta: NULL, or a threshold offset (mV) whose sample b
 * starts at theta + b * theta_bstride (0: shared by the batch). table: (address, stride) of
 * decay, leak, v_reset, thresh, n_ref (int64), trace decay, trace scale.
 */
/* A neuron constant in a loop over neurons i: per neuron (x[i]) or shared by all (x##0). */
#define PYSNN_ARRAY(x) x[i]
#define PYSNN_SCALAR(x) x##0

/* The loop over a block of m neurons of one LIF step (SAVE: also write v_save and r_save; P:
 * how the constants decay, leak, th, v_reset, n_ref, tdecay, tscale are read). Reads vsb, rsb,
 * tsb (state before) and xb (input), writes vb, rb, tb (state after, may alias) and sb. Split in
 * three passes per chunk so that each vectorises (one element type per pass; same-index reads
 * and writes only, hence ivdep): the refractory gate as floats, the floating-point step, the
 * refractory counters. Same operations, same values as one scalar pass. */
#define PYSNN_LIF_FLOAT(T, SAVE, P, ADD)                                                          \
    {                                                                                            \
        T vi = MADD(vsb[i], P(decay), P(leak));                                                  \
        vi = vi + (open_[i - c0] != (T)0 ? xb[i] : (T)0);                                        \
        const T si = vi >= P(th) ? (T)1 : (T)0;                                                  \
        if (SAVE)                                                                                \
            v_save[o + i] = vi;                                                                  \
        vb[i] = si != (T)0 ? P(v_reset) : vi;                                                    \
        sb[i] = si;                                                                              \
        const T d = tsb[i] * P(tdecay);                                                          \
        tb[i] = ADD ? MADD(P(tscale), si, d) : (si != (T)0 ? P(tscale) : d);                     \
    }

#define PYSNN_LIF_LOOP(T, SAVE, P)                                                                \
    for (int64_t c0 = 0; c0 < m; c0 += PYSNN_BLOCK) {                                            \
        const int64_t c1 = c0 + PYSNN_BLOCK < m ? c0 + PYSNN_BLOCK : m;                          \
        T open_[PYSNN_BLOCK]; /* 1 where the input counts (not refractory) */                    \
        if (no_ref) { /* never refractory: the counters stay 0, only the floating-point pass */ \
            for (int64_t i = c0; i < c1; ++i)                                                    \
                open_[i - c0] = (T)1;                                                            \
            if (rb != rsb)                                                                       \
                for (int64_t i = c0; i < c1; ++i)                                                \
                    rb[i] = 0;                                                                   \
            if (SAVE && r_save)                                                                  \
                for (int64_t i = c0; i < c1; ++i)                                                \
                    r_save[o + i] = 0;                                                           \
            if (additive) {                                                                      \
                _Pragma("GCC ivdep") for (int64_t i = c0; i < c1; ++i)                           \
                    PYSNN_LIF_FLOAT(T, SAVE, P, 1)                                               \
            } else {                                                                             \
                _Pragma("GCC ivdep") for (int64_t i = c0; i < c1; ++i)                           \
                    PYSNN_LIF_FLOAT(T, SAVE, P, 0)                                               \
            }                                                                                    \
            continue;                                                                            \
        }                                                                                        \
        for (int64_t i = c0; i < c1; ++i)                                                        \
            open_[i - c0] = rsb[i] > 0 ? (T)0 : (T)1;                                            \
        if (additive) {                                                                          \
            _Pragma("GCC ivdep") for (int64_t i = c0; i < c1; ++i) PYSNN_LIF_FLOAT(T, SAVE, P, 1) \
        } else {                                                                                 \
            _Pragma("GCC ivdep") for (int64_t i = c0; i < c1; ++i) PYSNN_LIF_FLOAT(T, SAVE, P, 0) \
        }                                                                                        \
        for (int64_t i = c0; i < c1; ++i) {                                                      \
            const int64_t ri = rsb[i];                                                           \
            if (SAVE && r_save)                                                                  \
                r_save[o + i] = ri > 0;                                                          \
            rb[i] = sb[i] != (T)0 ? P(n_ref) : (ri > 1 ? ri - 1 : 0);                            \
        }                                                                                        \
    }

#define PYSNN_LIF(NAME, T)                                                                        \
    typedef struct {                                                                             \
        int64_t n_steps, batch, n, lo, hi;                                                       \
        const T *x, *v_in;                                                                       \
        const int64_t *r_in;                                                                     \
        const T *t_in;                                                                           \
        T *v;                                                                                    \
        int64_t *r;                                                                              \
        T *trace, *s_out, *v_save;                                                               \
        unsigned char *r_save;                                                                   \
        const T *theta;                                                                          \
        int64_t theta_bstride;                                                                   \
        const int64_t *table;                                                                    \
        int additive;                                                                            \
    } NAME##_job;                                                                                \
                                                                                                 \
    static void *NAME##_neurons(void *arg)                                                       \
    {                                                                                            \
        const NAME##_job *job = (const NAME##_job *)arg;                                         \
        const int64_t batch = job->batch, n = job->n;                                            \
        T decay[PYSNN_BLOCK], leak[PYSNN_BLOCK], v_reset[PYSNN_BLOCK], thresh[PYSNN_BLOCK];      \
        T tdecay[PYSNN_BLOCK], tscale[PYSNN_BLOCK];                                              \
        T th_buf[PYSNN_BLOCK];                                                                   \
        int64_t n_ref[PYSNN_BLOCK];                                                              \
        for (int64_t lo = job->lo; lo < job->hi; lo += PYSNN_BLOCK) {                            \
        const int64_t m = job->hi - lo < PYSNN_BLOCK ? job->hi - lo : PYSNN_BLOCK;               \
        /* the parameters of this block of neurons as contiguous arrays (vectorised loop) */    \
        expand_##T(decay, job->table, 0, lo, m);                                                 \
        expand_##T(leak, job->table, 1, lo, m);                                                  \
        expand_##T(v_reset, job->table, 2, lo, m);                                               \
        expand_##T(thresh, job->table, 3, lo, m);                                                \
        expand_int64_t(n_ref, job->table, 4, lo, m);                                             \
        expand_##T(tdecay, job->table, 5, lo, m);                                                \
        expand_##T(tscale, job->table, 6, lo, m);                                                \
        T *v_save = job->v_save;                                                                 \
        unsigned char *r_save = job->r_save;                                                     \
        const int additive = job->additive;                                                      \
        /* no refractory period and no neuron refractory at the start: none ever will be */    \
        int no_ref = 1;                                                                          \
        for (int64_t i = 0; i < m; ++i)                                                          \
            no_ref &= n_ref[i] == 0;                                                             \
        for (int64_t b = 0; no_ref && b < batch; ++b)                                            \
            for (int64_t i = 0; i < m; ++i)                                                      \
                no_ref &= job->r_in[b * n + lo + i] == 0;                                        \
        for (int64_t t = 0; t < job->n_steps; ++t) {                                             \
            const T *vs = t == 0 ? job->v_in : job->v, *ts = t == 0 ? job->t_in : job->trace;    \
            const int64_t *rs = t == 0 ? job->r_in : job->r;                                     \
            for (int64_t b = 0; b < batch; ++b) {                                                \
                const int64_t o = (t * batch + b) * n + lo, c = b * n + lo;                      \
                const T *xb = job->x + o, *vsb = vs + c, *tsb = ts + c;                          \
                const int64_t *rsb = rs + c;                                                     \
                T *sb = job->s_out + o, *vb = job->v + c, *tb = job->trace + c;                  \
                int64_t *rb = job->r + c;                                                        \
                const T *th = thresh;                                                            \
                if (job->theta) { /* per-sample or shared offset: th = thresh + theta */         \
                    const T *thb = job->theta + b * job->theta_bstride + lo;                     \
                    for (int64_t i = 0; i < m; ++i)                                              \
                        th_buf[i] = thresh[i] + thb[i];                                          \
                    th = th_buf;                                                                 \
                }                                                                                \
                if (v_save)                                                                      \
                    PYSNN_LIF_LOOP(T, 1, PYSNN_ARRAY)                                            \
                else                                                                             \
                    PYSNN_LIF_LOOP(T, 0, PYSNN_ARRAY)                                            \
            }                                                                                    \
        }                                                                                        \
        }                                                                                        \
        return 0;                                                                                \
    }                                                                                            \
                                                                                                 \
    void NAME(int64_t n_steps, int64_t batch, int64_t n, const T *x, const T *v_in,              \
              const int64_t *r_in, const T *t_in, T *v, int64_t *r, T *trace, T *s_out,         \
              T *v_save, unsigned char *r_save, const T *theta, int64_t theta_bstride,          \
              const int64_t *table, int additive, int64_t n_threads)                            \
    {                                                                                            \
        NAME##_job jobs[PYSNN_MAX_THREADS];                                                      \
        n_threads = split_neurons(n_threads, n, n_steps * batch * n);                            \
        int64_t chunk = (n + n_threads - 1) / n_threads;                                         \
        for (int64_t k = 0; k < n_threads; ++k) {                                                \
            int64_t lo = k * chunk < n ? k * chunk : n, hi = lo + chunk < n ? lo + chunk : n;    \
            NAME##_job job = {n_steps, batch, n, lo, hi, x, v_in, r_in, t_in, v, r, trace,       \
                              s_out, v_save, r_save, theta, theta_bstride, table, additive};     \
            jobs[k] = job;                                                                       \
        }                                                                                        \
        run_jobs(NAME##_neurons, (char *)jobs, sizeof(NAME##_job), n_threads);                   \
    }

PYSNN_LIF(pysnn_lif_f32, float)
PYSNN_LIF(pysnn_lif_f64, double)

/* One step of pysnn_lif on state updated in place (no theta, nothing saved, one thread): the
 * short entry point of the common case, whose call from Python converts fewer arguments. */
#define PYSNN_LIF_INPLACE(NAME, LIF, T)                                                           \
    void NAME(int64_t batch, int64_t n, const T *x, T *v, int64_t *r, T *trace, T *s_out,        \
              const int64_t *table, int additive)                                               \
    {                                                                                            \
        LIF(1, batch, n, x, v, r, trace, v, r, trace, s_out, 0, 0, 0, 0, table, additive, 1);   \
    }

PYSNN_LIF_INPLACE(pysnn_lif_inplace_f32, pysnn_lif_f32, float)
PYSNN_LIF_INPLACE(pysnn_lif_inplace_f64, pysnn_lif_f64, double)

/*
 * Backward pass of T LIF steps (pysnn.functional.lif.lif_trace_steps under autograd): the exact
 * derivative of the steps above, with the surrogate derivative of the spike function and the
 * gradient of the reset written as v' = (1 - s) v + s v_reset, as autograd computes it for the
 * torch operations of lif_step and trace_step. Per step, backwards in time (g_v, g_tr: gradients
 * with respect to v and trace after the step, starting from g_v_end and g_tr_end):
 *
 *   g_s  = g_spikes[t] + (additive ? tscale * g_tr : 0) + (detach_reset ? 0 : g_v * (v_reset - u))
 *   g_u  = (s ? 0 : g_v) + g_s * sg[t]           (u = v_save[t], the voltage before the reset)
 *   g_x[t] = r_save[t] ? 0 : g_u;   g_v <- g_u * decay
 *   g_tr <- additive ? g_tr * tdecay : (s ? 0 : g_tr * tdecay)
 *
 * g_spikes, sg (surrogate derivative at u - thresh), v_save, g_x: (T, B, N) (g_scalar: g_spikes
 * is one value, the gradient of every spike); r_save (T, B, N) or NULL (never refractory); sg
 * NULL: the derivative is computed here, surrogate_grad(code, param); g_v_end, g_tr_end: (B, N);
 * g_v0, g_tr0: (B, N) outputs, the gradients with respect to the state before the first step.
 * table: as for pysnn_lif. n_threads: as for pysnn_lif.
 */
/* One neuron of one step of the backward pass (ADD: additive trace); same-index reads and
 * writes only (ivdep), the spike as a float so that the loop vectorises. */
#define PYSNN_LIF_BACKWARD_STEP(T, ADD)                                                           \
    {                                                                                            \
        const T fired = u[i] >= thresh[i] ? (T)1 : (T)0;                                         \
        T gs = gsp[i] + (ADD ? (T)1 : (T)0) * tscale[i] * gt[i] +                                \
               reset_on * gv[i] * (v_reset[i] - u[i]);                                           \
        T gu = (fired != (T)0 ? (T)0 : gv[i]) + gs * sg[i];                                      \
        gx[i] = gu;                                                                              \
        gv[i] = gu * decay[i];                                                                   \
        gt[i] = (ADD || fired == (T)0) ? gt[i] * tdecay[i] : (T)0;                               \
    }

#define PYSNN_LIF_BACKWARD(NAME, T)                                                               \
    typedef struct {                                                                             \
        int64_t n_steps, batch, n, lo, hi;                                                       \
        const T *g_spikes, *sg, *v_save;                                                         \
        const unsigned char *r_save;                                                             \
        const T *g_v_end, *g_tr_end;                                                             \
        T *g_x, *g_v0, *g_tr0;                                                                   \
        const int64_t *table;                                                                    \
        int additive, detach_reset, code, g_scalar;                                              \
        double param;                                                                            \
    } NAME##_job;                                                                                \
                                                                                                 \
    static void *NAME##_neurons(void *arg)                                                       \
    {                                                                                            \
        const NAME##_job *job = (const NAME##_job *)arg;                                         \
        const int64_t batch = job->batch, n = job->n;                                            \
        T decay[PYSNN_BLOCK], v_reset[PYSNN_BLOCK], thresh[PYSNN_BLOCK], tdecay[PYSNN_BLOCK];    \
        T tscale[PYSNN_BLOCK], d[PYSNN_BLOCK], g_one[PYSNN_BLOCK];                               \
        for (int64_t lo = job->lo; lo < job->hi; lo += PYSNN_BLOCK) {                            \
        const int64_t m = job->hi - lo < PYSNN_BLOCK ? job->hi - lo : PYSNN_BLOCK;               \
        expand_##T(decay, job->table, 0, lo, m);                                                 \
        expand_##T(v_reset, job->table, 2, lo, m);                                               \
        expand_##T(thresh, job->table, 3, lo, m);                                                \
        expand_##T(tdecay, job->table, 5, lo, m);                                                \
        expand_##T(tscale, job->table, 6, lo, m);                                                \
        const int additive = job->additive, detach_reset = job->detach_reset;                    \
        if (job->g_scalar) /* one gradient for every spike (a sum or mean loss) */               \
            for (int64_t i = 0; i < m; ++i)                                                      \
                g_one[i] = job->g_spikes[0];                                                     \
        for (int64_t b = 0; b < batch; ++b)                                                      \
            for (int64_t i = 0; i < m; ++i) {                                                    \
                job->g_v0[b * n + lo + i] = job->g_v_end[b * n + lo + i];                        \
                job->g_tr0[b * n + lo + i] = job->g_tr_end[b * n + lo + i];                      \
            }                                                                                    \
        for (int64_t t = job->n_steps - 1; t >= 0; --t) {                                        \
            for (int64_t b = 0; b < batch; ++b) {                                                \
                const int64_t o = (t * batch + b) * n + lo, c = b * n + lo;                      \
                const T *u = job->v_save + o, *gsp = job->g_scalar ? g_one : job->g_spikes + o;  \
                const unsigned char *rs = job->r_save ? job->r_save + o : 0;                     \
                T *gv = job->g_v0 + c, *gt = job->g_tr0 + c, *gx = job->g_x + o;                 \
                const T *sg = job->sg ? job->sg + o : d;                                         \
                if (!job->sg)                                                                    \
                    surrogate_grad_##T(job->code, (T)job->param, u, thresh, d, m);               \
                const T reset_on = detach_reset ? (T)0 : (T)1;                                   \
                if (additive)                                                                    \
                    _Pragma("GCC ivdep") for (int64_t i = 0; i < m; ++i)                         \
                        PYSNN_LIF_BACKWARD_STEP(T, 1)                                            \
                else                                                                             \
                    _Pragma("GCC ivdep") for (int64_t i = 0; i < m; ++i)                         \
                        PYSNN_LIF_BACKWARD_STEP(T, 0)                                            \
                if (rs) /* no input while refractory: no gradient into it (a second, short pass \
                           keeps the loop above vectorisable) */                                 \
                    for (int64_t i = 0; i < m; ++i)                                              \
                        if (rs[i])                                                               \
                            gx[i] = (T)0;                                                        \
            }                                                                                    \
        }                                                                                        \
        }                                                                                        \
        return 0;                                                                                \
    }                                                                                            \
                                                                                                 \
    void NAME(int64_t n_steps, int64_t batch, int64_t n, const T *g_spikes, const T *sg,         \
              const T *v_save, const unsigned char *r_save, const T *g_v_end, const T *g_tr_end, \
              T *g_x, T *g_v0, T *g_tr0, const int64_t *table, int additive, int detach_reset,  \
              int code, double param, int g_scalar, int64_t n_threads)                          \
    {                                                                                            \
        NAME##_job jobs[PYSNN_MAX_THREADS];                                                      \
        n_threads = split_neurons(n_threads, n, n_steps * batch * n);                            \
        int64_t chunk = (n + n_threads - 1) / n_threads;                                         \
        for (int64_t k = 0; k < n_threads; ++k) {                                                \
            int64_t lo = k * chunk < n ? k * chunk : n, hi = lo + chunk < n ? lo + chunk : n;    \
            NAME##_job job = {n_steps, batch,  n,    lo,     hi,       g_spikes, sg,          \
                              v_save,  r_save, g_v_end, g_tr_end, g_x, g_v0, g_tr0,          \
                              table,   additive, detach_reset, code, g_scalar, param};           \
            jobs[k] = job;                                                                       \
        }                                                                                        \
        run_jobs(NAME##_neurons, (char *)jobs, sizeof(NAME##_job), n_threads);                   \
    }

PYSNN_LIF_BACKWARD(pysnn_lif_backward_f32, float)
PYSNN_LIF_BACKWARD(pysnn_lif_backward_f64, double)

/*
 * Spike trace of given spikes (pysnn.functional.trace.trace_step), one step:
 *   trace <- additive ? t_in * tdecay + tscale * x (MADD) : (x > 0 ? tscale : t_in * tdecay)
 * x, t_in, trace: (B, N); t_in read, trace written (may alias t_in). table: (address, stride) of
 * trace decay and scale.
 */
#define PYSNN_TRACE(NAME, T)                                                                     \
    void NAME(int64_t batch, int64_t n, const T *x, const T *t_in, T *trace,                     \
              const int64_t *table, int additive)                                                \
    {                                                                                            \
        const T *tdecay = PARAM(T, table, 0), *tscale = PARAM(T, table, 1);                      \
        const int64_t tdecay_s = STRIDE(table, 0), tscale_s = STRIDE(table, 1);                  \
        for (int64_t b = 0; b < batch; ++b) {                                                    \
            const T *xb = x + b * n, *sb = t_in + b * n;                                         \
            T *tb = trace + b * n;                                                               \
            for (int64_t i = 0; i < n; ++i) {                                                    \
                T d = sb[i] * tdecay[i * tdecay_s];                                              \
                T a = tscale[i * tscale_s];                                                      \
                tb[i] = additive ? MADD(a, xb[i], d) : (xb[i] > 0 ? a : d);                      \
            }                                                                                    \
        }                                                                                        \
    }

PYSNN_TRACE(pysnn_trace_f32, float)
PYSNN_TRACE(pysnn_trace_f64, double)

/*
 * Adaptive threshold after a step (pysnn.functional.lif.adaptive_theta_step):
 *   theta <- theta * decay + plus * c   (a product, a product, a sum: each rounded, no MADD)
 * s: (B, N) spikes of the step. Per-sample theta (shared = 0): theta (B, N), c = s. Shared theta
 * (shared = 1): theta (N), c = the spikes summed over the batch (0/1 values: exact in any order).
 * table: (address, stride) of decay and plus.
 */
#define PYSNN_THETA(NAME, T)                                                                     \
    void NAME(int64_t batch, int64_t n, const T *s, T *theta, int shared, const int64_t *table)  \
    {                                                                                            \
        const T *decay = PARAM(T, table, 0), *plus = PARAM(T, table, 1);                         \
        const int64_t decay_s = STRIDE(table, 0), plus_s = STRIDE(table, 1);                     \
        if (shared) {                                                                            \
            for (int64_t i = 0; i < n; ++i) {                                                    \
                T c = 0;                                                                         \
                for (int64_t b = 0; b < batch; ++b)                                              \
                    c += s[b * n + i];                                                           \
                T kept = theta[i] * decay[i * decay_s];                                          \
                T added = plus[i * plus_s] * c;                                                  \
                theta[i] = kept + added;                                                         \
            }                                                                                    \
            return;                                                                              \
        }                                                                                        \
        for (int64_t b = 0; b < batch; ++b) {                                                    \
            const T *sb = s + b * n;                                                             \
            T *tb = theta + b * n;                                                               \
            for (int64_t i = 0; i < n; ++i) {                                                    \
                T kept = tb[i] * decay[i * decay_s];                                             \
                T added = plus[i * plus_s] * sb[i];                                              \
                tb[i] = kept + added;                                                            \
            }                                                                                    \
        }                                                                                        \
    }

PYSNN_THETA(pysnn_theta_f32, float)
PYSNN_THETA(pysnn_theta_f64, double)

/*
 * Event-driven x @ W^T for a Linear connection (pysnn.connection.Linear, "event" propagation):
 * only the weight rows of the non-zero inputs are read and added, in increasing input order:
 *
 *   out[b, :] = sum over j with x[b, j] != 0 of x[b, j] * wt[j, :]
 *
 * x: (B, n_in); wt: (n_in, n_out), the contiguous transpose of the (n_out, n_in) weight; out:
 * (B, n_out), overwritten. Returns the number of non-zero inputs (the activity "auto" needs).
 * With n_threads > 1 and enough work, the output columns are split between POSIX threads (each
 * sums the same inputs in the same order, so the result does not depend on the thread count).
 */
#define PYSNN_LINEAR_EVENT(NAME, T)                                                             \
    typedef struct {                                                                            \
        int64_t batch, n_in, n_out, lo, hi;                                                     \
        const T *x, *wt;                                                                        \
        T *out;                                                                                 \
    } NAME##_job;                                                                               \
                                                                                                \
    static void *NAME##_columns(void *arg)                                                      \
    {                                                                                           \
        const NAME##_job *job = (const NAME##_job *)arg;                                        \
        const int64_t lo = job->lo, hi = job->hi, n_out = job->n_out;                           \
        for (int64_t b = 0; b < job->batch; ++b) {                                              \
            const T *xb = job->x + b * job->n_in;                                               \
            T *restrict ob = job->out + b * n_out;                                              \
            const T *w[8];                                                                      \
            T xs[8];                                                                            \
            int found = 0;                                                                      \
            for (int64_t i = lo; i < hi; ++i)                                                   \
                ob[i] = (T)0;                                                                   \
            for (int64_t j = 0; j < job->n_in; ++j) {                                           \
                if (xb[j] == (T)0)                                                              \
                    continue;                                                                   \
                w[found] = job->wt + j * n_out;                                                 \
                xs[found] = xb[j];                                                              \
                if (++found < 8)                                                                \
                    continue;                                                                   \
                /* eight rows at once: eight memory streams, one pass over the output; each */  \
                /* element still adds its terms in increasing input order */                    \
                const T *restrict w0 = w[0], *restrict w1 = w[1], *restrict w2 = w[2];          \
                const T *restrict w3 = w[3], *restrict w4 = w[4], *restrict w5 = w[5];          \
                const T *restrict w6 = w[6], *restrict w7 = w[7];                               \
                for (int64_t i = lo; i < hi; ++i) {                                             \
                    T a = ob[i];                                                                \
                    a = a + xs[0] * w0[i];                                                      \
                    a = a + xs[1] * w1[i];                                                      \
                    a = a + xs[2] * w2[i];                                                      \
                    a = a + xs[3] * w3[i];                                                      \
                    a = a + xs[4] * w4[i];                                                      \
                    a = a + xs[5] * w5[i];                                                      \
                    a = a + xs[6] * w6[i];                                                      \
                    a = a + xs[7] * w7[i];                                                      \
                    ob[i] = a;                                                                  \
                }                                                                               \
                found = 0;                                                                      \
            }                                                                                   \
            for (int k = 0; k < found; ++k) {                                                   \
                const T *restrict wk = w[k];                                                    \
                const T xk = xs[k];                                                             \
                for (int64_t i = lo; i < hi; ++i)                                               \
                    ob[i] = ob[i] + xk * wk[i];                                                 \
            }                                                                                   \
        }                                                                                       \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    int64_t NAME(int64_t batch, int64_t n_in, int64_t n_out, const T *x, const T *wt, T *out,   \
                 int64_t n_threads)                                                             \
    {                                                                                           \
        int64_t active = 0;                                                                     \
        for (int64_t k = 0; k < batch * n_in; ++k)                                              \
            active += x[k] != (T)0;                                                             \
        if (n_threads > PYSNN_MAX_THREADS)                                                      \
            n_threads = PYSNN_MAX_THREADS;                                                      \
        /* a thread costs tens of microseconds: only for ~4e6 multiply-adds and more */         \
        if (active * n_out < ((int64_t)1 << 22) || n_out < 64 * n_threads)                      \
            n_threads = 1;                                                                      \
        NAME##_job jobs[PYSNN_MAX_THREADS];                                                     \
        int64_t chunk = (n_out + n_threads - 1) / n_threads;                                    \
        chunk = (chunk + 15) / 16 * 16; /* whole cache lines per thread */                      \
        for (int64_t k = 0; k < n_threads; ++k) {                                               \
            int64_t lo = k * chunk, hi = lo + chunk < n_out ? lo + chunk : n_out;               \
            NAME##_job job = {batch, n_in, n_out, lo, hi > lo ? hi : lo, x, wt, out};           \
            jobs[k] = job;                                                                      \
        }                                                                                       \
        run_jobs(NAME##_columns, (char *)jobs, sizeof(NAME##_job), n_threads);                  \
        return active;                                                                          \
    }

PYSNN_LINEAR_EVENT(pysnn_linear_event_f32, float)
PYSNN_LINEAR_EVENT(pysnn_linear_event_f64, double)

/*
 * The same product for many rows at once (a multi-step block: rows = T * B), cache-blocked.
 *
 * The untiled loop above reads a whole weight row (n_out values) for every active input of every
 * row: at n = 10000 and 5 % activity over 1000 steps that is 20 GB of weight traffic. Here the
 * active inputs of every row are first listed (CSR), then the output is processed in tiles of
 * TILE_OUT columns and the inputs in blocks of TILE_IN: a (TILE_IN, TILE_OUT) weight block stays in
 * cache while every row adds its active inputs from that block. Each output element still receives
 * its terms in increasing input order, so the result is bit-identical to the untiled loop.
 * Threads split the output tiles. Returns the number of non-zero inputs, or -1 if out of memory.
 *
 * With row_major = 1, wt is the (n_out, n_in) weight itself, not its transpose: each
 * (TILE_IN, TILE_OUT) block is transposed into a per-thread buffer (256 KB in float32, in cache)
 * before the rows use it. The weight is then read once per call, and no presynaptic-major copy of
 * it is needed (building one costs a full read and write of the weight, and its memory); the
 * values, and their order, are the same.
 */
#ifndef TILE_IN
#define TILE_IN 128
#endif
#ifndef TILE_OUT
#define TILE_OUT 512
#endif

#define PYSNN_LINEAR_EVENT_BLOCK(NAME, T)                                                       \
    typedef struct {                                                                            \
        int64_t rows, n_in, n_out, tile_lo, tile_hi;                                            \
        const int64_t *row_ptr;                                                                 \
        const int32_t *cols;                                                                    \
        const T *vals, *wt;                                                                     \
        T *out;                                                                                 \
        int64_t *cursor;                                                                        \
        T *buf; /* (TILE_IN, TILE_OUT) transposed weight block, or 0 (wt is the transpose) */  \
    } NAME##_job;                                                                               \
                                                                                                \
    static void *NAME##_tiles(void *arg)                                                        \
    {                                                                                           \
        const NAME##_job *job = (const NAME##_job *)arg;                                        \
        for (int64_t tile = job->tile_lo; tile < job->tile_hi; ++tile) {                        \
            int64_t lo = tile * TILE_OUT;                                                       \
            int64_t hi = lo + TILE_OUT < job->n_out ? lo + TILE_OUT : job->n_out;               \
            for (int64_t r = 0; r < job->rows; ++r) {                                           \
                job->cursor[r] = job->row_ptr[r];                                               \
                T *o = job->out + r * job->n_out;                                               \
                for (int64_t i = lo; i < hi; ++i)                                               \
                    o[i] = (T)0;                                                                \
            }                                                                                   \
            for (int64_t block = 0; block < job->n_in; block += TILE_IN) {                     \
                int64_t end = block + TILE_IN;                                                  \
                /* w(j)[i]: the weight from input j to output i, for i in [lo, hi) */           \
                const T *base = job->wt;                                                        \
                int64_t stride = job->n_out, shift = 0, origin = lo;                            \
                if (job->buf) {                                                                 \
                    int64_t top = end < job->n_in ? end : job->n_in;                            \
                    for (int64_t i0 = lo; i0 < hi; i0 += 8) /* in 8 x 8 squares */              \
                        for (int64_t j0 = block; j0 < top; j0 += 8) {                           \
                            int64_t i1 = i0 + 8 < hi ? i0 + 8 : hi;                             \
                            int64_t j1 = j0 + 8 < top ? j0 + 8 : top;                           \
                            for (int64_t i = i0; i < i1; ++i) {                                 \
                                const T *src = job->wt + i * job->n_in;                         \
                                for (int64_t j = j0; j < j1; ++j)                               \
                                    job->buf[(j - block) * TILE_OUT + (i - lo)] = src[j];       \
                            }                                                                   \
                        }                                                                       \
                    base = job->buf, stride = TILE_OUT, shift = block, origin = 0;              \
                }                                                                               \
                for (int64_t r = 0; r < job->rows; ++r) {                                       \
                    int64_t k = job->cursor[r], stop = job->row_ptr[r + 1];                     \
                    T *o = job->out + r * job->n_out;                                           \
                    for (; k < stop && job->cols[k] < end; ++k) {                               \
                        const T *w = base + ((int64_t)job->cols[k] - shift) * stride + origin;  \
                        T v = job->vals[k];                                                     \
                        for (int64_t i = lo; i < hi; ++i)                                       \
                            o[i] = o[i] + v * w[i - lo];                                        \
                    }                                                                           \
                    job->cursor[r] = k;                                                         \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    int64_t NAME(int64_t rows, int64_t n_in, int64_t n_out, const T *x, const T *wt, T *out,    \
                 int64_t n_threads, int row_major)                                              \
    {                                                                                           \
        int64_t *row_ptr = malloc((size_t)(rows + 1) * sizeof(int64_t));                        \
        if (!row_ptr)                                                                           \
            return -1;                                                                          \
        row_ptr[0] = 0;                                                                         \
        for (int64_t r = 0; r < rows; ++r) {                                                    \
            int64_t c = 0;                                                                      \
            for (int64_t j = 0; j < n_in; ++j)                                                  \
                c += x[r * n_in + j] != (T)0;                                                   \
            row_ptr[r + 1] = row_ptr[r] + c;                                                    \
        }                                                                                       \
        int64_t active = row_ptr[rows];                                                         \
        if (n_threads > PYSNN_MAX_THREADS)                                                      \
            n_threads = PYSNN_MAX_THREADS;                                                      \
        int64_t n_tiles = (n_out + TILE_OUT - 1) / TILE_OUT;                                    \
        if (active * n_out < ((int64_t)1 << 20) || n_tiles < n_threads)                          \
            n_threads = 1;                                                                      \
        int32_t *cols = malloc((size_t)(active > 0 ? active : 1) * sizeof(int32_t));            \
        T *vals = malloc((size_t)(active > 0 ? active : 1) * sizeof(T));                        \
        int64_t *cursor = malloc((size_t)(rows > 0 ? rows : 1) * n_threads * sizeof(int64_t));  \
        T *bufs = row_major ? malloc((size_t)n_threads * TILE_IN * TILE_OUT * sizeof(T)) : 0;   \
        if (!cols || !vals || !cursor || (row_major && !bufs)) {                                \
            free(row_ptr), free(cols), free(vals), free(cursor), free(bufs);                    \
            return -1;                                                                          \
        }                                                                                       \
        for (int64_t r = 0, k = 0; r < rows; ++r)                                               \
            for (int64_t j = 0; j < n_in; ++j) {                                                \
                T v = x[r * n_in + j];                                                          \
                if (v != (T)0) {                                                                \
                    cols[k] = (int32_t)j;                                                       \
                    vals[k++] = v;                                                              \
                }                                                                               \
            }                                                                                   \
        NAME##_job jobs[PYSNN_MAX_THREADS];                                                     \
        int64_t per = (n_tiles + n_threads - 1) / n_threads;                                    \
        for (int64_t t = 0; t < n_threads; ++t) {                                               \
            int64_t a = t * per < n_tiles ? t * per : n_tiles;                                  \
            int64_t b = a + per < n_tiles ? a + per : n_tiles;                                  \
            NAME##_job job = {rows, n_in, n_out, a, b, row_ptr, cols, vals, wt, out,            \
                              cursor + t * rows, row_major ? bufs + t * TILE_IN * TILE_OUT : 0};  \
            jobs[t] = job;                                                                      \
        }                                                                                       \
        run_jobs(NAME##_tiles, (char *)jobs, sizeof(NAME##_job), n_threads);                    \
        free(row_ptr), free(cols), free(vals), free(cursor), free(bufs);                        \
        return active;                                                                          \
    }

PYSNN_LINEAR_EVENT_BLOCK(pysnn_linear_event_block_f32, float)
PYSNN_LINEAR_EVENT_BLOCK(pysnn_linear_event_block_f64, double)

/*
 * Transposing copy: dst (cols, rows) = src (rows, cols)^T, both contiguous, in 64 x 64 tiles so
 * that reads and writes both stay within cache lines; tile rows are split between n_threads
 * POSIX threads. Exact (a copy). Used to build the presynaptic-major copy of a Linear's weight.
 */
#define PYSNN_TILE 64
#define PYSNN_TRANSPOSE(NAME, T)                                                                \
    typedef struct {                                                                            \
        int64_t rows, cols, lo, hi;                                                             \
        const T *src;                                                                           \
        T *dst;                                                                                 \
    } NAME##_job;                                                                               \
                                                                                                \
    static void *NAME##_tiles(void *arg)                                                        \
    {                                                                                           \
        const NAME##_job *job = (const NAME##_job *)arg;                                        \
        for (int64_t r0 = job->lo; r0 < job->hi; r0 += PYSNN_TILE) {                            \
            int64_t r1 = r0 + PYSNN_TILE < job->hi ? r0 + PYSNN_TILE : job->hi;                 \
            for (int64_t c0 = 0; c0 < job->cols; c0 += PYSNN_TILE) {                            \
                int64_t c1 = c0 + PYSNN_TILE < job->cols ? c0 + PYSNN_TILE : job->cols;         \
                for (int64_t r = r0; r < r1; ++r)                                               \
                    for (int64_t c = c0; c < c1; ++c)                                           \
                        job->dst[c * job->rows + r] = job->src[r * job->cols + c];              \
            }                                                                                   \
        }                                                                                       \
        return 0;                                                                               \
    }                                                                                           \
                                                                                                \
    void NAME(int64_t rows, int64_t cols, const T *src, T *dst, int64_t n_threads)              \
    {                                                                                           \
        if (n_threads > PYSNN_MAX_THREADS)                                                      \
            n_threads = PYSNN_MAX_THREADS;                                                      \
        if (n_threads < 1 || rows * cols < ((int64_t)1 << 20))                                  \
            n_threads = 1;                                                                      \
        NAME##_job jobs[PYSNN_MAX_THREADS];                                                     \
        int64_t chunk = (rows + n_threads - 1) / n_threads;                                     \
        chunk = (chunk + PYSNN_TILE - 1) / PYSNN_TILE * PYSNN_TILE;                             \
        for (int64_t k = 0; k < n_threads; ++k) {                                               \
            int64_t lo = k * chunk < rows ? k * chunk : rows;                                   \
            int64_t hi = lo + chunk < rows ? lo + chunk : rows;                                 \
            NAME##_job job = {rows, cols, lo, hi, src, dst};                                    \
            jobs[k] = job;                                                                      \
        }                                                                                       \
        run_jobs(NAME##_tiles, (char *)jobs, sizeof(NAME##_job), n_threads);                    \
    }

PYSNN_TRANSPOSE(pysnn_transpose_f32, float)
PYSNN_TRANSPOSE(pysnn_transpose_f64, double)

/*
 * Row update of a weight for learning rules (pysnn.connection.Connection.apply_update_):
 *
 *   w[rows[k], :] = clamp(w[rows[k], :] + dw[k, :], lo, hi)      (clamp only if bounded)
 *
 * exactly the operations of torch's index_select + add_ + clamp_ + index_copy_ (one rounding
 * for the add; NaN stays NaN), in one pass, and the same values written into the transposed
 * copy wt (n_in, n_out) when wt is not NULL. w: (n_out, n_in), dw: (n_rows, n_in), contiguous.
 * Rows are validated first (0 <= row < n_out): returns 0 and writes nothing if one is out of
 * range, else 1. Rows are handled 8 at a time so that the writes into wt of nearby rows share
 * cache lines.
 */
#define PYSNN_ROW_UPDATE(NAME, T)                                                               \
    int NAME(int64_t n_out, int64_t n_in, const int64_t *rows, int64_t n_rows, const T *dw,     \
             T *w, T *wt, int bounded, double lo_d, double hi_d)                                \
    {                                                                                           \
        for (int64_t k = 0; k < n_rows; ++k)                                                    \
            if (rows[k] < 0 || rows[k] >= n_out)                                                \
                return 0;                                                                       \
        const T lo = (T)lo_d, hi = (T)hi_d;                                                     \
        for (int64_t k0 = 0; k0 < n_rows; k0 += 8) {                                            \
            int64_t k1 = k0 + 8 < n_rows ? k0 + 8 : n_rows;                                     \
            for (int64_t j = 0; j < n_in; ++j) {                                                \
                for (int64_t k = k0; k < k1; ++k) {                                             \
                    int64_t r = rows[k];                                                        \
                    T v = w[r * n_in + j] + dw[k * n_in + j];                                   \
                    if (bounded)                                                                \
                        v = v < lo ? lo : (v > hi ? hi : v);                                    \
                    w[r * n_in + j] = v;                                                        \
                    if (wt)                                                                     \
                        wt[j * n_out + r] = v;                                                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return 1;                                                                               \
    }

PYSNN_ROW_UPDATE(pysnn_row_update_f32, float)
PYSNN_ROW_UPDATE(pysnn_row_update_f64, double)

/*
 * Pair-based STDP of one sample (pysnn.learning.STDP at batch 1) applied in place:
 *
 *   for each postsynaptic i with s[i] != 0 or xp[i] != 0, every j:
 *     dw = MADD(xp[i] * b, a_in[j], (s[i] * a) * tr[j])     (torch.addcmul(outer, q, arrival))
 *     w[i, j] = clamp(w[i, j] + dw, lo, hi)                  (clamp only if bounded)
 *
 * s, xp: (n_out) post spikes and trace; tr, a_in: (n_in) pre trace and arriving spikes; a, b:
 * the potentiation and (negative) depression rates, applied in T as torch applies a Python
 * number. The same values go into the transposed copy wt (n_in, n_out) when wt is not NULL.
 * Returns the number of rows changed.
 */
#define PYSNN_STDP_ROWS(NAME, T)                                                                \
    int64_t NAME(int64_t n_out, int64_t n_in, const T *s, const T *xp, const T *tr,             \
                 const T *a_in, double a_d, double b_d, T *w, T *wt, int bounded, double lo_d,  \
                 double hi_d)                                                                   \
    {                                                                                           \
        const T a = (T)a_d, b = (T)b_d, lo = (T)lo_d, hi = (T)hi_d;                             \
        int64_t changed = 0;                                                                    \
        for (int64_t i = 0; i < n_out; ++i) {                                                   \
            if (s[i] == (T)0 && xp[i] == (T)0)                                                  \
                continue;                                                                       \
            ++changed;                                                                          \
            const T p = s[i] * a, q = xp[i] * b;                                                \
            T *restrict row = w + i * n_in;                                                     \
            for (int64_t j = 0; j < n_in; ++j) {                                                \
                T pot = p * tr[j];                                                              \
                T dw = MADD(q, a_in[j], pot);                                                   \
                T v = row[j] + dw;                                                              \
                if (bounded)                                                                    \
                    v = v < lo ? lo : (v > hi ? hi : v);                                        \
                row[j] = v;                                                                     \
            }                                                                                   \
            if (wt)                                                                             \
                for (int64_t j = 0; j < n_in; ++j)                                              \
                    wt[j * n_out + i] = row[j];                                                 \
        }                                                                                       \
        return changed;                                                                         \
    }

PYSNN_STDP_ROWS(pysnn_stdp_rows_f32, float)
PYSNN_STDP_ROWS(pysnn_stdp_rows_f64, double)

/*
 * Triplet STDP of one sample (pysnn.learning.TripletSTDP at batch 1, no weight dependence)
 * applied in place. One step is exactly the torch operations of TripletSTDP.delta and of
 * Connection.apply_update_'s dense update, each rounded in T as torch rounds it (a Python number
 * is applied in T):
 *
 *   r1 = nearest ? (a > 0 ? 1 : r1 dp) : r1 dp + a;   o1 likewise with s, dm
 *   r2' = r2 dx;  q = a (a2m + a3m r2');  r2 = nearest ? (a > 0 ? 1 : r2') : r2' + a
 *   o2' = o2 dy;  p = s (a2p + a3p o2');  o2 likewise with s
 *   w[i, j] = clamp(w[i, j] + (p[i] r1[j] - o1[i] q[j]), lo, hi)     (clamp only if bounded)
 *
 * s: (n_out) post spikes, a_in: (n_in) arriving spikes; r1, r2 (n_in), o1, o2 (n_out): the
 * rule's traces, updated in place; c: a2p, a3p, a2m, a3m, dp, dm, dx, dy. The same weights go
 * into the transposed copy wt (n_in, n_out) when wt is not NULL.
 *
 * Where an update is +-0 it is skipped when that leaves the weight as the dense update does
 * (w + +-0 = w, and clamp(w) = w): entries of a row with p[i] = +-0 and o1[i] = +-0, and of the
 * columns with q[j] = +-0 of a row with p[i] = +-0, unless a trace is not finite (0 * inf) or the
 * row is "dirty" (dirty[i] != 0, set by triplet_dirty: it holds a -0, which + +0 turns into
 * +0, or a value the clamp would change; or a bound is -0, which the clamp may write). An update
 * of a clean row writes no -0 (w + dw = -0 only for w = -0) and no value outside the bounds, so
 * the flags found before the first of any number of steps hold for all of them.
 *
 * work: int64 cols[n_in], then T p[n_out], T q[n_in], then unsigned char dirty[n_out]
 * (pysnn.native.TripletKernel allocates it). U is the unsigned integer of T's size (a -0 is
 * found by its bits). Returns the number of rows changed.
 */
#define PYSNN_TRIPLET(T, U, SUFFIX)                                                             \
    static void triplet_dirty_##SUFFIX(int64_t n_out, int64_t n_in, const T *w, int bounded,    \
                                       T lo, T hi, int64_t *work)                               \
    {                                                                                           \
        unsigned char *dirty = (unsigned char *)((T *)(work + n_in) + n_out + n_in);            \
        /* a bound of -0 would make clamp write a -0 */                                         \
        const int all = bounded && ((lo == (T)0 && signbit(lo)) || (hi == (T)0 && signbit(hi))); \
        const U negative_zero = (U)1 << (8 * sizeof(U) - 1);                                    \
        if (!bounded)                                                                           \
            lo = -(T)INFINITY, hi = (T)INFINITY;                                                \
        for (int64_t i = 0; i < n_out; ++i) {                                                   \
            const T *row = w + i * n_in;                                                        \
            int d = 0;                                                                          \
            for (int64_t j = 0; j < n_in; ++j) { /* (branch-free: vectorised) */                \
                U bits;                                                                         \
                memcpy(&bits, row + j, sizeof(U));                                              \
                d |= (bits == negative_zero) | (row[j] < lo) | (row[j] > hi);                   \
            }                                                                                   \
            dirty[i] = (unsigned char)(all || d);                                               \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    static int64_t triplet_step_##SUFFIX(int64_t n_out, int64_t n_in, const T *s,               \
                                         const T *a_in, T *r1, T *r2, T *o1, T *o2,             \
                                         const double *c, int nearest, T *w, T *wt,             \
                                         int bounded, T lo, T hi, int64_t *work)                \
    {                                                                                           \
        const T a2p = (T)c[0], a3p = (T)c[1], a2m = (T)c[2], a3m = (T)c[3];                     \
        const T dp = (T)c[4], dm = (T)c[5], dx = (T)c[6], dy = (T)c[7];                         \
        int64_t *cols = work, n_cols = 0;                                                       \
        T *p = (T *)(work + n_in), *q = p + n_out;                                              \
        const unsigned char *dirty = (const unsigned char *)(q + n_in);                         \
        int dense = 0;                                                                          \
        for (int64_t j = 0; j < n_in; ++j) {                                                    \
            const T a = a_in[j], d1 = r1[j] * dp, d2 = r2[j] * dx;                              \
            const T x1 = nearest ? (a > (T)0 ? (T)1 : d1) : d1 + a;                             \
            const T qj = a * (d2 * a3m + a2m);                                                  \
            r1[j] = x1;                                                                         \
            r2[j] = nearest ? (a > (T)0 ? (T)1 : d2) : d2 + a;                                  \
            q[j] = qj;                                                                          \
            if (qj != (T)0)                                                                     \
                cols[n_cols++] = j;                                                             \
            if (!(x1 - x1 == (T)0 && qj - qj == (T)0)) /* 0 * inf = NaN: every row changes */   \
                dense = 1;                                                                      \
        }                                                                                       \
        for (int64_t i = 0; i < n_out; ++i) {                                                   \
            const T si = s[i], d1 = o1[i] * dm, d2 = o2[i] * dy;                                \
            o1[i] = nearest ? (si > (T)0 ? (T)1 : d1) : d1 + si;                                \
            p[i] = si * (d2 * a3p + a2p);                                                       \
            o2[i] = nearest ? (si > (T)0 ? (T)1 : d2) : d2 + si;                                \
        }                                                                                       \
        int64_t changed = 0;                                                                    \
        for (int64_t i = 0; i < n_out; ++i) {                                                   \
            const T pi = p[i], oi = o1[i];                                                      \
            const int full = dense || dirty[i] || pi != (T)0 || !(oi - oi == (T)0);             \
            if (!full && (oi == (T)0 || n_cols == 0))                                           \
                continue;                                                                       \
            ++changed;                                                                          \
            T *restrict row = w + i * n_in;                                                     \
            if (full) {                                                                         \
                for (int64_t j = 0; j < n_in; ++j) {                                            \
                    T v = row[j] + (pi * r1[j] - oi * q[j]);                                    \
                    if (bounded)                                                                \
                        v = v < lo ? lo : (v > hi ? hi : v);                                    \
                    row[j] = v;                                                                 \
                }                                                                               \
                if (wt)                                                                         \
                    for (int64_t j = 0; j < n_in; ++j)                                          \
                        wt[j * n_out + i] = row[j];                                             \
                continue;                                                                       \
            }                                                                                   \
            for (int64_t k = 0; k < n_cols; ++k) {                                              \
                const int64_t j = cols[k];                                                      \
                T v = row[j] + (pi * r1[j] - oi * q[j]);                                        \
                if (bounded)                                                                    \
                    v = v < lo ? lo : (v > hi ? hi : v);                                        \
                row[j] = v;                                                                     \
                if (wt)                                                                         \
                    wt[j * n_out + i] = v;                                                      \
            }                                                                                   \
        }                                                                                       \
        return changed;                                                                         \
    }                                                                                           \
                                                                                                \
    int64_t pysnn_triplet_##SUFFIX(int64_t n_out, int64_t n_in, const T *s, const T *a_in,      \
                                   T *r1, T *r2, T *o1, T *o2, const double *c, int nearest,    \
                                   T *w, T *wt, int bounded, double lo, double hi,              \
                                   int64_t *work)                                               \
    {                                                                                           \
        triplet_dirty_##SUFFIX(n_out, n_in, w, bounded, (T)lo, (T)hi, work);                    \
        return triplet_step_##SUFFIX(n_out, n_in, s, a_in, r1, r2, o1, o2, c, nearest, w, wt,   \
                                     bounded, (T)lo, (T)hi, work);                              \
    }

PYSNN_TRIPLET(float, uint32_t, f32)
PYSNN_TRIPLET(double, uint64_t, f64)

/*
 * T steps of a recurrent population (pysnn.multistep.run_recurrent): N LIF neurons; a sparse
 * connection (CSR: row_ptr (N + 1), post (nnz) in [0, G * N), w (nnz)) from the neurons' spikes
 * to G receptor groups of N; one exponential synapse per group (state g_k (B, N), table k:
 * (address, stride) of a, kk, e_rev), current-based (cond[k] = 0: in = g * kk) or
 * conductance-based (cond[k] = 1: in = (g * kk) * (e_rev - v), v before the neuron's step); the
 * groups' inputs summed in group order into the neuron's input; then the LIF step of pysnn_lif.
 * Per step t and sample b, exactly the operations of the Python step loop
 *
 *   c = 0; c[post[k]] += w[k] * s_j  for the spiking j in increasing order, k in row j (scatter_add)
 *   g_k = MADD(g_k, a_k, c_k)                                                  (torch.addcmul)
 *   x = in_0 + in_1 + ...;  LIF step with input x  (PYSNN_LIF_LOOP)
 *
 * with an external input ext (T, B, N) (else NULL), x = ((ext_t + in_0) + in_1) + ... where
 * ext_first, x = ((in_0 + in_1) + ...) + ext_t otherwise (torch's left-to-right sum).
 * s0: (B, N) spikes before the first step (the connection's input of step 0); s_out: (T, B, N).
 * c: (B, G * N) scratch, zero on entry and on return; spiking: (B, N) int64 scratch.
 */
#define PYSNN_MAX_GROUPS 16

/* one synapse group over the n neurons: g <- MADD(g, a, c), c <- 0, input summed into xin */
#define PYSNN_REC_SYN(T, P, COND)                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                           \
        const T gi = MADD(gk[i], P(a), ck[i]);                                                  \
        gk[i] = gi;                                                                             \
        ck[i] = (T)0;                                                                           \
        const T in = COND ? (gi * P(kk)) * (P(e) - vb[i]) : gi * P(kk);                         \
        xin[i] = first ? in : xin[i] + in;                                                      \
    }

#define PYSNN_RECURRENT(NAME, T)                                                                \
    void NAME(int64_t n_steps, int64_t batch, int64_t n, int64_t groups, const int64_t *row_ptr, \
              const int64_t *post, const T *w, const T *s0, T *v, int64_t *r, T *trace,         \
              T *const *g, const int64_t *const *syn_tables, const int *cond,                   \
              const int64_t *table, int additive, T *s_out, T *c, int64_t *spiking,             \
              int64_t **events, int64_t *n_events, const T *ext, int ext_first)                 \
    {                                                                                           \
        /* every factor as a contiguous array of n, once per call: the synapses' (a, kk, e_rev) \
           per group, the neurons' decay, leak, v_reset, thresh, trace decay and scale; then    \
           the summed input of a step */                                                        \
        const int64_t n_arrays = groups * 3 + 7 + (s_out ? 0 : 2); /* (+ spikes, ping-pong) */  \
        int64_t cap = 0, found = 0;                                                             \
        int64_t *ev = 0;                                                                        \
        int record = events != 0;                                                               \
        T *arrays = malloc((size_t)n_arrays * (size_t)n * sizeof(T));                           \
        int64_t *n_ref = malloc((size_t)n * sizeof(int64_t));                                   \
        if (!arrays || !n_ref) {                                                                \
            free(arrays), free(n_ref);                                                          \
            return;                                                                             \
        }                                                                                       \
        for (int64_t kg = 0; kg < groups; ++kg)                                                 \
            for (int q = 0; q < 3; ++q)                                                         \
                expand_##T(arrays + (kg * 3 + q) * n, syn_tables[kg], q, 0, n);                 \
        T *const lif_p = arrays + groups * 3 * n;                                               \
        const int lif_k[6] = {0, 1, 2, 3, 5, 6};                                                \
        for (int q = 0; q < 6; ++q)                                                             \
            expand_##T(lif_p + q * n, table, lif_k[q], 0, n);                                   \
        expand_int64_t(n_ref, table, 4, 0, n);                                                  \
        const T *restrict decay = lif_p, *restrict leak = lif_p + n;                            \
        const T *restrict v_reset = lif_p + 2 * n, *restrict th = lif_p + 3 * n;                \
        const T *restrict tdecay = lif_p + 4 * n, *restrict tscale = lif_p + 5 * n;             \
        T *restrict xin = lif_p + 6 * n;                                                        \
        T *const s_buf = s_out ? 0 : lif_p + 7 * n;                                             \
        /* constants shared by all neurons are read as scalars (no array traffic per step) */   \
        int lif_scalar = 1, syn_scalar[PYSNN_MAX_GROUPS];                                       \
        for (int q = 0; q < 7; ++q)                                                             \
            lif_scalar = lif_scalar && STRIDE(table, q) == 0;                                   \
        for (int64_t kg = 0; kg < groups; ++kg)                                                 \
            syn_scalar[kg] = STRIDE(syn_tables[kg], 0) == 0 && STRIDE(syn_tables[kg], 1) == 0  \
                             && STRIDE(syn_tables[kg], 2) == 0;                                 \
        const T decay0 = decay[0], leak0 = leak[0], v_reset0 = v_reset[0];                      \
        const T th0 = th[0], tdecay0 = tdecay[0], tscale0 = tscale[0];                          \
        T *const v_save = 0; /* (PYSNN_LIF_LOOP without SAVE: never written) */                  \
        unsigned char *const r_save = 0;                                                        \
        const int64_t o = 0, m = n;                                                             \
        const int no_ref = 0; /* (the refractory passes of PYSNN_LIF_LOOP always run) */        \
        const int64_t n_ref0 = n_ref[0];                                                        \
        for (int64_t b = 0; b < batch; ++b) {                                                   \
            int64_t *list = spiking + b * n, count = 0;                                         \
            for (int64_t j = 0; j < n; ++j)                                                     \
                if (s0[b * n + j] != (T)0)                                                      \
                    list[count++] = j;                                                          \
            const T *s_prev = s0 + b * n;                                                       \
            T *cb = c + b * groups * n;                                                         \
            T *vb = v + b * n, *tb = trace + b * n; /* updated in place by PYSNN_LIF_LOOP */     \
            int64_t *rb = r + b * n;                                                            \
            const T *vsb = vb, *tsb = tb, *xb = xin;                                            \
            const int64_t *rsb = rb;                                                            \
            for (int64_t t = 0; t < n_steps; ++t) {                                             \
                for (int64_t q = 0; q < count; ++q) { /* the connection: scatter_add */         \
                    const int64_t j = list[q];                                                  \
                    const T sj = s_prev[j];                                                     \
                    for (int64_t k = row_ptr[j]; k < row_ptr[j + 1]; ++k)                       \
                        cb[post[k]] = cb[post[k]] + w[k] * sj;                                  \
                }                                                                               \
                const T *restrict xe = ext ? ext + (t * batch + b) * n : 0;                     \
                if (xe && ext_first) /* the external input first: ext_t + in_0 + ... */         \
                    for (int64_t i = 0; i < n; ++i)                                             \
                        xin[i] = xe[i];                                                         \
                for (int64_t kg = 0; kg < groups; ++kg) { /* the synapses, summed in order */   \
                    T *restrict gk = g[kg] + b * n, *restrict ck = cb + kg * n;                 \
                    const T *restrict a = arrays + kg * 3 * n, *restrict kk = a + n;            \
                    const T *restrict e = kk + n;                                               \
                    const int first = kg == 0 && !(xe && ext_first);                            \
                    const T a0 = a[0], kk0 = kk[0], e0 = e[0];                                  \
                    if (syn_scalar[kg]) {                                                       \
                        if (cond[kg])                                                           \
                            PYSNN_REC_SYN(T, PYSNN_SCALAR, 1)                                   \
                        else                                                                    \
                            PYSNN_REC_SYN(T, PYSNN_SCALAR, 0)                                   \
                    } else if (cond[kg])                                                        \
                        PYSNN_REC_SYN(T, PYSNN_ARRAY, 1)                                        \
                    else                                                                        \
                        PYSNN_REC_SYN(T, PYSNN_ARRAY, 0)                                        \
                }                                                                               \
                if (xe && !ext_first) /* the external input last: in_0 + ... + ext_t */         \
                    for (int64_t i = 0; i < n; ++i)                                             \
                        xin[i] = xin[i] + xe[i];                                                \
                T *restrict sb = s_out ? s_out + (t * batch + b) * n : s_buf + (t & 1) * n;     \
                if (lif_scalar) /* the LIF step */                                              \
                    PYSNN_LIF_LOOP(T, 0, PYSNN_SCALAR)                                          \
                else                                                                            \
                    PYSNN_LIF_LOOP(T, 0, PYSNN_ARRAY)                                           \
                count = 0; /* the spiking neurons: blocks of 16 without a spike skipped */      \
                int64_t i = 0;                                                                  \
                for (; i + 16 <= n; i += 16) {                                                  \
                    T any = 0;                                                                  \
                    for (int k = 0; k < 16; ++k)                                                \
                        any = any + sb[i + k];                                                  \
                    if (any != (T)0)                                                            \
                        for (int k = 0; k < 16; ++k)                                            \
                            if (sb[i + k] != (T)0)                                              \
                                list[count++] = i + k;                                          \
                }                                                                               \
                for (; i < n; ++i)                                                              \
                    if (sb[i] != (T)0)                                                          \
                        list[count++] = i;                                                      \
                if (record) { /* (step, sample, neuron) of each spike */                        \
                    if (found + count > cap) {                                                  \
                        int64_t grown = 2 * cap + 3 * count + 1024;                             \
                        int64_t *more = realloc(ev, (size_t)grown * 3 * sizeof(int64_t));       \
                        if (!more) {                                                            \
                            free(ev), ev = 0, found = -1, record = 0; /* out of memory */       \
                            continue;                                                           \
                        }                                                                       \
                        ev = more, cap = grown;                                                 \
                    }                                                                           \
                    for (int64_t q = 0; q < count; ++q) {                                       \
                        ev[3 * (found + q)] = t;                                                \
                        ev[3 * (found + q) + 1] = b;                                            \
                        ev[3 * (found + q) + 2] = list[q];                                      \
                    }                                                                           \
                    found += count;                                                             \
                }                                                                               \
                s_prev = sb;                                                                    \
            }                                                                                   \
        }                                                                                       \
        free(arrays), free(n_ref);                                                              \
        if (n_events) {                                                                         \
            *n_events = found;                                                                  \
            *events = ev;                                                                       \
        }                                                                                       \
    }

PYSNN_RECURRENT(pysnn_recurrent_f32, float)
PYSNN_RECURRENT(pysnn_recurrent_f64, double)

/*
 * T steps of a network of layers (pysnn.multistep.run_layers): an input neuron group, L layers
 * of LIF neurons (optionally with an adaptive threshold), event-driven connections between them,
 * and one-sample pair or triplet STDP on some connections. Per step t, exactly the calls the
 * modules' fused single steps make, in the step loop's order:
 *
 *   input:   trace update with the spikes x[t]                                    (pysnn_trace)
 *   layer k: for its connections c in order: out_c = spikes of c's presynaptic group (this
 *            step's if that group already stepped, else the previous step's; with a shared
 *            delay of d steps, the spikes arriving from c's ring (B, d + 1, n_in): its slot
 *            (ring_pos + t + 1) % (d + 1), d steps old, read into arrive (B, n_in) before
 *            these are written to slot (ring_pos + t) % (d + 1)) times the weight
 *            (pysnn_linear_event[_block]) + bias; through c's conductance synapse if it has one
 *            (g = MADD(g, a, out_c); out_c = min(g k, 1) (E_rev - v), v the layer's voltage before
 *            its step: pysnn.synapse.ConductanceSynapse); x_k = out_c1 + out_c2 + ... (left to
 *            right);
 *            LIF step with input x_k (pysnn_lif, threshold + theta), theta update (pysnn_theta)
 *   rules:   in order, each one of
 *            pair STDP rows (pysnn_stdp_rows) with the post group's spikes and trace, the pre
 *            group's trace and the spikes connection c read this step (kind 0), or
 *            triplet STDP (pysnn_triplet) with the post group's spikes, the spikes connection c
 *            read this step and the rule's own traces r1, r2, o1, o2 (kind 1)
 *
 * groups: (L + 1) * PYSNN_GF int64 (group 0 the input), see the G_* fields; conns: C * PYSNN_CF,
 * ordered by layer (layer k's connections are conn_lo[k - 1] .. conn_lo[k] - 1); rules:
 * R * PYSNN_RF, rates R * PYSNN_RATES doubles (lo, hi, then the rule's constants: a, b of the
 * pair rule; a2p, a3p, a2m, a3m, dp, dm, dx, dy of the triplet rule, whose rows are checked for
 * dirt once, before the first step: see pysnn_triplet). Spikes of group k live in its buffer
 * (2, B, n): step t writes half t % 2, the previous step's are in the other half (half 1 holds
 * the spikes before the first step). scratch: 2 * B * max n. active (C): active inputs added per
 * connection; changed (R): steps in which a rule changed a row. With check_nan, a NaN or an
 * infinity in x[t] or in a layer's input (x - x != 0) stops the run before that module steps:
 * *stop = the group (0: the input).
 * Returns the number of steps completed.
 */
enum { G_KIND, G_N, G_V, G_R, G_TRACE, G_THETA, G_TABLE, G_THETA_TABLE, G_ADDITIVE, G_SHARED,
       G_UPDATE, G_SPIKES, G_RECORD, G_RECORD_MODE, PYSNN_GF };
enum { C_PRE, C_POST, C_WT, C_BIAS, C_IN, C_OUT, C_SYN_G, C_SYN_A, C_SYN_K, C_SYN_E, C_RING,
       C_RING_LEN, C_RING_POS, C_ARRIVE, PYSNN_CF };
enum { R_CONN, R_PRE, R_POST, R_W, R_WT, R_BOUNDED, R_KIND, R_NEAREST, R_R1, R_R2, R_O1, R_O2,
       R_WORK, PYSNN_RF };
enum { PYSNN_RATES = 10 };

#define PYSNN_LAYERS(NAME, T, SUFFIX)                                                           \
    int64_t NAME(int64_t n_steps, int64_t batch, const T *x, int64_t n_layers,                  \
                 const int64_t *groups, const int64_t *conns, const int64_t *conn_lo,           \
                 int64_t n_rules, const int64_t *rules, const double *rates, T *scratch,        \
                 int64_t *active, int64_t *changed, int check_nan, int64_t block_rows,          \
                 int64_t n_threads, int64_t *stop)                                              \
    {                                                                                           \
        const int64_t *in = groups;                                                             \
        const int64_t n0 = in[G_N];                                                             \
        int64_t max_n = n0;                                                                     \
        for (int64_t k = 1; k <= n_layers; ++k)                                                 \
            max_n = groups[k * PYSNN_GF + G_N] > max_n ? groups[k * PYSNN_GF + G_N] : max_n;    \
        T *cur = scratch, *tmp = scratch + batch * max_n;                                       \
        const T *read[64];                                                                      \
        for (int64_t q = 0; q < n_rules; ++q) {                                                 \
            const int64_t *rq = rules + q * PYSNN_RF;                                           \
            const int64_t *ck = conns + rq[R_CONN] * PYSNN_CF;                                  \
            if (rq[R_KIND] == 1)                                                                \
                triplet_dirty_##SUFFIX(ck[C_OUT], ck[C_IN], (const T *)(intptr_t)rq[R_W],       \
                                       (int)rq[R_BOUNDED], (T)rates[q * PYSNN_RATES],           \
                                       (T)rates[q * PYSNN_RATES + 1],                           \
                                       (int64_t *)(intptr_t)rq[R_WORK]);                        \
        }                                                                                       \
        for (int64_t t = 0; t < n_steps; ++t) {                                                 \
            const T *xt = x + t * batch * n0;                                                   \
            if (check_nan)                                                                      \
                for (int64_t i = 0; i < batch * n0; ++i)                                        \
                    if (!(xt[i] - xt[i] == 0)) {                                                \
                        *stop = 0;                                                              \
                        return t;                                                               \
                    }                                                                           \
            T *trace0 = (T *)(intptr_t)in[G_TRACE];                                             \
            pysnn_trace_##SUFFIX(batch, n0, xt, trace0, trace0,                                 \
                                 (const int64_t *)(intptr_t)in[G_TABLE], (int)in[G_ADDITIVE]);  \
            for (int64_t k = 1; k <= n_layers; ++k) {                                           \
                const int64_t *gk = groups + k * PYSNN_GF;                                      \
                const int64_t n = gk[G_N];                                                      \
                int first = 1;                                                                  \
                for (int64_t c = conn_lo[k - 1]; c < conn_lo[k]; ++c) {                         \
                    const int64_t *ck = conns + c * PYSNN_CF;                                   \
                    const int64_t p = ck[C_PRE], n_in = ck[C_IN];                               \
                    const T *s = xt;                                                            \
                    if (p > 0) { /* this step's spikes if p already stepped, else the last's */ \
                        const T *buf = (const T *)(intptr_t)groups[p * PYSNN_GF + G_SPIKES];    \
                        s = buf + ((p < k ? t : t + 1) & 1) * batch * n_in;                     \
                    }                                                                           \
                    T *ring = (T *)(intptr_t)ck[C_RING];                                        \
                    if (ring) { /* shared delay: the ring of pysnn.connection.Connection._push */ \
                        const int64_t len = ck[C_RING_LEN], pos = (ck[C_RING_POS] + t) % len;   \
                        const int64_t old = (pos + 1) % len;                                    \
                        T *arrive = (T *)(intptr_t)ck[C_ARRIVE];                                \
                        for (int64_t b = 0; b < batch; ++b) {                                   \
                            T *rb = ring + b * len * n_in;                                      \
                            memcpy(arrive + b * n_in, rb + old * n_in, (size_t)n_in * sizeof(T)); \
                            memcpy(rb + pos * n_in, s + b * n_in, (size_t)n_in * sizeof(T));    \
                        }                                                                       \
                        s = arrive;                                                             \
                    }                                                                           \
                    read[c] = s;                                                                \
                    T *out = first ? cur : tmp;                                                 \
                    const T *wt = (const T *)(intptr_t)ck[C_WT];                                \
                    active[c] += batch >= block_rows                                            \
                        ? pysnn_linear_event_block_##SUFFIX(batch, n_in, n, s, wt, out,         \
                                                            n_threads, 0)                       \
                        : pysnn_linear_event_##SUFFIX(batch, n_in, n, s, wt, out, n_threads);   \
                    const T *bias = (const T *)(intptr_t)ck[C_BIAS];                            \
                    if (bias)                                                                   \
                        for (int64_t b = 0; b < batch; ++b)                                     \
                            for (int64_t i = 0; i < n; ++i)                                     \
                                out[b * n + i] = out[b * n + i] + bias[i];                      \
                    T *g = (T *)(intptr_t)ck[C_SYN_G];                                          \
                    if (g) { /* conductance synapse: g = addcmul(x, g, a); min(g k, 1) (E - v) */ \
                        const T *a = (const T *)(intptr_t)ck[C_SYN_A];                          \
                        const T *kk = (const T *)(intptr_t)ck[C_SYN_K];                         \
                        const T *e = (const T *)(intptr_t)ck[C_SYN_E];                          \
                        const T *vk = (const T *)(intptr_t)gk[G_V];                             \
                        for (int64_t b = 0; b < batch; ++b)                                     \
                            for (int64_t i = 0; i < n; ++i) {                                   \
                                const int64_t j = b * n + i;                                    \
                                const T gi = MADD(g[j], a[i], out[j]); /* torch.addcmul */      \
                                g[j] = gi;                                                      \
                                T f = gi * kk[i];                                               \
                                if (f > (T)1)                                                   \
                                    f = (T)1;                                                   \
                                out[j] = f * (e[i] - vk[j]);                                    \
                            }                                                                   \
                    }                                                                           \
                    if (!first)                                                                 \
                        for (int64_t i = 0; i < batch * n; ++i)                                 \
                            cur[i] = cur[i] + tmp[i];                                           \
                    first = 0;                                                                  \
                }                                                                               \
                if (first)                                                                      \
                    for (int64_t i = 0; i < batch * n; ++i)                                     \
                        cur[i] = (T)0;                                                          \
                if (check_nan)                                                                  \
                    for (int64_t i = 0; i < batch * n; ++i)                                     \
                        if (!(cur[i] - cur[i] == 0)) {                                          \
                            *stop = k;                                                          \
                            return t;                                                           \
                        }                                                                       \
                T *v = (T *)(intptr_t)gk[G_V], *tr = (T *)(intptr_t)gk[G_TRACE];                \
                int64_t *r = (int64_t *)(intptr_t)gk[G_R];                                      \
                T *theta = (T *)(intptr_t)gk[G_THETA];                                          \
                T *sk = (T *)(intptr_t)gk[G_SPIKES] + (t & 1) * batch * n;                      \
                pysnn_lif_##SUFFIX(1, batch, n, cur, v, r, tr, v, r, tr, sk, 0, 0, theta,       \
                                   gk[G_SHARED] ? 0 : n, (const int64_t *)(intptr_t)gk[G_TABLE], \
                                   (int)gk[G_ADDITIVE], 1);                                     \
                if (theta && gk[G_UPDATE])                                                      \
                    pysnn_theta_##SUFFIX(batch, n, sk, theta, (int)gk[G_SHARED],                \
                                         (const int64_t *)(intptr_t)gk[G_THETA_TABLE]);         \
                T *rec = (T *)(intptr_t)gk[G_RECORD];                                           \
                if (gk[G_RECORD_MODE] == 1)                                                     \
                    memcpy(rec + t * batch * n, sk, (size_t)(batch * n) * sizeof(T));           \
                else if (gk[G_RECORD_MODE] == 2)                                                \
                    for (int64_t i = 0; i < batch * n; ++i)                                     \
                        rec[i] = rec[i] + sk[i];                                                \
            }                                                                                   \
            for (int64_t q = 0; q < n_rules; ++q) {                                             \
                const int64_t *rq = rules + q * PYSNN_RF;                                       \
                const int64_t *post = groups + rq[R_POST] * PYSNN_GF;                           \
                const int64_t *pre = groups + rq[R_PRE] * PYSNN_GF;                             \
                const int64_t *ck = conns + rq[R_CONN] * PYSNN_CF;                              \
                const T *s_post = (const T *)(intptr_t)post[G_SPIKES] + (t & 1) * post[G_N];    \
                const double *rate = rates + PYSNN_RATES * q;                                   \
                T *w = (T *)(intptr_t)rq[R_W], *wt = (T *)(intptr_t)rq[R_WT];                   \
                if (rq[R_KIND] == 1)                                                            \
                    changed[q] += triplet_step_##SUFFIX(                                        \
                        ck[C_OUT], ck[C_IN], s_post, read[rq[R_CONN]], (T *)(intptr_t)rq[R_R1], \
                        (T *)(intptr_t)rq[R_R2], (T *)(intptr_t)rq[R_O1],                       \
                        (T *)(intptr_t)rq[R_O2], rate + 2, (int)rq[R_NEAREST], w, wt,           \
                        (int)rq[R_BOUNDED], (T)rate[0], (T)rate[1],                             \
                        (int64_t *)(intptr_t)rq[R_WORK]) > 0;                                   \
                else                                                                            \
                    changed[q] += pysnn_stdp_rows_##SUFFIX(                                     \
                        ck[C_OUT], ck[C_IN], s_post, (const T *)(intptr_t)post[G_TRACE],        \
                        (const T *)(intptr_t)pre[G_TRACE], read[rq[R_CONN]], rate[2], rate[3],  \
                        w, wt, (int)rq[R_BOUNDED], rate[0], rate[1]) > 0;                       \
            }                                                                                   \
        }                                                                                       \
        return n_steps;                                                                         \
    }

PYSNN_LAYERS(pysnn_layers_f32, float, f32)
PYSNN_LAYERS(pysnn_layers_f64, double, f64)

/* Frees memory the kernels allocated for the caller (the spike events of pysnn_recurrent). */
void pysnn_free(void *p) { free(p); }
