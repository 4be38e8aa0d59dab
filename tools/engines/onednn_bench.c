// EfficientNet-Lite0 forward pass (random weights) built from oneDNN 2.6 primitives.
//
// Build:  gcc -O2 tools/engines/onednn_bench.c -ldnnl -lm -o /tmp/onednn_bench
// Run:    /tmp/onednn_bench [--layout any|nhwc|nChw16c|nChw8c] [--threads 1,2] [--batch 1,16]
//                           [--secs 1.0] [--rounds 3] [--warmup 0.3] [--profile] [--impls]
//
// Graph (TF SAME padding, BN folded into conv bias, ReLU6 = eltwise clip(0,6) post-op,
// residual add = sum post-op on the projection conv, depthwise = grouped conv,
// head 1x1 -> 1280 + ReLU6, global average pool via pooling_avg).
// Weights always use format_tag any. Activations: layout=any: format_tag any (oneDNN 2.6 on
// avx512_core then picks nhwc + brgemm kernels); layout=nhwc: plain nhwc; layout=nChw16c /
// nChw8c: that blocked layout forced (jit direct / 1x1 / dw kernels).
// Weights are reordered once, outside the timed loop. The input is a user nhwc tensor and the
// output a user {N,1280} tensor; any reorders to/from them are inside the timed loop.
// Threads are set with omp_set_num_threads (found with dlsym: the build line has no -fopenmp)
// before the network is built; the measured cpu-time/wall-time ratio is printed as a check.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "oneapi/dnnl/dnnl.h"

#define CHECK(f)                                                                       \
    do {                                                                               \
        dnnl_status_t s_ = (f);                                                        \
        if (s_ != dnnl_success) {                                                      \
            fprintf(stderr, "%s:%d: %s failed, status %d\n", __FILE__, __LINE__, #f,   \
                    (int)s_);                                                          \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

enum { CAT_REORDER, CAT_STEM, CAT_EXPAND, CAT_DW, CAT_PROJECT, CAT_HEAD, CAT_POOL, NCAT };
static const char *cat_name[NCAT] = {"reorder(act)", "stem 3x3", "expand 1x1", "depthwise",
                                     "project 1x1", "head 1x1", "avgpool"};

#define MAX_STEPS 128
#define MAX_TENSORS 128

typedef struct {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[6];
    int cat;
} step_t;

typedef struct {
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
    int buf; // -1 user input, -2 user output, 0..2 shared activation buffers
    int c, h, w;
} tensor_t;

typedef struct {
    int layout; // L_*
    int N;
    step_t steps[MAX_STEPS];
    int nsteps;
    tensor_t t[MAX_TENSORS];
    int nt;
    dnnl_memory_t owned[4 * MAX_STEPS]; // weights/bias memories
    int nowned;
    void *bufs[3];
    size_t bufsz[3];
    void *in_ptr, *out_ptr;
    double macs, params;
    double wreorder_s; // one-time weight reorder execution time
    int act_reorders, src_any_mismatch;
    char impls[2048];
} net_t;

static dnnl_engine_t eng;
static dnnl_stream_t strm;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static double cpu_time(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec + ru.ru_stime.tv_sec +
           1e-6 * ru.ru_stime.tv_usec;
}
static float frand(void) { // uniform [0,1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0));
}

// Short layout name of an activation md: nchw / nhwc / nChw16c / nChw8c / ...
static void md_name(const dnnl_memory_desc_t *md, char *out, size_t len) {
    if (md->format_kind != dnnl_blocked) { snprintf(out, len, "kind%d", (int)md->format_kind); return; }
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    const char *order = b->strides[1] == 1 || (md->ndims == 4 && b->strides[1] < b->strides[3] && b->inner_nblks == 0) ? "nhwc" : "nchw";
    if (b->inner_nblks == 1 && b->inner_idxs[0] == 1) snprintf(out, len, "nChw%dc", (int)b->inner_blks[0]);
    else if (b->inner_nblks == 0) snprintf(out, len, "%s", order);
    else snprintf(out, len, "blk%d", (int)b->inner_nblks);
}

static void note_impl(net_t *n, const_dnnl_primitive_desc_t pd) {
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return;
    char key[80];
    snprintf(key, sizeof key, "%s;", s);
    if (!strstr(n->impls, key) && strlen(n->impls) + strlen(key) < sizeof n->impls - 1)
        strcat(n->impls, key);
}

static void add_step(net_t *n, dnnl_primitive_desc_t pd, int cat, int nargs,
                     const dnnl_exec_arg_t *args) {
    step_t *s = &n->steps[n->nsteps++];
    CHECK(dnnl_primitive_create(&s->prim, pd));
    note_impl(n, pd);
    s->cat = cat;
    s->nargs = nargs;
    memcpy(s->args, args, nargs * sizeof *args);
}

static int new_tensor(net_t *n, const dnnl_memory_desc_t *md, int buf, int c, int h, int w) {
    tensor_t *t = &n->t[n->nt];
    t->md = *md;
    t->buf = buf;
    t->c = c, t->h = h, t->w = w;
    CHECK(dnnl_memory_create(&t->mem, md, eng, DNNL_MEMORY_NONE));
    return n->nt++;
}

enum { L_ANY, L_NHWC, L_NCHW16C, L_NCHW8C };
static const char *layout_name[] = {"any", "nhwc", "nChw16c", "nChw8c"};
static const dnnl_format_tag_t layout_tag[] = {dnnl_format_tag_any, dnnl_nhwc, dnnl_nChw16c,
                                               dnnl_nChw8c};

// Activation md: user=1 -> plain nhwc (the user's input/output), user=2 -> format any,
// else the layout of the mode.
static void act_md(net_t *n, dnnl_memory_desc_t *md, int c, int h, int w, int user) {
    dnnl_dims_t d = {n->N, c, h, w};
    dnnl_format_tag_t tag = user == 1 ? dnnl_nhwc : user == 2 ? dnnl_format_tag_any
                                                              : layout_tag[n->layout];
    CHECK(dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, tag));
}

// Plain user weights (random, scaled by 1/sqrt(fan_in)) reordered once into the layout the
// primitive wants.
static dnnl_memory_t make_weights(net_t *n, const dnnl_memory_desc_t *want, int ndims,
                                  const dnnl_dims_t dims, dnnl_format_tag_t tag, int fan_in) {
    dnnl_memory_desc_t user_md;
    CHECK(dnnl_memory_desc_init_by_tag(&user_md, ndims, dims, dnnl_f32, tag));
    dnnl_memory_t user;
    CHECK(dnnl_memory_create(&user, &user_md, eng, DNNL_MEMORY_ALLOCATE));
    float *p;
    CHECK(dnnl_memory_get_data_handle(user, (void **)&p));
    size_t cnt = dnnl_memory_desc_get_size(&user_md) / sizeof(float);
    float a = sqrtf(3.0f / (float)fan_in);
    for (size_t i = 0; i < cnt; i++) p[i] = (2.0f * frand() - 1.0f) * a;
    n->params += (double)cnt;
    if (dnnl_memory_desc_equal(&user_md, want)) return user;
    dnnl_memory_t dst;
    CHECK(dnnl_memory_create(&dst, want, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, &user_md, eng, want, eng, NULL));
    dnnl_primitive_t r;
    CHECK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t a2[2] = {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, dst}};
    double t0 = now();
    CHECK(dnnl_primitive_execute(r, strm, 2, a2));
    CHECK(dnnl_stream_wait(strm));
    n->wreorder_s += now() - t0;
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(user);
    return dst;
}

// Adds a reorder step from tensor `src` to a new tensor with layout `md` in buffer `buf`.
static int add_reorder(net_t *n, int src, const dnnl_memory_desc_t *md, int buf) {
    tensor_t *s = &n->t[src];
    int dst = new_tensor(n, md, buf, s->c, s->h, s->w);
    dnnl_primitive_desc_t rpd;
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, &s->md, eng, md, eng, NULL));
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, n->t[src].mem}, {DNNL_ARG_TO, n->t[dst].mem}};
    add_step(n, rpd, CAT_REORDER, 2, a);
    dnnl_primitive_desc_destroy(rpd);
    n->act_reorders++;
    return dst;
}

// Convolution (k x k, stride, groups) with bias, optional ReLU6, optional residual sum into
// tensor `res` (the projection writes in place into the residual tensor's buffer).
// Returns the output tensor index. `out_buf`: buffer for the output (ignored when res >= 0).
static int add_conv(net_t *n, int in, int oc, int k, int stride, int groups, int relu6,
                    int res, int out_buf, int cat) {
    tensor_t *ti = &n->t[in];
    int ic = ti->c, ih = ti->h, iw = ti->w;
    int oh = (ih + stride - 1) / stride, ow = (iw + stride - 1) / stride;
    int ph = (oh - 1) * stride + k - ih, pw = (ow - 1) * stride + k - iw;
    if (ph < 0) ph = 0;
    if (pw < 0) pw = 0;
    dnnl_dims_t strides = {stride, stride}, pl = {ph / 2, pw / 2}, pr = {ph - ph / 2, pw - pw / 2};

    dnnl_memory_desc_t src_md, w_md, b_md, dst_md;
    // layout any: every conv asks for `any` src/dst; if a conv would want a src layout other
    // than its producer's, it is re-created with the producer's layout (counted in
    // src_any_mismatch), so there are no reorders between convs.
    // fixed layouts: src = producer's layout, dst = the mode's tag; the stem asks for `any`
    // src in blocked modes (the user nhwc input is then reordered inside the loop if needed).
    if (n->layout == L_ANY || (cat == CAT_STEM && n->layout != L_NHWC))
        act_md(n, &src_md, ic, ih, iw, 2);
    else src_md = ti->md;
    if (res >= 0) dst_md = n->t[res].md;
    else act_md(n, &dst_md, oc, oh, ow, 0);
    dnnl_dims_t wd4 = {oc, ic, k, k}, wd5 = {groups, oc / groups, ic / groups, k, k};
    if (groups == 1) CHECK(dnnl_memory_desc_init_by_tag(&w_md, 4, wd4, dnnl_f32, dnnl_format_tag_any));
    else CHECK(dnnl_memory_desc_init_by_tag(&w_md, 5, wd5, dnnl_f32, dnnl_format_tag_any));
    dnnl_dims_t bd = {oc};
    CHECK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));

    dnnl_post_ops_t po;
    CHECK(dnnl_post_ops_create(&po));
    if (res >= 0) CHECK(dnnl_post_ops_append_sum(po, 1.0f));
    if (relu6) CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, 0.0f, 6.0f));
    dnnl_primitive_attr_t attr;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, po));

    dnnl_primitive_desc_t pd = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        dnnl_convolution_desc_t cd;
        CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                 dnnl_convolution_direct, &src_md, &w_md,
                                                 &b_md, &dst_md, strides, pl, pr));
        CHECK(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
        const dnnl_memory_desc_t *got = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        if (dnnl_memory_desc_equal(got, &ti->md) || cat == CAT_STEM || attempt == 1) break;
        n->src_any_mismatch++;
        dnnl_primitive_desc_destroy(pd);
        src_md = ti->md;
    }
    const dnnl_memory_desc_t *got_src = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    if (!dnnl_memory_desc_equal(got_src, &ti->md)) {
        // only the stem (from the user nhwc input) should get here
        in = add_reorder(n, in, got_src, 0);
        ti = &n->t[in];
    }
    const dnnl_memory_desc_t *got_w = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t wm = groups == 1
                           ? make_weights(n, got_w, 4, wd4, dnnl_oihw, ic * k * k)
                           : make_weights(n, got_w, 5, wd5, dnnl_goihw, (ic / groups) * k * k);
    dnnl_memory_t bm = make_weights(n, &b_md, 1, bd, dnnl_x, 16);
    n->owned[n->nowned++] = wm;
    n->owned[n->nowned++] = bm;

    int out;
    if (res >= 0) out = res;
    else {
        const dnnl_memory_desc_t *got_dst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        out = new_tensor(n, got_dst, out_buf, oc, oh, ow);
    }
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, n->t[in].mem},
                            {DNNL_ARG_WEIGHTS, wm},
                            {DNNL_ARG_BIAS, bm},
                            {DNNL_ARG_DST, n->t[out].mem}};
    add_step(n, pd, cat, 4, a);
    n->macs += (double)oh * ow * oc * (ic / groups) * k * k;
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    dnnl_post_ops_destroy(po);
    return out;
}

static void build(net_t *n, int N, int layout) {
    memset(n, 0, sizeof *n);
    rng = 0x9E3779B97F4A7C15ull; // same weights/input for every build (see ort_lite0_random.py --check)
    n->N = N;
    n->layout = layout;
    dnnl_memory_desc_t md;
    act_md(n, &md, 3, 224, 224, 1);
    int x = new_tensor(n, &md, -1, 3, 224, 224);
    int c = 1; // buffer of the current tensor; the 3 buffers rotate
    x = add_conv(n, x, 32, 3, 2, 1, 1, -1, c, CAT_STEM);
    static const int st[7][5] = {{3, 1, 1, 16, 1},  {3, 2, 6, 24, 2},  {5, 2, 6, 40, 2},
                                 {3, 2, 6, 80, 3},  {5, 1, 6, 112, 3}, {5, 2, 6, 192, 4},
                                 {3, 1, 6, 320, 1}};
    for (int s = 0; s < 7; s++) {
        for (int r = 0; r < st[s][4]; r++) {
            int k = st[s][0], stride = r == 0 ? st[s][1] : 1, e = st[s][2], oc = st[s][3];
            int ic = n->t[x].c;
            int a = (c + 1) % 3, b = (c + 2) % 3;
            int h = x;
            if (e != 1) h = add_conv(n, x, ic * e, 1, 1, 1, 1, -1, a, CAT_EXPAND);
            h = add_conv(n, h, ic * e, k, stride, ic * e, 1, -1, b, CAT_DW);
            if (stride == 1 && ic == oc) {
                add_conv(n, h, oc, 1, 1, 1, 0, x, -1, CAT_PROJECT); // in place into x
            } else {
                x = add_conv(n, h, oc, 1, 1, 1, 0, -1, a, CAT_PROJECT);
                c = a;
            }
        }
    }
    int a = (c + 1) % 3, b = (c + 2) % 3;
    x = add_conv(n, x, 1280, 1, 1, 1, 1, -1, a, CAT_HEAD);
    // global average pool 7x7 -> 1x1
    tensor_t *t = &n->t[x];
    dnnl_memory_desc_t pdst;
    act_md(n, &pdst, 1280, 1, 1, layout == L_ANY ? 2 : 0);
    dnnl_dims_t ps = {1, 1}, pk = {t->h, t->w}, pz = {0, 0};
    dnnl_pooling_desc_t pdesc;
    CHECK(dnnl_pooling_forward_desc_init(&pdesc, dnnl_forward_inference,
                                         dnnl_pooling_avg_exclude_padding, &t->md, &pdst, ps,
                                         pk, pz, pz));
    dnnl_primitive_desc_t ppd;
    CHECK(dnnl_primitive_desc_create(&ppd, &pdesc, NULL, eng, NULL));
    int y = new_tensor(n, dnnl_primitive_desc_query_md(ppd, dnnl_query_dst_md, 0), b, 1280, 1, 1);
    dnnl_exec_arg_t pa[2] = {{DNNL_ARG_SRC, n->t[x].mem}, {DNNL_ARG_DST, n->t[y].mem}};
    add_step(n, ppd, CAT_POOL, 2, pa);
    dnnl_primitive_desc_destroy(ppd);
    act_md(n, &md, 1280, 1, 1, 1); // user output {N,1280} (nhwc == nc here)
    if (!dnnl_memory_desc_equal(&md, &n->t[y].md)) y = add_reorder(n, y, &md, a);
    n->t[y].buf = -2;

    // allocate the 3 rotating buffers at the largest tensor each one holds
    for (int i = 0; i < n->nt; i++) {
        size_t sz = dnnl_memory_desc_get_size(&n->t[i].md);
        if (n->t[i].buf >= 0 && sz > n->bufsz[n->t[i].buf]) n->bufsz[n->t[i].buf] = sz;
    }
    for (int i = 0; i < 3; i++) {
        n->bufs[i] = aligned_alloc(4096, (n->bufsz[i] + 4095) & ~(size_t)4095);
        memset(n->bufs[i], 0, n->bufsz[i]);
    }
    size_t insz = dnnl_memory_desc_get_size(&n->t[0].md);
    n->in_ptr = aligned_alloc(4096, (insz + 4095) & ~(size_t)4095);
    for (size_t i = 0; i < insz / 4; i++) ((float *)n->in_ptr)[i] = frand();
    n->out_ptr = aligned_alloc(4096, (size_t)N * 1280 * 4 + 4096);
    for (int i = 0; i < n->nt; i++) {
        void *p = n->t[i].buf == -1 ? n->in_ptr
                  : n->t[i].buf == -2 ? n->out_ptr
                                      : n->bufs[n->t[i].buf];
        CHECK(dnnl_memory_set_data_handle(n->t[i].mem, p));
    }
}

static void destroy(net_t *n) {
    for (int i = 0; i < n->nsteps; i++) dnnl_primitive_destroy(n->steps[i].prim);
    for (int i = 0; i < n->nt; i++) dnnl_memory_destroy(n->t[i].mem);
    for (int i = 0; i < n->nowned; i++) dnnl_memory_destroy(n->owned[i]);
    for (int i = 0; i < 3; i++) free(n->bufs[i]);
    free(n->in_ptr);
    free(n->out_ptr);
}

static void forward(net_t *n, double *cat_t) {
    for (int i = 0; i < n->nsteps; i++) {
        step_t *s = &n->steps[i];
        double t0 = cat_t ? now() : 0;
        CHECK(dnnl_primitive_execute(s->prim, strm, s->nargs, s->args));
        if (cat_t) {
            CHECK(dnnl_stream_wait(strm));
            cat_t[s->cat] += now() - t0;
        }
    }
    CHECK(dnnl_stream_wait(strm));
}

static int parse_list(const char *s, int *out, int max) {
    int k = 0;
    while (*s && k < max) {
        out[k++] = atoi(s);
        while (*s && *s != ',') s++;
        if (*s == ',') s++;
    }
    return k;
}

int main(int argc, char **argv) {
    int layout = L_ANY, profile = 0, show_impls = 0, rounds = 3;
    double secs = 1.0, warm = 0.3;
    int threads[8] = {1, 2}, nthr = 2, batches[8] = {1, 16}, nb = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layout") && i + 1 < argc) {
            const char *l = argv[++i];
            layout = !strcmp(l, "nhwc") ? L_NHWC : !strcasecmp(l, "nChw16c") ? L_NCHW16C
                     : !strcasecmp(l, "nChw8c") ? L_NCHW8C : L_ANY;
        }
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nthr = parse_list(argv[++i], threads, 8);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) nb = parse_list(argv[++i], batches, 8);
        else if (!strcmp(argv[i], "--secs") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warm = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else if (!strcmp(argv[i], "--impls")) show_impls = 1;
        else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 1; }
    }
    void (*set_threads)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    int (*max_threads)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    if (!set_threads || !max_threads) {
        fprintf(stderr, "omp_set_num_threads not found (oneDNN not built with OpenMP?)\n");
        return 1;
    }
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    const dnnl_version_t *v = dnnl_version();
    printf("# oneDNN %d.%d.%d, effective ISA 0x%x, layout %s, secs/round %.2f, rounds %d\n",
           v->major, v->minor, v->patch, (unsigned)dnnl_get_effective_cpu_isa(), layout_name[layout], secs,
           rounds);
    for (int ti = 0; ti < nthr; ti++) {
        set_threads(threads[ti]);
        for (int bi = 0; bi < nb; bi++) {
            int N = batches[bi];
            net_t *n = malloc(sizeof *n);
            double tb = now();
            build(n, N, layout);
            double build_s = now() - tb;
            if (bi == 0 && ti == 0)
                printf("# graph: %d primitives, %.1f MMAC/img, %.3f M params, act reorders in "
                       "loop %d, src-any mismatches %d, buffers %.1f+%.1f+%.1f MB\n",
                       n->nsteps, n->macs / 1e6, n->params / 1e6, n->act_reorders,
                       n->src_any_mismatch, n->bufsz[0] / 1e6, n->bufsz[1] / 1e6,
                       n->bufsz[2] / 1e6);
            if (show_impls && bi == 0 && ti == 0) {
                printf("# impls: %s\n# activation layouts:", n->impls);
                char nm[32], prev[32] = "";
                for (int i = 0; i < n->nt; i++) {
                    md_name(&n->t[i].md, nm, sizeof nm);
                    if (strcmp(nm, prev)) printf(" t%d(C=%d)=%s", i, n->t[i].c, nm), strcpy(prev, nm);
                }
                printf("\n");
            }
            if (show_impls && bi == 0 && ti == 0) {
                forward(n, NULL);
                const float *o = n->out_ptr;
                double sum = 0;
                for (int i = 0; i < N * 1280; i++) sum += o[i];
                printf("# output[0][0:4] = %.6f %.6f %.6f %.6f  sum = %.6f\n", o[0], o[1], o[2],
                       o[3], sum);
            }
            // warm-up
            double t0 = now();
            int it = 0;
            while (it < 2 || now() - t0 < warm) forward(n, NULL), it++;
            double best = 0, ratio = 0;
            for (int r = 0; r < rounds; r++) {
                double c0 = cpu_time(), w0 = now(), w1;
                long iters = 0;
                do {
                    forward(n, NULL);
                    iters++;
                    w1 = now();
                } while (w1 - w0 < secs);
                double ips = iters * N / (w1 - w0);
                double rr = (cpu_time() - c0) / (w1 - w0);
                if (ips > best) best = ips, ratio = rr;
            }
            printf("RESULT onednn-%s threads=%d batch=%d ips=%.2f ms_per_batch=%.3f "
                   "omp_max_threads=%d cpu/wall=%.2f build_ms=%.1f weight_reorder_ms=%.2f\n",
                   layout_name[layout], threads[ti], N, best, 1e3 * N / best, max_threads(), ratio,
                   1e3 * build_s, 1e3 * n->wreorder_s);
            if (profile) {
                double ct[NCAT] = {0}, tot = 0;
                int pit = 0;
                double p0 = now();
                while (pit < 3 || now() - p0 < secs) forward(n, ct), pit++;
                for (int i = 0; i < NCAT; i++) tot += ct[i];
                printf("# profile threads=%d batch=%d (%d iters, ms/batch):", threads[ti], N, pit);
                for (int i = 0; i < NCAT; i++)
                    printf(" %s %.3f (%.1f%%);", cat_name[i], 1e3 * ct[i] / pit, 100 * ct[i] / tot);
                printf("\n");
            }
            fflush(stdout);
            destroy(n);
            free(n);
        }
    }
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    return 0;
}
