/* Compiled decoder of Upstox Market Data Feed V3 frames: FeedResponse wire bytes -> domain Ticks.
 *
 * This is the hot path of `feed_protocol.decode_frame`; `feed_protocol._decode_ticks` (over the upb
 * parse) is the reference, and the tests check that the two agree on random and garbled frames.
 * It walks the protobuf wire format of MarketDataFeedV3.proto directly, in two phases:
 *
 * 1. Walk and validate the whole frame the way upb does (varints of at most 10 bytes, tags of
 *    at most 5 bytes and 32 bits, field number 0 refused outside groups, lengths inside their
 *    message, groups matched and nested at most to upb's depth limit, strict UTF-8 in string
 *    fields, wire types 6 and 7 refused), keeping the fields a Tick needs in C structs. Known
 *    fields with an unexpected wire type, and unknown fields, are skipped as upb skips them.
 *    Repeated occurrences of a message field merge, a oneof member replaces another, the last
 *    scalar wins, a later map entry replaces an earlier one with the same key: as upb parses.
 * 2. For an initial or live feed frame, build one Tick per instrument with a last price,
 *    exactly as `_decode_ticks` does (paise rounding, ltt-or-now, iv 0 -> None, greeks only when
 *    sent). Market-info frames, and feed frames that carry a marketInfo, are left to the Python
 *    path: `decode` returns None for them.
 *
 * A structural fault raises WireError; a price that is not a finite number raises the
 * ValueError or OverflowError the Python conversion raises. Nothing is read outside the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* upb's default recursion limit for parsing, as the protobuf Python runtime uses it. */
#define DEPTH_LIMIT 100
/* Entries decoded on the stack before the entry table moves to the heap. */
#define STACK_ENTRIES 16
#define N_TICK_FIELDS 17

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };
enum { FEED_NONE = 0, FEED_LTPC = 1, FEED_FULL = 2, FEED_GREEKS = 3 };
enum { FULL_NONE = 0, FULL_MARKET = 1, FULL_INDEX = 2 };
enum { TYPE_MARKET_INFO = 2 };

typedef struct {
    const char *error; /* static message of the first structural fault */
    Py_ssize_t offset; /* where it was found */
    const uint8_t *start;
} Ctx;

typedef struct {
    double ltp;
    int64_t ltt;
    int64_t ltq;
    double cp;
} Ltpc;

typedef struct {
    int64_t bid_q;
    double bid_p;
    int64_t ask_q;
    double ask_p;
} Quote;

typedef struct {
    double delta, theta, gamma, vega, rho;
} Greeks;

typedef struct {
    Ltpc ltpc;
    int has_quote; /* marketLevel.bidAskQuote has a first element */
    Quote quote;
    int has_greeks;
    Greeks greeks;
    int64_t vtt;
    double oi;
    double iv;
} MarketFF;

typedef struct {
    int which;
    MarketFF market;
    Ltpc index_ltpc;
} FullFeed;

typedef struct {
    Ltpc ltpc;
    int has_depth;
    Quote depth;
    int has_greeks;
    Greeks greeks;
    int64_t vtt;
    double oi;
    double iv;
} FirstLevel;

typedef struct {
    const uint8_t *key;
    Py_ssize_t key_len;
    int which;
    int replaced; /* a later entry has the same key */
    Ltpc ltpc;
    FullFeed full;
    FirstLevel first;
} Entry;

typedef struct {
    Entry *items;
    Py_ssize_t count;
    Py_ssize_t capacity;
    Entry stack[STACK_ENTRIES];
} Entries;

/* --- configuration (set once by feed_protocol at import) ------------------------------------- */

static PyTypeObject *tick_type = NULL;   /* domain.Tick */
static Py_ssize_t slot_offsets[N_TICK_FIELDS]; /* its slots, in _TICK_FIELDS order */
static int direct_slots = 0;             /* write the slots directly (else call make_tick) */
static PyObject *make_tick = NULL;       /* feed_protocol._make_tick */
static setter field_setters[N_TICK_FIELDS]; /* a compiled Tick's field setters, in order */
static void *field_closures[N_TICK_FIELDS];
static int use_setters = 0;              /* tp_new, then each field's setter */
static PyObject *empty_args = NULL;
static PyObject *py_to_paise = NULL;     /* feed_protocol.to_paise, for the cases it decides */
static PyObject *WireError = NULL;

/* --- wire primitives ------------------------------------------------------------------------- */

#define FAIL(ctx, at, msg)                                        \
    do {                                                          \
        (ctx)->error = (msg);                                     \
        (ctx)->offset = (Py_ssize_t)((at) - (ctx)->start);        \
        return NULL;                                              \
    } while (0)

#if defined(__GNUC__)
#define HOT_INLINE static inline __attribute__((always_inline))
#else
#define HOT_INLINE static inline
#endif

HOT_INLINE const uint8_t *
read_varint(Ctx *ctx, const uint8_t *p, const uint8_t *end, uint64_t *out)
{
    if (p < end && *p < 0x80) {
        *out = *p;
        return p + 1;
    }
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end)
            FAIL(ctx, p, "truncated varint");
        uint8_t b = *p++;
        value |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = value;
            return p;
        }
    }
    FAIL(ctx, p, "varint longer than 10 bytes");
}

/* A tag is a varint of at most 5 bytes whose value fits 32 bits. */
HOT_INLINE const uint8_t *
read_tag(Ctx *ctx, const uint8_t *p, const uint8_t *end, uint32_t *field, uint32_t *wire_type)
{
    uint64_t value = 0;
    if (p < end && *p < 0x80) {
        value = *p++;
    }
    else {
        int i = 0;
        for (;; i++) {
            if (i == 5)
                FAIL(ctx, p, "tag longer than 5 bytes");
            if (p >= end)
                FAIL(ctx, p, "truncated tag");
            uint8_t b = *p++;
            value |= (uint64_t)(b & 0x7f) << (7 * i);
            if (!(b & 0x80))
                break;
        }
        if (value > 0xffffffffu)
            FAIL(ctx, p, "tag wider than 32 bits");
    }
    *field = (uint32_t)(value >> 3);
    *wire_type = (uint32_t)(value & 7);
    return p;
}

HOT_INLINE const uint8_t *
read_len(Ctx *ctx, const uint8_t *p, const uint8_t *end, const uint8_t **sub_end)
{
    uint64_t len;
    p = read_varint(ctx, p, end, &len);
    if (p == NULL)
        return NULL;
    if (len > (uint64_t)(end - p))
        FAIL(ctx, p, "length beyond the end of its message");
    *sub_end = p + len;
    return p;
}

HOT_INLINE uint64_t
load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

HOT_INLINE const uint8_t *
read_double(Ctx *ctx, const uint8_t *p, const uint8_t *end, double *out)
{
    if (end - p < 8)
        FAIL(ctx, p, "truncated 64-bit field");
    uint64_t bits = load_le64(p);
    memcpy(out, &bits, sizeof bits);
    return p + 8;
}

static const uint8_t *skip_field(Ctx *ctx, const uint8_t *p, const uint8_t *end, uint32_t field,
                                 uint32_t wire_type, int depth);

/* The rest of a group opened by `field`: fields until the matching end-group tag. */
static const uint8_t *
skip_group(Ctx *ctx, const uint8_t *p, const uint8_t *end, uint32_t field, int depth)
{
    if (depth - 1 < 0)
        FAIL(ctx, p, "groups nested too deep");
    for (;;) {
        if (p >= end)
            FAIL(ctx, p, "unterminated group");
        uint32_t inner, wire_type;
        p = read_tag(ctx, p, end, &inner, &wire_type);
        if (p == NULL)
            return NULL;
        if (wire_type == WT_EGROUP) {
            if (inner != field)
                FAIL(ctx, p, "end of a group that is not open");
            return p;
        }
        p = skip_field(ctx, p, end, inner, wire_type, depth - 1);
        if (p == NULL)
            return NULL;
    }
}

/* Skip one field's value (unknown field, or known field with another wire type). */
static const uint8_t *
skip_field(Ctx *ctx, const uint8_t *p, const uint8_t *end, uint32_t field, uint32_t wire_type,
           int depth)
{
    uint64_t ignored;
    const uint8_t *sub_end;
    switch (wire_type) {
    case WT_VARINT:
        return read_varint(ctx, p, end, &ignored);
    case WT_I64:
        if (end - p < 8)
            FAIL(ctx, p, "truncated 64-bit field");
        return p + 8;
    case WT_LEN:
        p = read_len(ctx, p, end, &sub_end);
        return p == NULL ? NULL : sub_end;
    case WT_SGROUP:
        return skip_group(ctx, p, end, field, depth);
    case WT_I32:
        if (end - p < 4)
            FAIL(ctx, p, "truncated 32-bit field");
        return p + 4;
    case WT_EGROUP:
        FAIL(ctx, p, "end of a group that is not open");
    default:
        FAIL(ctx, p, "invalid wire type");
    }
}

/* Strict UTF-8, as upb checks proto3 string fields (no overlongs, surrogates or > U+10FFFF). */
static int
valid_utf8(const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t left = end - p;
        if (c >= 0xc2 && c <= 0xdf) {
            if (left < 2 || (p[1] & 0xc0) != 0x80)
                return 0;
            p += 2;
        }
        else if (c >= 0xe0 && c <= 0xef) {
            if (left < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
                return 0;
            if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f))
                return 0;
            p += 3;
        }
        else if (c >= 0xf0 && c <= 0xf4) {
            if (left < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
                (p[3] & 0xc0) != 0x80)
                return 0;
            if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
                return 0;
            p += 4;
        }
        else {
            return 0;
        }
    }
    return 1;
}

/* --- messages -------------------------------------------------------------------------------
 * Each parser reads one message occupying [p, end) into its struct (merging into what an earlier
 * occurrence left there) and returns `end`, or NULL on a fault. `depth` is what remains of the
 * nesting budget for this message; a sub-message or group needs at least 1 more.
 */

#define TAG_LOOP_BEGIN                                        \
    while (p < end) {                                         \
        uint32_t field, wire_type;                            \
        p = read_tag(ctx, p, end, &field, &wire_type);        \
        if (p == NULL)                                        \
            return NULL;                                      \
        if (field == 0)                                       \
            FAIL(ctx, p, "field number 0");

#define TAG_LOOP_END                                          \
        if (wire_type == WT_I64 && end - p >= 8) {            \
            p += 8;                                           \
            continue;                                         \
        }                                                     \
        if (wire_type == WT_VARINT) {                         \
            uint64_t skipped_;                                \
            p = read_varint(ctx, p, end, &skipped_);          \
            if (p == NULL)                                    \
                return NULL;                                  \
            continue;                                         \
        }                                                     \
        p = skip_field(ctx, p, end, field, wire_type, depth); \
        if (p == NULL)                                        \
            return NULL;                                      \
    }                                                         \
    return p;

/* A length-delimited sub-message: sets sub_end, checks the depth budget. */
#define SUB_MESSAGE(sub_end)                                  \
    if (depth - 1 < 0)                                        \
        FAIL(ctx, p, "messages nested too deep");             \
    p = read_len(ctx, p, end, &(sub_end));                    \
    if (p == NULL)                                            \
        return NULL;

#define READ_DOUBLE(dst)                                      \
    p = read_double(ctx, p, end, &(dst));                     \
    if (p == NULL)                                            \
        return NULL;

#define READ_INT64(dst)                                       \
    {                                                         \
        uint64_t v_;                                          \
        p = read_varint(ctx, p, end, &v_);                    \
        if (p == NULL)                                        \
            return NULL;                                      \
        (dst) = (int64_t)v_;                                  \
    }

#define CALL_SUB(call)                                        \
    p = (call);                                               \
    if (p == NULL)                                            \
        return NULL;

static const uint8_t *
parse_double_value(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth)
{
    double ignored;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_I64) {
        READ_DOUBLE(ignored);
        continue;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_ltpc(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Ltpc *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    switch (field) {
    case 1:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->ltp);
            continue;
        }
        break;
    case 2:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->ltt);
            continue;
        }
        break;
    case 3:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->ltq);
            continue;
        }
        break;
    case 4:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->cp);
            continue;
        }
        break;
    case 5: /* iep: google.protobuf.DoubleValue */
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_double_value(ctx, p, sub_end, depth - 1));
            continue;
        }
        break;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_quote(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Quote *out)
{
    TAG_LOOP_BEGIN
    switch (field) {
    case 1:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->bid_q);
            continue;
        }
        break;
    case 2:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->bid_p);
            continue;
        }
        break;
    case 3:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->ask_q);
            continue;
        }
        break;
    case 4:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->ask_p);
            continue;
        }
        break;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_greeks(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Greeks *out)
{
    TAG_LOOP_BEGIN
    if (wire_type == WT_I64 && field >= 1 && field <= 5) {
        double *dst = field == 1   ? &out->delta
                      : field == 2 ? &out->theta
                      : field == 3 ? &out->gamma
                      : field == 4 ? &out->vega
                                   : &out->rho;
        READ_DOUBLE(*dst);
        continue;
    }
    TAG_LOOP_END
}

/* MarketLevel: repeated Quote bidAskQuote = 1; only the first level is kept. */
static const uint8_t *
parse_market_level(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, MarketFF *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        Quote scratch = {0};
        Quote *target = out->has_quote ? &scratch : &out->quote;
        CALL_SUB(parse_quote(ctx, p, sub_end, depth - 1, target));
        out->has_quote = 1;
        continue;
    }
    TAG_LOOP_END
}

/* OHLC: validated only (string interval, doubles, int64s). */
static const uint8_t *
parse_ohlc(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        p = read_len(ctx, p, end, &sub_end);
        if (p == NULL)
            return NULL;
        if (!valid_utf8(p, sub_end))
            FAIL(ctx, p, "string field is not valid UTF-8");
        p = sub_end;
        continue;
    }
    TAG_LOOP_END
}

/* MarketOHLC: repeated OHLC ohlc = 1; validated only. */
static const uint8_t *
parse_market_ohlc(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        CALL_SUB(parse_ohlc(ctx, p, sub_end, depth - 1));
        continue;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_market_ff(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, MarketFF *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    switch (field) {
    case 1:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_ltpc(ctx, p, sub_end, depth - 1, &out->ltpc));
            continue;
        }
        break;
    case 2:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_market_level(ctx, p, sub_end, depth - 1, out));
            continue;
        }
        break;
    case 3:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_greeks(ctx, p, sub_end, depth - 1, &out->greeks));
            out->has_greeks = 1;
            continue;
        }
        break;
    case 4:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_market_ohlc(ctx, p, sub_end, depth - 1));
            continue;
        }
        break;
    case 6:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->vtt);
            continue;
        }
        break;
    case 7:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->oi);
            continue;
        }
        break;
    case 8:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->iv);
            continue;
        }
        break;
    }
    /* atp, tbq, tsq, iep, rp (doubles), ieq, iiqTotal, iiqM (int64), casEligible (bool): the
     * tick does not carry them, and skipping checks their wire form as reading would. */
    TAG_LOOP_END
}

static const uint8_t *
parse_index_ff(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Ltpc *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        CALL_SUB(parse_ltpc(ctx, p, sub_end, depth - 1, out));
        continue;
    }
    if (field == 2 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        CALL_SUB(parse_market_ohlc(ctx, p, sub_end, depth - 1));
        continue;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_full_feed(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, FullFeed *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        if (out->which != FULL_MARKET) {
            memset(&out->market, 0, sizeof out->market);
            out->which = FULL_MARKET;
        }
        CALL_SUB(parse_market_ff(ctx, p, sub_end, depth - 1, &out->market));
        continue;
    }
    if (field == 2 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        if (out->which != FULL_INDEX) {
            memset(&out->index_ltpc, 0, sizeof out->index_ltpc);
            out->which = FULL_INDEX;
        }
        CALL_SUB(parse_index_ff(ctx, p, sub_end, depth - 1, &out->index_ltpc));
        continue;
    }
    TAG_LOOP_END
}

static const uint8_t *
parse_first_level(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, FirstLevel *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    switch (field) {
    case 1:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_ltpc(ctx, p, sub_end, depth - 1, &out->ltpc));
            continue;
        }
        break;
    case 2:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_quote(ctx, p, sub_end, depth - 1, &out->depth));
            out->has_depth = 1;
            continue;
        }
        break;
    case 3:
        if (wire_type == WT_LEN) {
            SUB_MESSAGE(sub_end);
            CALL_SUB(parse_greeks(ctx, p, sub_end, depth - 1, &out->greeks));
            out->has_greeks = 1;
            continue;
        }
        break;
    case 4:
        if (wire_type == WT_VARINT) {
            READ_INT64(out->vtt);
            continue;
        }
        break;
    case 5:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->oi);
            continue;
        }
        break;
    case 6:
        if (wire_type == WT_I64) {
            READ_DOUBLE(out->iv);
            continue;
        }
        break;
    }
    TAG_LOOP_END
}

/* Feed: the FeedUnion oneof (a member replaces another; the same member again merges) and
 * requestMode (skipped: the tick does not need it). */
static const uint8_t *
parse_feed(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Entry *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (wire_type == WT_LEN && field >= 1 && field <= 3) {
        SUB_MESSAGE(sub_end);
        if (field == FEED_LTPC) {
            if (out->which != FEED_LTPC) {
                memset(&out->ltpc, 0, sizeof out->ltpc);
                out->which = FEED_LTPC;
            }
            CALL_SUB(parse_ltpc(ctx, p, sub_end, depth - 1, &out->ltpc));
        }
        else if (field == FEED_FULL) {
            if (out->which != FEED_FULL) {
                memset(&out->full, 0, sizeof out->full);
                out->which = FEED_FULL;
            }
            CALL_SUB(parse_full_feed(ctx, p, sub_end, depth - 1, &out->full));
        }
        else {
            if (out->which != FEED_GREEKS) {
                memset(&out->first, 0, sizeof out->first);
                out->which = FEED_GREEKS;
            }
            CALL_SUB(parse_first_level(ctx, p, sub_end, depth - 1, &out->first));
        }
        continue;
    }
    TAG_LOOP_END
}

/* One entry of map<string, Feed> feeds: key = 1, value = 2. */
static const uint8_t *
parse_entry(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth, Entry *out)
{
    const uint8_t *sub_end;
    TAG_LOOP_BEGIN
    if (field == 1 && wire_type == WT_LEN) {
        p = read_len(ctx, p, end, &sub_end);
        if (p == NULL)
            return NULL;
        if (!valid_utf8(p, sub_end))
            FAIL(ctx, p, "string field is not valid UTF-8");
        out->key = p;
        out->key_len = sub_end - p;
        p = sub_end;
        continue;
    }
    if (field == 2 && wire_type == WT_LEN) {
        SUB_MESSAGE(sub_end);
        CALL_SUB(parse_feed(ctx, p, sub_end, depth - 1, out));
        continue;
    }
    TAG_LOOP_END
}

static Entry *
new_entry(Entries *entries)
{
    if (entries->count == entries->capacity) {
        Py_ssize_t capacity = entries->capacity * 2;
        Entry *items;
        if (entries->items == entries->stack) {
            items = PyMem_Malloc((size_t)capacity * sizeof(Entry));
            if (items != NULL)
                memcpy(items, entries->stack, sizeof entries->stack);
        }
        else {
            items = PyMem_Realloc(entries->items, (size_t)capacity * sizeof(Entry));
        }
        if (items == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        entries->items = items;
        entries->capacity = capacity;
    }
    Entry *e = &entries->items[entries->count++];
    e->key = (const uint8_t *)"";
    e->key_len = 0;
    e->which = FEED_NONE;
    e->replaced = 0;
    return e;
}

/* Result of walking the top-level FeedResponse. */
typedef enum { WALK_OK, WALK_FAULT, WALK_NO_MEMORY, WALK_HAS_MARKET_INFO } Walk;

static Walk
parse_response(Ctx *ctx, const uint8_t *p, const uint8_t *end, Entries *entries,
               int32_t *type_number, int64_t *current_ts)
{
    const int depth = DEPTH_LIMIT;
    while (p < end) {
        uint32_t field, wire_type;
        const uint8_t *sub_end;
        uint64_t value;
        p = read_tag(ctx, p, end, &field, &wire_type);
        if (p == NULL)
            return WALK_FAULT;
        if (field == 0) {
            ctx->error = "field number 0";
            ctx->offset = p - ctx->start;
            return WALK_FAULT;
        }
        if (field == 1 && wire_type == WT_VARINT) {
            p = read_varint(ctx, p, end, &value);
            if (p == NULL)
                return WALK_FAULT;
            *type_number = (int32_t)(uint32_t)value; /* an enum is an int32 */
            continue;
        }
        if (field == 3 && wire_type == WT_VARINT) {
            p = read_varint(ctx, p, end, &value);
            if (p == NULL)
                return WALK_FAULT;
            *current_ts = (int64_t)value;
            continue;
        }
        if (field == 2 && wire_type == WT_LEN) {
            p = read_len(ctx, p, end, &sub_end);
            if (p == NULL)
                return WALK_FAULT;
            Entry *e = new_entry(entries);
            if (e == NULL)
                return WALK_NO_MEMORY;
            p = parse_entry(ctx, p, sub_end, depth - 1, e);
            if (p == NULL)
                return WALK_FAULT;
            continue;
        }
        if (field == 4 && wire_type == WT_LEN)
            return WALK_HAS_MARKET_INFO; /* the Python path decodes such frames */
        p = skip_field(ctx, p, end, field, wire_type, depth);
        if (p == NULL)
            return WALK_FAULT;
    }
    return WALK_OK;
}

/* --- ticks ----------------------------------------------------------------------------------- */

/* Mark entries whose key a later entry repeats (the map keeps the last one). */
static int
mark_replaced(Entries *entries)
{
    Py_ssize_t n = entries->count;
    if (n < 2)
        return 0;
    Py_ssize_t size = 16;
    while (size < 2 * n)
        size *= 2;
    Py_ssize_t small[64];
    Py_ssize_t *table = small;
    if (size > 64) {
        table = PyMem_Malloc((size_t)size * sizeof(Py_ssize_t));
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < size; i++)
        table[i] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Entry *e = &entries->items[i];
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (Py_ssize_t k = 0; k < e->key_len; k++)
            h = (h ^ e->key[k]) * 1099511628211ull;
        Py_ssize_t slot = (Py_ssize_t)(h & (uint64_t)(size - 1));
        for (;;) {
            Py_ssize_t j = table[slot];
            if (j < 0) {
                table[slot] = i;
                break;
            }
            Entry *other = &entries->items[j];
            if (other->key_len == e->key_len && memcmp(other->key, e->key, e->key_len) == 0) {
                other->replaced = 1;
                table[slot] = i;
                break;
            }
            slot = (slot + 1) & (size - 1);
        }
    }
    if (table != small)
        PyMem_Free(table);
    return 0;
}

/* to_paise: the fast cases here, everything near half a paisa, huge or not finite in Python. */
static PyObject *
paise(double rupees)
{
    double scaled = rupees * 100.0;
    int negative = 0;
    if (scaled < 0.0) {
        negative = 1;
        scaled = (-rupees) * 100.0;
    }
    if (scaled >= 0.0 && scaled < 4503599627370496.0) { /* 2**52: whole and frac exact */
        int64_t whole = (int64_t)scaled;
        double frac = scaled - (double)whole;
        if (frac < 0.4999 || frac > 0.5001) {
            if (frac > 0.5001)
                whole += 1;
            return PyLong_FromLongLong(negative ? -whole : whole);
        }
    }
    PyObject *value = PyFloat_FromDouble(rupees);
    if (value == NULL)
        return NULL;
    PyObject *result = PyObject_CallOneArg(py_to_paise, value);
    Py_DECREF(value);
    return result;
}

static PyObject *
int_or_none(int present, int64_t value)
{
    if (!present)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(value);
}

static PyObject *
float_or_none(int present, double value)
{
    if (!present)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(value);
}

/* The tick of one entry: appended to `ticks` unless the instrument has no last price. */
static int
append_tick(PyObject *ticks, const Entry *e, int64_t now)
{
    const Ltpc *ltpc;
    const Quote *quote = NULL;
    const Greeks *greeks = NULL;
    int rich = 0; /* full market feed or option greeks: volume, depth, oi, iv, greeks */
    int64_t vtt = 0;
    double oi = 0.0, iv = 0.0;
    if (e->which == FEED_LTPC) {
        ltpc = &e->ltpc;
    }
    else if (e->which == FEED_FULL && e->full.which == FULL_MARKET) {
        const MarketFF *m = &e->full.market;
        ltpc = &m->ltpc;
        rich = 1;
        quote = m->has_quote ? &m->quote : NULL;
        greeks = m->has_greeks ? &m->greeks : NULL;
        vtt = m->vtt;
        oi = m->oi;
        iv = m->iv;
    }
    else if (e->which == FEED_FULL) {
        ltpc = &e->full.index_ltpc; /* indexFF, or neither member: no last price */
    }
    else if (e->which == FEED_GREEKS) {
        const FirstLevel *f = &e->first;
        ltpc = &f->ltpc;
        rich = 1;
        quote = f->has_depth ? &f->depth : NULL;
        greeks = f->has_greeks ? &f->greeks : NULL;
        vtt = f->vtt;
        oi = f->oi;
        iv = f->iv;
    }
    else {
        return 0; /* no known member set: nothing to read */
    }
    if (ltpc->ltp == 0.0)
        return 0;

    PyObject *v[N_TICK_FIELDS] = {NULL};
    int ok = 0;
    int has_bid = quote != NULL && (quote->bid_p != 0.0 || quote->bid_q != 0);
    int has_ask = quote != NULL && (quote->ask_p != 0.0 || quote->ask_q != 0);
    /* Same evaluation order as _decode_ticks, so the first bad price is the one reported. */
    if ((v[6] = has_bid ? paise(quote->bid_p) : Py_NewRef(Py_None)) == NULL)
        goto done;
    if ((v[8] = int_or_none(has_bid, has_bid ? quote->bid_q : 0)) == NULL)
        goto done;
    if ((v[7] = has_ask ? paise(quote->ask_p) : Py_NewRef(Py_None)) == NULL)
        goto done;
    if ((v[9] = int_or_none(has_ask, has_ask ? quote->ask_q : 0)) == NULL)
        goto done;
    if ((v[0] = PyUnicode_DecodeUTF8((const char *)e->key, e->key_len, NULL)) == NULL)
        goto done;
    if ((v[1] = PyLong_FromLongLong(ltpc->ltt ? ltpc->ltt : now)) == NULL)
        goto done;
    if ((v[2] = paise(ltpc->ltp)) == NULL)
        goto done;
    if ((v[3] = PyLong_FromLongLong(ltpc->ltq)) == NULL)
        goto done;
    if ((v[4] = PyLong_FromLongLong(vtt)) == NULL)
        goto done;
    if ((v[5] = paise(ltpc->cp)) == NULL)
        goto done;
    if ((v[10] = rich ? PyLong_FromDouble(oi) : Py_NewRef(Py_None)) == NULL)
        goto done;
    if ((v[11] = float_or_none(rich && iv != 0.0, iv)) == NULL)
        goto done;
    if ((v[12] = float_or_none(greeks != NULL, greeks ? greeks->delta : 0.0)) == NULL ||
        (v[13] = float_or_none(greeks != NULL, greeks ? greeks->gamma : 0.0)) == NULL ||
        (v[14] = float_or_none(greeks != NULL, greeks ? greeks->theta : 0.0)) == NULL ||
        (v[15] = float_or_none(greeks != NULL, greeks ? greeks->vega : 0.0)) == NULL ||
        (v[16] = float_or_none(greeks != NULL, greeks ? greeks->rho : 0.0)) == NULL)
        goto done;

    PyObject *tick;
    if (use_setters) {
        tick = tick_type->tp_new(tick_type, empty_args, NULL);
        if (tick == NULL)
            goto done;
        for (int i = 0; i < N_TICK_FIELDS; i++) {
            if (field_setters[i](tick, v[i], field_closures[i]) < 0) {
                Py_DECREF(tick);
                tick = NULL;
                goto done;
            }
        }
    }
    else if (direct_slots) {
        tick = tick_type->tp_alloc(tick_type, 0);
        if (tick == NULL)
            goto done;
        for (int i = 0; i < N_TICK_FIELDS; i++) {
            *(PyObject **)((char *)tick + slot_offsets[i]) = v[i]; /* steals */
            v[i] = NULL;
        }
    }
    else {
        tick = PyObject_Vectorcall(make_tick, v, N_TICK_FIELDS, NULL);
        if (tick == NULL)
            goto done;
    }
    ok = PyList_Append(ticks, tick) == 0;
    Py_DECREF(tick);
done:
    for (int i = 0; i < N_TICK_FIELDS; i++)
        Py_XDECREF(v[i]);
    return ok ? 0 : -1;
}

/* --- module functions ------------------------------------------------------------------------ */

PyDoc_STRVAR(decode_doc,
"decode(data: bytes) -> tuple[int, int, list[Tick]] | None\n\n"
"Walk one FeedResponse: (type number, currentTs, ticks). Ticks are built only for type 0 and 1\n"
"(an empty list otherwise). None when the frame is a market-info frame or carries marketInfo:\n"
"decode those with the Python path. Raises WireError for malformed wire bytes, and ValueError\n"
"or OverflowError for a price that is not a finite number.");

static PyObject *
decode(PyObject *module, PyObject *arg)
{
    if (tick_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_v3_decoder.configure() was not called");
        return NULL;
    }
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, got %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const uint8_t *start = (const uint8_t *)PyBytes_AS_STRING(arg);
    const uint8_t *end = start + PyBytes_GET_SIZE(arg);
    Ctx ctx = {NULL, 0, start};
    Entries entries;
    entries.items = entries.stack;
    entries.count = 0;
    entries.capacity = STACK_ENTRIES;
    int32_t type_number = 0;
    int64_t now = 0;
    PyObject *result = NULL;
    PyObject *ticks = NULL;

    Walk walk = parse_response(&ctx, start, end, &entries, &type_number, &now);
    if (walk == WALK_FAULT) {
        PyErr_Format(WireError, "%s at byte %zd", ctx.error, ctx.offset);
        goto done;
    }
    if (walk == WALK_NO_MEMORY)
        goto done;
    if (walk == WALK_HAS_MARKET_INFO || type_number == TYPE_MARKET_INFO) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    ticks = PyList_New(0);
    if (ticks == NULL)
        goto done;
    if (type_number == 0 || type_number == 1) {
        if (mark_replaced(&entries) < 0)
            goto done;
        for (Py_ssize_t i = 0; i < entries.count; i++) {
            if (!entries.items[i].replaced && append_tick(ticks, &entries.items[i], now) < 0)
                goto done;
        }
    }
    result = Py_BuildValue("(iLO)", (int)type_number, (long long)now, ticks);
done:
    Py_XDECREF(ticks);
    if (entries.items != entries.stack)
        PyMem_Free(entries.items);
    return result;
}

PyDoc_STRVAR(configure_doc,
"configure(tick_type, slots, make_tick, to_paise) -> None\n\n"
"Set how ticks are built: `slots` is the tuple of Tick's member descriptors in _TICK_FIELDS\n"
"order (then the slots are written directly), the tuple of a compiled Tick's getset\n"
"descriptors (then tp_new builds it and each field's setter writes it), or None (then\n"
"make_tick(*values) is called). `to_paise` converts the prices the fast rounding leaves\n"
"undecided.");

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *type, *slots, *factory, *converter;
    if (!PyArg_ParseTuple(args, "O!OOO:configure", &PyType_Type, &type, &slots, &factory,
                          &converter))
        return NULL;
    if (!PyCallable_Check(factory) || !PyCallable_Check(converter)) {
        PyErr_SetString(PyExc_TypeError, "make_tick and to_paise must be callable");
        return NULL;
    }
    Py_ssize_t offsets[N_TICK_FIELDS] = {0};
    setter setters[N_TICK_FIELDS] = {0};
    void *closures[N_TICK_FIELDS] = {0};
    int direct = 0, by_setter = 0;
    if (slots != Py_None && PyTuple_Check(slots) && PyTuple_GET_SIZE(slots) == N_TICK_FIELDS &&
        Py_IS_TYPE(PyTuple_GET_ITEM(slots, 0), &PyGetSetDescr_Type)) {
        /* A compiled Tick: its fields are native, written by their getset setters. */
        for (Py_ssize_t i = 0; i < N_TICK_FIELDS; i++) {
            PyObject *d = PyTuple_GET_ITEM(slots, i);
            if (!Py_IS_TYPE(d, &PyGetSetDescr_Type) ||
                ((PyDescrObject *)d)->d_type != (PyTypeObject *)type ||
                ((PyGetSetDescrObject *)d)->d_getset->set == NULL) {
                PyErr_SetString(PyExc_TypeError,
                                "field descriptors must be writable getsets of the type");
                return NULL;
            }
            setters[i] = ((PyGetSetDescrObject *)d)->d_getset->set;
            closures[i] = ((PyGetSetDescrObject *)d)->d_getset->closure;
        }
        if (((PyTypeObject *)type)->tp_new == NULL) {
            PyErr_SetString(PyExc_TypeError, "the type cannot be instantiated");
            return NULL;
        }
        by_setter = 1;
    }
    else if (slots != Py_None) {
        if (!PyTuple_Check(slots) || PyTuple_GET_SIZE(slots) != N_TICK_FIELDS) {
            PyErr_SetString(PyExc_TypeError, "slots must be a tuple of 17 member descriptors");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < N_TICK_FIELDS; i++) {
            PyObject *d = PyTuple_GET_ITEM(slots, i);
            if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
                ((PyDescrObject *)d)->d_type != (PyTypeObject *)type) {
                PyErr_SetString(PyExc_TypeError, "slots must be member descriptors of the type");
                return NULL;
            }
            PyMemberDef *member = ((PyMemberDescrObject *)d)->d_member;
            if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
                PyErr_SetString(PyExc_TypeError, "slots must be writable object slots");
                return NULL;
            }
            offsets[i] = member->offset;
        }
        direct = 1;
    }
    Py_XSETREF(tick_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(make_tick, Py_NewRef(factory));
    Py_XSETREF(py_to_paise, Py_NewRef(converter));
    memcpy(slot_offsets, offsets, sizeof offsets);
    memcpy(field_setters, setters, sizeof setters);
    memcpy(field_closures, closures, sizeof closures);
    direct_slots = direct;
    use_setters = by_setter;
    if (empty_args == NULL && (empty_args = PyTuple_New(0)) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O, decode_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "upstox_bot.upstox._v3_decoder",
    "Compiled decoder of Upstox Market Data Feed V3 frames (see feed_protocol.decode_frame).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__v3_decoder(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    WireError = PyErr_NewExceptionWithDoc(
        "upstox_bot.upstox._v3_decoder.WireError",
        "The bytes are not a well-formed FeedResponse.", NULL, NULL);
    if (WireError == NULL || PyModule_AddObjectRef(module, "WireError", WireError) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
