/*
 * scoring_core.h -- the PostgreSQL-free half of the skyclass extension.
 *
 * It loads a TL2cgen-generated shared library from bytes (memfd + dlopen, no
 * file on disk), checks the library's ABI, scores one row of float4 features
 * and turns the raw outputs into calibrated class probabilities.  Nothing here
 * allocates with palloc or raises PostgreSQL errors: every function returns a
 * status and writes a message into a caller-supplied buffer, so the core can
 * be built and tested on its own (see docs/extension.md).
 *
 * The TL2cgen 1.0.0 ABI (read off its generated header.h; see docs/extension.md):
 *   union Entry { int missing; double fvalue; int qvalue; };
 *   void predict(union Entry *data, int pred_margin, double *result);
 *   int32_t get_num_feature(void); int32_t get_num_target(void);
 *   void get_num_class(int32_t *out);          -- N_TARGET values
 *   const char *get_threshold_type(void);      -- must be "float64"
 *   const char *get_leaf_output_type(void);    -- must be "float64"
 * predict() does no bounds checks: the caller passes exactly
 * get_num_feature() entries and a zeroed buffer of N_TARGET * MAX_N_CLASS
 * doubles.  A missing value is `missing = -1`, which aliases the low 32 bits
 * of `fvalue`; see sc_fill_entries() for why float4 input is immune to that.
 */
#ifndef SKYCLASS_SCORING_CORE_H
#define SKYCLASS_SCORING_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Upper bounds that keep every buffer size computation far from overflow. */
#define SC_MAX_FEATURES 65536
#define SC_MAX_CLASSES 65536
#define SC_MAX_KNOTS (1 << 24)

/* Default floor of probabilities before renormalising (skyclass.probability.calibration). */
#define SC_DEFAULT_EPS 1e-12

typedef enum sc_status
{
	SC_OK = 0,
	SC_ERR_ARGUMENT,			/* caller passed something invalid */
	SC_ERR_IO,					/* memfd_create/write/seal failed */
	SC_ERR_DLOPEN,				/* dlopen failed */
	SC_ERR_SYMBOL,				/* a required symbol is missing */
	SC_ERR_ABI,					/* the library's layout is not the one we speak */
	SC_ERR_FORMAT				/* not an ELF shared object for this machine */
} sc_status;

/* How the raw outputs of predict() become class probabilities. */
typedef enum sc_transform
{
	SC_TRANSFORM_IDENTITY = 0,	/* outputs are the probabilities */
	SC_TRANSFORM_BINARY_EXPAND = 1, /* one output p becomes [1 - p, p] */
	SC_TRANSFORM_RAW_SCORE = 2	/* outputs are scores, not probabilities (no classes) */
} sc_transform;

typedef enum sc_calibration_kind
{
	SC_CALIBRATION_NONE = 0,
	SC_CALIBRATION_TEMPERATURE = 1,
	SC_CALIBRATION_ISOTONIC = 2
} sc_calibration_kind;

/* Binary-compatible with TL2cgen's `union Entry` (8 bytes on LP64). */
typedef union sc_entry
{
	int			missing;
	double		fvalue;
	int			qvalue;
} sc_entry;

typedef void (*sc_predict_fn) (sc_entry *data, int pred_margin, double *result);

/* One loaded model library. */
typedef struct sc_library
{
	int			fd;				/* the memfd; kept open while loaded */
	void	   *handle;			/* dlopen handle */
	sc_predict_fn predict;
	int32_t		n_features;
	int32_t		n_targets;
	int32_t		max_n_class;
	int32_t		n_outputs;		/* n_targets * max_n_class: result buffer size */
} sc_library;

/* A model version's calibration; params/offsets are borrowed, not owned. */
typedef struct sc_calibration
{
	sc_calibration_kind kind;
	double		eps;			/* probabilities are clipped to [eps, 1] */
	const double *params;
	int32_t		n_params;
	const int32_t *offsets;
	int32_t		n_offsets;
} sc_calibration;

/*
 * Load library bytes: write them into an anonymous memfd, seal it, and
 * dlopen("/proc/self/fd/N").  `memfd_name` is only a label for /proc/PID/maps.
 * The fd stays open until sc_library_unload(): glibc recognises an already
 * loaded library by its path string, so a closed and reused fd number would
 * make a later dlopen return the old library.  On error `lib` is left
 * unloaded and `err` says why.
 */
extern sc_status sc_library_load(const void *bytes, size_t len, const char *memfd_name,
								 sc_library *lib, char *err, size_t errlen);

/*
 * Check, without loading anything, that `bytes` look like an ELF shared
 * object for this machine: magic, 64-bit little-endian class of the host,
 * type ET_DYN, the host's machine, program headers inside the bytes with
 * one PT_DYNAMIC and at least one PT_LOAD.  sc_library_load() calls it
 * before dlopen; SC_ERR_FORMAT and `err` say what is wrong.
 */
extern sc_status sc_elf_check(const void *bytes, size_t len, char *err, size_t errlen);

/* dlclose and close the memfd. */
extern void sc_library_unload(sc_library *lib);

/*
 * Parse a transform name ("identity", "binary_expand", "raw_score"); -1 when
 * unknown.  "raw_score" is the output kind of a model version that gives
 * scores rather than class probabilities (task 'anomaly'): it has no
 * classes, no calibration, and its outputs are read with predict_raw.
 */
extern int	sc_transform_from_name(const char *name);

/*
 * Number of raw outputs `transform` needs for `n_classes` probabilities, or
 * -1 when the combination is impossible (always -1 for raw_score, whose
 * output count is the library's own: see sc_raw_score_check).
 */
extern int32_t sc_transform_outputs(sc_transform transform, int32_t n_classes);

/*
 * Check a calibration against the number of classes; SC_ERR_ARGUMENT with a
 * message when it is malformed.  eps must be finite with 0 < eps < 1/n_classes.
 * Layouts (calibration_params / calibration_offsets in skyclass.model_version):
 *   none:        no params, no offsets.
 *   temperature: params = {T}, T finite and > 0; no offsets.
 *   isotonic:    offsets has n_classes + 1 entries, offsets[0] = 0,
 *                offsets[n_classes] = n_params; class k owns
 *                params[offsets[k] .. offsets[k+1]), an even count 2*m_k
 *                (m_k >= 1): first its m_k x knots (strictly increasing),
 *                then its m_k y values.  All values finite.
 */
extern sc_status sc_calibration_check(const sc_calibration *cal, int32_t n_classes,
									  char *err, size_t errlen);

/*
 * Fill `entries` from float4 features: NaN becomes `missing = -1`, anything
 * else (including +-inf) becomes `fvalue`.
 */
extern void sc_fill_entries(const float *features, int32_t n, sc_entry *entries);

/*
 * Score one row: `entries` holds lib->n_features entries (sc_fill_entries),
 * `raw` has room for lib->n_outputs doubles and is zeroed here first.  The
 * library applies its own post-processor (sigmoid, softmax or averaging).
 */
extern void sc_predict_raw(const sc_library *lib, sc_entry *entries, double *raw);

/*
 * Raw outputs -> probabilities -> calibrated probabilities, in `proba`
 * (n_classes doubles).  The calibration must have passed
 * sc_calibration_check().  The maps mirror skyclass.probability.calibration's
 * apply_calibration (clip(q) = min(max(q, eps), 1)):
 *   none:        out_k = clip(p_k) / sum_j clip(p_j)
 *   temperature: s_k = log(clip(p_k)) / T; out = softmax(s)  (max subtracted)
 *   isotonic:    c_k = interp(p_k; x_k, y_k); out_k = clip(c_k) / sum_j clip(c_j)
 */
extern void sc_probabilities(sc_transform transform, const double *raw,
							 const sc_calibration *cal, double *proba, int32_t n_classes);

/*
 * The layout of a raw_score version: no classes, n_outputs in
 * 1..SC_MAX_CLASSES, calibration none.  SC_ERR_ARGUMENT with a message
 * otherwise.
 */
extern sc_status sc_raw_score_check(int32_t n_classes, int32_t n_outputs,
									const sc_calibration *cal, char *err, size_t errlen);

/*
 * Check a reference distribution for sc_percentile: m >= 2 finite values in
 * non-decreasing order.  SC_ERR_ARGUMENT with a message otherwise.
 */
extern sc_status sc_reference_check(const double *ref, int32_t m, char *err, size_t errlen);

/*
 * Percentile (0..100) of `x` among `m` reference quantiles `ref` (checked by
 * sc_reference_check): numpy.interp(x, ref, linspace(0, 100, m), left=0,
 * right=100), including numpy's reading of tied quantiles (the last of a
 * run of equal values gives its percentile).  NaN stays NaN.
 */
extern double sc_percentile(double x, const double *ref, int32_t m);

/* Index of the first largest probability (numpy.argmax semantics). */
extern int32_t sc_argmax(const double *proba, int32_t n);

/* numpy.interp(x, xs, ys) for strictly increasing xs, clamped at the ends. */
extern double sc_interp(double x, const double *xs, const double *ys, int32_t m);

#endif							/* SKYCLASS_SCORING_CORE_H */
