/* crc32c.c: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every bucket,
 * overflow record and trailer. Uses the SSE4.2 instruction when the CPU has it, otherwise a
 * slicing-by-8 table; both give identical results (tests check against a pure-Python version). */
#include <pthread.h>
#include <string.h>

#include "ltr_int.h"

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n)
{
    pthread_once(&table_once, table_init);
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^
            table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
/* Three interleaved streams hide the instruction's 3-cycle latency. Stream results are joined
 * with shift(s) = the raw CRC state after BLK zero bytes, a linear map applied by table. */
#define BLK 336 /* bytes per stream per round: 3 * 336 = 1008 */

static uint32_t shift_tab[4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static uint32_t zeros_soft(uint32_t c, size_t n)
{
    while (n--)
        c = (c >> 8) ^ table[0][c & 0xff];
    return c;
}

static void shift_init(void)
{
    pthread_once(&table_once, table_init);
    uint32_t basis[32];
    for (int i = 0; i < 32; i++)
        basis[i] = zeros_soft(1u << i, BLK);
    for (int j = 0; j < 4; j++)
        for (uint32_t v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (int i = 0; i < 8; i++)
                if (v & (1u << i))
                    r ^= basis[8 * j + i];
            shift_tab[j][v] = r;
        }
}

static inline uint32_t shift(uint32_t c)
{
    return shift_tab[0][c & 0xff] ^ shift_tab[1][(c >> 8) & 0xff] ^
           shift_tab[2][(c >> 16) & 0xff] ^ shift_tab[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t a = c;
    if (n >= 3 * BLK) {
        pthread_once(&shift_once, shift_init);
        do {
            uint64_t b = 0, d = 0, w;
            for (size_t i = 0; i < BLK; i += 8) {
                memcpy(&w, p + i, 8); /* x86 is little-endian, which is what CRC32C consumes */
                a = __builtin_ia32_crc32di(a, w);
                memcpy(&w, p + BLK + i, 8);
                b = __builtin_ia32_crc32di(b, w);
                memcpy(&w, p + 2 * BLK + i, 8);
                d = __builtin_ia32_crc32di(d, w);
            }
            a = shift(shift((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)d;
            p += 3 * BLK;
            n -= 3 * BLK;
        } while (n >= 3 * BLK);
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        a = __builtin_ia32_crc32di(a, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)a;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}

static int have_hw(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = __builtin_cpu_supports("sse4.2") != 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

int ltr_crc32c_impls(void)
{
#if defined(__x86_64__)
    return 1 << LTR_CRC_SOFT | have_hw() << LTR_CRC_HW;
#else
    return 1 << LTR_CRC_SOFT;
#endif
}

int ltr_crc32c_using(int impl, uint32_t crc, const uint8_t *data, size_t len, uint32_t *out)
{
    if (impl < 0 || impl > LTR_CRC_HW || !(ltr_crc32c_impls() >> impl & 1))
        return -1;
#if defined(__x86_64__)
    if (impl == LTR_CRC_HW) {
        *out = ~crc_hw(~crc, data, len);
        return 0;
    }
#endif
    *out = ~crc_soft(~crc, data, len);
    return 0;
}

uint32_t ltr_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (have_hw())
        return ~crc_hw(c, data, len);
#endif
    return ~crc_soft(c, data, len);
}
