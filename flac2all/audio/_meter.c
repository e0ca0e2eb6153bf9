/* The loudness meter's per-sample work in one pass over each chunk, loaded
 * by loudness.py through ctypes (which lets go of the GIL for each call):
 * the samples decoded to full scale 1.0, K-weighted by two second-order
 * sections per channel in double precision, their weighted squares summed
 * per 100 ms, and the true peak: every value the oversampling filter's
 * phases make, and the samples themselves. What loudness.py's numpy and
 * scipy passes do, without a pass over memory per operation.
 *
 * Plain C with no call into Python, built as the package's extension
 * module (setup.py) so that pip builds and installs it; it needs no Python
 * headers, and where they are there it also imports as an empty module.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANNELS 8
#define MAX_PHASES 4
#define MAX_LENGTH 32 /* the samples one interpolated value is made of (25 when oversampled twice) */
#define BLOCK 256     /* interpolated values made at a time, per phase */

typedef double pair __attribute__((vector_size(16))); /* two channels' doubles, one operation */

struct meter {
    int channels, width, floating, phases, length;
    int wide;               /* which of the AVX2 loops interpolates (0: the portable one) */
    long step;              /* samples in 100 ms */
    double sos[2][5];       /* per section b0 b1 b2 a1 a2 (a0 = 1) */
    double weight[MAX_CHANNELS];
    double z[MAX_CHANNELS][2][2];
    float bank[MAX_PHASES][MAX_LENGTH]; /* each phase's weights of its samples, oldest first */
    pair energy[MAX_CHANNELS / 2]; /* per two channels, their weighted squares in the unfinished 100 ms */
    long filled;            /* the samples of the unfinished 100 ms */
    float peak;
    float *lanes;           /* per channel: length - 1 samples kept, then the chunk's */
    long room;              /* frames the lanes hold past the kept samples */
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* ``largest``'s interpolation with AVX2 and FMA, where the processor has
 * them (``meter_new`` asks it): 16 values of each phase at a time, each
 * sample loaded once for all phases, the sums kept in registers. About four
 * times as fast as the portable loop. */
#define WIDE 1
typedef float floats8 __attribute__((vector_size(32)));
typedef int bits8 __attribute__((vector_size(32)));

/* 16 values of each phase, from ``x`` on, into ``sum``. */
__attribute__((target("avx2,fma"), always_inline)) static inline void wide_block(const float bank[][MAX_LENGTH],
                                                                                  const int phases, const int length,
                                                                                  const float *x,
                                                                                  floats8 sum[MAX_PHASES][2])
{
    for (int p = 0; p < phases; p++)
        sum[p][0] = sum[p][1] = (floats8){0};
    for (int j = 0; j < length; j++) {
        floats8 x0, x1;
        memcpy(&x0, x + j, sizeof x0);
        memcpy(&x1, x + j + 8, sizeof x1);
        for (int p = 0; p < phases; p++) {
            sum[p][0] += bank[p][j] * x0;
            sum[p][1] += bank[p][j] * x1;
        }
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline float wide_peak(const float bank[][MAX_LENGTH],
                                                                                  const int phases, const int length,
                                                                                  const float *row, long frames,
                                                                                  float top)
{
    floats8 sum[MAX_PHASES][2];
    bits8 best = {0};
    long i = 0;
    for (; i + 16 <= frames; i += 16) {
        wide_block(bank, phases, length, row + i, sum);
        for (int p = 0; p < phases; p++)
            for (int h = 0; h < 2; h++) {
                /* magnitudes as their bits: ordered as the floats are */
                bits8 v = (bits8)sum[p][h] & 0x7fffffff, more = v > best;
                best = (v & more) | (best & ~more);
            }
    }
    for (int k = 0; k < 8; k++) {
        float v;
        memcpy(&v, (const int *)&best + k, sizeof v);
        top = v > top ? v : top;
    }
    if (i < frames) {
        /* the last values made as the others are (the same rounding,
         * whatever the chunks), from samples padded with zeros */
        float x[16 + MAX_LENGTH] = {0}, made[MAX_PHASES][16];
        memcpy(x, row + i, sizeof(float) * (size_t)(frames - i + length - 1));
        wide_block(bank, phases, length, x, sum);
        memcpy(made, sum, sizeof(float) * 16 * (size_t)phases);
        for (int p = 0; p < phases; p++)
            for (long k = 0; k < frames - i; k++) {
                float v = fabsf(made[p][k]);
                top = v > top ? v : top;
            }
    }
    return top;
}

/* The two shapes of the filter: three phases of 13 samples (below 96 kHz),
 * one of 25 (below 192 kHz); constant, so that the loops unroll. */
__attribute__((target("avx2,fma"))) static float wide_four(const float bank[][MAX_LENGTH], const float *row,
                                                            long frames, float top)
{
    return wide_peak(bank, 3, 13, row, frames, top);
}

__attribute__((target("avx2,fma"))) static float wide_two(const float bank[][MAX_LENGTH], const float *row,
                                                           long frames, float top)
{
    return wide_peak(bank, 1, 25, row, frames, top);
}

static int wide_shape(int phases, int length)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return 0;
    return phases == 3 && length == 13 ? 4 : phases == 1 && length == 25 ? 2 : 0;
}
#else
static int wide_shape(int phases, int length)
{
    (void)phases, (void)length;
    return 0;
}
#endif

void meter_free(struct meter *m)
{
    if (m) {
        free(m->lanes);
        free(m);
    }
}

/* A meter, or NULL for arguments out of range or no memory. ``sos``: two
 * sections of b0 b1 b2 a0 a1 a2; ``bank``: ``phases`` rows of ``length``
 * weights; ``wide``: 0 not to use AVX2 even where the processor has it. */
struct meter *meter_new(int channels, int width, int floating, long step, const double *sos, const double *weight,
                        int phases, int length, const float *bank, int wide)
{
    if (channels < 1 || channels > MAX_CHANNELS || width < 1 || width > 4 || step < 1 || phases < 0 ||
        phases > MAX_PHASES || length < 1 || length > MAX_LENGTH)
        return NULL;
    /* aligned for its vectors (malloc aligns only to 8 on 32-bit platforms);
     * its size is a multiple of its alignment, as aligned_alloc asks */
    struct meter *m = aligned_alloc(_Alignof(struct meter), sizeof *m);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->channels = channels;
    m->width = width;
    m->floating = floating;
    m->step = step;
    m->phases = phases;
    m->length = length;
    for (int s = 0; s < 2; s++) {
        const double *c = sos + 6 * s;
        double b0 = c[0] / c[3], b1 = c[1] / c[3], b2 = c[2] / c[3], a1 = c[4] / c[3], a2 = c[5] / c[3];
        double row[5] = {b0, b1, b2, a1, a2};
        memcpy(m->sos[s], row, sizeof row);
    }
    for (int c = 0; c < channels; c++)
        m->weight[c] = weight[c];
    for (int p = 0; p < phases; p++)
        for (int j = 0; j < length; j++)
            m->bank[p][j] = bank[p * length + j];
    m->wide = wide ? wide_shape(phases, length) : 0;
    return m;
}

double meter_peak(const struct meter *m) { return m->peak; }

/* Raised with any change of the arguments of these functions: cmeter.py
 * refuses a library built from another version of this file. */
int meter_abi(void) { return 1; }

static int make_room(struct meter *m, long frames)
{
    if (frames <= m->room)
        return 1;
    long kept = m->length - 1, room = frames + frames / 2;
    float *lanes = malloc(sizeof(float) * (size_t)m->channels * (size_t)(kept + room));
    if (!lanes)
        return 0;
    for (int c = 0; c < m->channels; c++) {
        if (m->lanes)
            memcpy(lanes + c * (kept + room), m->lanes + c * (kept + m->room), sizeof(float) * (size_t)kept);
        else
            memset(lanes + c * (kept + room), 0, sizeof(float) * (size_t)kept);
    }
    free(m->lanes);
    m->lanes = lanes;
    m->room = room;
    return 1;
}

/* The interleaved little-endian samples into one row a channel. */
static void decode(const struct meter *m, const unsigned char *data, long frames, float *rows, long stride)
{
    const int channels = m->channels, width = m->width;
    for (int c = 0; c < channels; c++) {
        float *row = rows + c * stride;
        const unsigned char *p = data + c * width;
        const long step = (long)channels * width;
        if (m->floating) {
            for (long i = 0; i < frames; i++, p += step) {
                float v;
                uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
                memcpy(&v, &u, sizeof v);
                row[i] = v;
            }
        } else if (width == 1) {
            for (long i = 0; i < frames; i++, p += step)
                row[i] = (float)((int)p[0] - 128) * (1.0f / 128);
        } else if (width == 2) {
            for (long i = 0; i < frames; i++, p += step)
                row[i] = (float)(int16_t)(p[0] | p[1] << 8) * (1.0f / 32768);
        } else if (width == 3) {
            for (long i = 0; i < frames; i++, p += step)
                row[i] = (float)(int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 24) *
                         (1.0f / 2147483648.0f);
        } else {
            for (long i = 0; i < frames; i++, p += step)
                row[i] = (float)(int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                          (uint32_t)p[3] << 24) *
                         (1.0f / 2147483648.0f);
        }
    }
}

/* Two channels' samples through their two sections (transposed direct form
 * II) at once, as one vector of two doubles, their squares times
 * ``weight`` added to ``*energy``. */
static void weigh_pair(const double sos[2][5], double z0[2][2], double z1[2][2], pair weight, const float *x0,
                       const float *x1, long frames, pair *energy)
{
    const double b00 = sos[0][0], b01 = sos[0][1], b02 = sos[0][2], a01 = sos[0][3], a02 = sos[0][4];
    const double b10 = sos[1][0], b11 = sos[1][1], b12 = sos[1][2], a11 = sos[1][3], a12 = sos[1][4];
    pair z01 = {z0[0][0], z1[0][0]}, z02 = {z0[0][1], z1[0][1]};
    pair z11 = {z0[1][0], z1[1][0]}, z12 = {z0[1][1], z1[1][1]};
    pair sum = *energy;
    for (long i = 0; i < frames; i++) {
        pair v = {x0[i], x1[i]};
        pair y = b00 * v + z01;
        z01 = b01 * v - a01 * y + z02;
        z02 = b02 * v - a02 * y;
        pair w = b10 * y + z11;
        z11 = b11 * y - a11 * w + z12;
        z12 = b12 * y - a12 * w;
        sum += weight * w * w;
    }
    z0[0][0] = z01[0], z1[0][0] = z01[1];
    z0[0][1] = z02[0], z1[0][1] = z02[1];
    z0[1][0] = z11[0], z1[1][0] = z11[1];
    z0[1][1] = z12[0], z1[1][1] = z12[1];
    *energy = sum;
}

/* The largest magnitude in ``x`` and ``top``: eight running maxima, which
 * the compiler makes one vector operation (a max over floats in the order
 * given is not reordered for it otherwise). */
static float magnitude(const float *x, long n, float top)
{
    float lane[8] = {top, top, top, top, top, top, top, top};
    long i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float a = fabsf(x[i + k]);
            lane[k] = a > lane[k] ? a : lane[k];
        }
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        lane[0] = a > lane[0] ? a : lane[0];
    }
    for (int k = 1; k < 8; k++)
        lane[0] = lane[k] > lane[0] ? lane[k] : lane[0];
    return lane[0];
}

/* The largest magnitude of the samples of ``row`` (``kept`` earlier ones
 * first) and of every value the phases interpolate from them. */
static float largest(const struct meter *m, const float *row, long frames)
{
    const long kept = m->length - 1;
    float top = magnitude(row + kept, frames, 0);
#ifdef WIDE
    if (m->wide == 4)
        return wide_four(m->bank, row, frames, top);
    if (m->wide == 2)
        return wide_two(m->bank, row, frames, top);
#endif
    float made[BLOCK];
    for (int p = 0; p < m->phases; p++) {
        const float *w = m->bank[p];
        for (long start = 0; start < frames; start += BLOCK) {
            long n = frames - start < BLOCK ? frames - start : BLOCK;
            const float *x = row + start;
            for (long i = 0; i < n; i++)
                made[i] = w[0] * x[i];
            for (int j = 1; j < m->length; j++) {
                const float wj = w[j];
                const float *xj = x + j;
                for (long i = 0; i < n; i++)
                    made[i] += wj * xj[i];
            }
            top = magnitude(made, n, top);
        }
    }
    return top;
}

/* Measures ``frames`` interleaved frames of ``data``; writes the energy sum
 * of each 100 ms it completes to ``sums`` (room for frames / step + 1) and
 * returns how many, or -1 without memory. */
long meter_feed(struct meter *m, const unsigned char *data, long frames, double *sums)
{
    if (frames <= 0)
        return 0;
    if (!make_room(m, frames))
        return -1;
    const long kept = m->length - 1, stride = kept + m->room;
    const double(*sos)[5] = (const double(*)[5])m->sos;
    float *lanes = m->lanes;
    decode(m, data, frames, lanes + kept, stride);
    long made = 0;
    /* By 100 ms, each channel's squares summed in the order of its samples
     * whatever the chunks, so that the result does not depend on them. */
    for (long done = 0, n; done < frames; done += n) {
        n = m->step - m->filled < frames - done ? m->step - m->filled : frames - done;
        for (int c = 0; c < m->channels; c += 2) {
            const float *row = lanes + c * stride + kept + done;
            if (c + 1 < m->channels) {
                pair weight = {m->weight[c], m->weight[c + 1]};
                weigh_pair(sos, m->z[c], m->z[c + 1], weight, row, row + stride, n, &m->energy[c / 2]);
            } else { /* the last of an odd number: beside a copy of itself that weighs nothing */
                double spare[2][2];
                memcpy(spare, m->z[c], sizeof spare);
                weigh_pair(sos, m->z[c], spare, (pair){m->weight[c], 0}, row, row, n, &m->energy[c / 2]);
            }
        }
        m->filled += n;
        if (m->filled == m->step) {
            double sum = 0;
            for (int c = 0; c < m->channels; c += 2) {
                sum += m->energy[c / 2][0] + m->energy[c / 2][1];
                m->energy[c / 2] = (pair){0, 0};
            }
            sums[made++] = sum;
            m->filled = 0;
        }
    }
    float peak = m->peak;
    for (int c = 0; c < m->channels; c++) {
        float *row = lanes + c * stride;
        float top = largest(m, row, frames);
        peak = top > peak ? top : peak;
        memmove(row, row + frames, sizeof(float) * (size_t)kept); /* the next chunk's earlier samples */
    }
    m->peak = peak;
    return made;
}

#if defined(__has_include)
#if __has_include(<Python.h>)
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_meter", "The loudness meter's C loop (used through ctypes).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__meter(void) { return PyModule_Create(&module); }
#endif
#endif
