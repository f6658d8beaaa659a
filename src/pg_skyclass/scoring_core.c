/*
 * scoring_core.c -- load TL2cgen libraries from bytes and score rows.
 *
 * PostgreSQL-free on purpose (see scoring_core.h): the fmgr glue in
 * skyclass.c owns memory, errors and caching.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* memfd_create, F_ADD_SEALS */
#endif

#include "scoring_core.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void
sc_set_error(char *err, size_t errlen, const char *fmt,...)
	__attribute__((format(printf, 3, 4)));

static void
sc_set_error(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
sc_write_all(int fd, const unsigned char *bytes, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, bytes, len);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return -1;
		}
		bytes += n;
		len -= (size_t) n;
	}
	return 0;
}

typedef int32_t (*sc_int_fn) (void);
typedef void (*sc_num_class_fn) (int32_t *out);
typedef const char *(*sc_type_fn) (void);

/* dlsym() through a union: ISO C forbids casting void * to a function pointer. */
static void *
sc_symbol(void *handle, const char *name)
{
	dlerror();
	return dlsym(handle, name);
}

#define SC_FUNC(type, ptr) (((union { void *p; type f; }) { .p = (ptr) }).f)

/* Read and check the ABI of a freshly opened library. */
static sc_status
sc_check_abi(sc_library *lib, char *err, size_t errlen)
{
	void	   *p_predict = sc_symbol(lib->handle, "predict");
	void	   *p_num_feature = sc_symbol(lib->handle, "get_num_feature");
	void	   *p_num_target = sc_symbol(lib->handle, "get_num_target");
	void	   *p_num_class = sc_symbol(lib->handle, "get_num_class");
	void	   *p_threshold = sc_symbol(lib->handle, "get_threshold_type");
	void	   *p_leaf = sc_symbol(lib->handle, "get_leaf_output_type");
	const char *missing = NULL;
	const char *threshold_type;
	const char *leaf_type;
	int32_t		num_class[1];

	if (p_predict == NULL)
		missing = "predict";
	else if (p_num_feature == NULL)
		missing = "get_num_feature";
	else if (p_num_target == NULL)
		missing = "get_num_target";
	else if (p_num_class == NULL)
		missing = "get_num_class";
	else if (p_threshold == NULL)
		missing = "get_threshold_type";
	else if (p_leaf == NULL)
		missing = "get_leaf_output_type";
	if (missing != NULL)
	{
		sc_set_error(err, errlen, "the library has no symbol %s: it is not a TL2cgen model",
					 missing);
		return SC_ERR_SYMBOL;
	}

	/*
	 * Our sc_entry holds a double and our result buffer is double[]: a model
	 * generated with float32 thresholds or leaves has a 4-byte union Entry
	 * (or a float result) and would read garbage, so refuse it.
	 */
	threshold_type = SC_FUNC(sc_type_fn, p_threshold) ();
	leaf_type = SC_FUNC(sc_type_fn, p_leaf) ();
	if (threshold_type == NULL || strcmp(threshold_type, "float64") != 0 ||
		leaf_type == NULL || strcmp(leaf_type, "float64") != 0)
	{
		sc_set_error(err, errlen,
					 "the library uses threshold type %s and leaf output type %s; "
					 "only float64 is supported",
					 threshold_type ? threshold_type : "(null)",
					 leaf_type ? leaf_type : "(null)");
		return SC_ERR_ABI;
	}

	lib->n_features = SC_FUNC(sc_int_fn, p_num_feature) ();
	lib->n_targets = SC_FUNC(sc_int_fn, p_num_target) ();
	if (lib->n_features < 1 || lib->n_features > SC_MAX_FEATURES)
	{
		sc_set_error(err, errlen, "the library declares %d features", (int) lib->n_features);
		return SC_ERR_ABI;
	}
	/* get_num_class() writes N_TARGET values: check before giving it a buffer. */
	if (lib->n_targets != 1)
	{
		sc_set_error(err, errlen,
					 "the library has %d targets; only single-target classifiers are supported",
					 (int) lib->n_targets);
		return SC_ERR_ABI;
	}
	num_class[0] = 0;
	SC_FUNC(sc_num_class_fn, p_num_class) (num_class);
	if (num_class[0] < 1 || num_class[0] > SC_MAX_CLASSES)
	{
		sc_set_error(err, errlen, "the library declares %d classes", (int) num_class[0]);
		return SC_ERR_ABI;
	}
	lib->max_n_class = num_class[0];
	lib->n_outputs = lib->n_targets * lib->max_n_class;
	lib->predict = SC_FUNC(sc_predict_fn, p_predict);
	return SC_OK;
}

#if defined(__x86_64__)
#define SC_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define SC_ELF_MACHINE EM_AARCH64
#else
#error "skyclass: unknown ELF machine for this platform"
#endif

sc_status
sc_elf_check(const void *bytes, size_t len, char *err, size_t errlen)
{
	const unsigned char *b = bytes;
	Elf64_Ehdr	eh;
	Elf64_Phdr	ph;
	int			n_dynamic = 0;
	int			n_load = 0;
	int			i;

	if (b == NULL || len < sizeof(Elf64_Ehdr))
	{
		sc_set_error(err, errlen, "not an ELF file (%zu bytes)", len);
		return SC_ERR_FORMAT;
	}
	memcpy(&eh, b, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
	{
		sc_set_error(err, errlen, "not an ELF file (no ELF magic)");
		return SC_ERR_FORMAT;
	}
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
		eh.e_ident[EI_VERSION] != EV_CURRENT)
	{
		sc_set_error(err, errlen, "not a 64-bit little-endian ELF file");
		return SC_ERR_FORMAT;
	}
	if (eh.e_type != ET_DYN)
	{
		sc_set_error(err, errlen, "not an ELF shared object (e_type %u)", (unsigned) eh.e_type);
		return SC_ERR_FORMAT;
	}
	if (eh.e_machine != SC_ELF_MACHINE)
	{
		sc_set_error(err, errlen, "an ELF file for machine %u, not this one (%u)",
					 (unsigned) eh.e_machine, (unsigned) SC_ELF_MACHINE);
		return SC_ERR_FORMAT;
	}
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum >= PN_XNUM ||
		eh.e_phoff > len || (len - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum)
	{
		sc_set_error(err, errlen, "the ELF program headers are missing or outside the file");
		return SC_ERR_FORMAT;
	}
	for (i = 0; i < eh.e_phnum; i++)
	{
		memcpy(&ph, b + eh.e_phoff + (size_t) i * sizeof(Elf64_Phdr), sizeof(ph));
		if (ph.p_type == PT_LOAD || ph.p_type == PT_DYNAMIC)
		{
			if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			{
				sc_set_error(err, errlen, "ELF segment %d lies outside the file", i);
				return SC_ERR_FORMAT;
			}
			if (ph.p_type == PT_LOAD)
				n_load++;
			else
				n_dynamic++;
		}
		else if (ph.p_type == PT_INTERP)
		{
			sc_set_error(err, errlen, "an ELF executable (it names a program interpreter), "
						 "not a library");
			return SC_ERR_FORMAT;
		}
	}
	if (n_load == 0 || n_dynamic != 1)
	{
		sc_set_error(err, errlen, "not a loadable ELF shared object (%d PT_LOAD, %d PT_DYNAMIC)",
					 n_load, n_dynamic);
		return SC_ERR_FORMAT;
	}
	return SC_OK;
}

sc_status
sc_library_load(const void *bytes, size_t len, const char *memfd_name,
				sc_library *lib, char *err, size_t errlen)
{
	char		path[64];
	int			fd;
	sc_status	status;

	memset(lib, 0, sizeof(*lib));
	lib->fd = -1;
	if (bytes == NULL || len == 0)
	{
		sc_set_error(err, errlen, "the library is empty");
		return SC_ERR_ARGUMENT;
	}
	status = sc_elf_check(bytes, len, err, errlen);
	if (status != SC_OK)
		return status;

	fd = memfd_create(memfd_name ? memfd_name : "skyclass-model", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
	{
		sc_set_error(err, errlen, "memfd_create failed: %s", strerror(errno));
		return SC_ERR_IO;
	}
	if (sc_write_all(fd, bytes, len) != 0)
	{
		sc_set_error(err, errlen, "writing the library to a memfd failed: %s", strerror(errno));
		close(fd);
		return SC_ERR_IO;
	}

	/*
	 * Seal the file: the bytes dlopen maps are the bytes the caller hashed,
	 * and nothing in this process can change them afterwards.
	 */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0)
	{
		sc_set_error(err, errlen, "sealing the memfd failed: %s", strerror(errno));
		close(fd);
		return SC_ERR_IO;
	}

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dlerror();

	/*
	 * RTLD_LOCAL keeps this model's `predict` out of the global namespace, so
	 * several models coexist; the libraries are linked with -Bsymbolic so
	 * their internal calls bind to themselves.
	 */
	lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib->handle == NULL)
	{
		const char *msg = dlerror();

		sc_set_error(err, errlen, "dlopen failed: %s", msg ? msg : "unknown error");
		close(fd);
		return SC_ERR_DLOPEN;
	}
	lib->fd = fd;

	status = sc_check_abi(lib, err, errlen);
	if (status != SC_OK)
	{
		sc_library_unload(lib);
		return status;
	}
	return SC_OK;
}

void
sc_library_unload(sc_library *lib)
{
	if (lib->handle != NULL)
		dlclose(lib->handle);
	if (lib->fd >= 0)
		close(lib->fd);
	memset(lib, 0, sizeof(*lib));
	lib->fd = -1;
}

int
sc_transform_from_name(const char *name)
{
	if (name == NULL)
		return -1;
	if (strcmp(name, "identity") == 0)
		return SC_TRANSFORM_IDENTITY;
	if (strcmp(name, "binary_expand") == 0)
		return SC_TRANSFORM_BINARY_EXPAND;
	if (strcmp(name, "raw_score") == 0)
		return SC_TRANSFORM_RAW_SCORE;
	return -1;
}

int32_t
sc_transform_outputs(sc_transform transform, int32_t n_classes)
{
	if (n_classes < 2 || n_classes > SC_MAX_CLASSES)
		return -1;
	switch (transform)
	{
		case SC_TRANSFORM_IDENTITY:
			return n_classes;
		case SC_TRANSFORM_BINARY_EXPAND:
			return n_classes == 2 ? 1 : -1;
		case SC_TRANSFORM_RAW_SCORE:
			return -1;
	}
	return -1;
}

sc_status
sc_raw_score_check(int32_t n_classes, int32_t n_outputs, const sc_calibration *cal,
				   char *err, size_t errlen)
{
	if (n_classes != 0)
	{
		sc_set_error(err, errlen, "a raw_score model has no classes, not %d", (int) n_classes);
		return SC_ERR_ARGUMENT;
	}
	if (n_outputs < 1 || n_outputs > SC_MAX_CLASSES)
	{
		sc_set_error(err, errlen, "a raw_score model needs 1 to %d outputs, not %d",
					 SC_MAX_CLASSES, (int) n_outputs);
		return SC_ERR_ARGUMENT;
	}
	if (cal == NULL || cal->kind != SC_CALIBRATION_NONE || cal->n_params != 0 ||
		cal->n_offsets != 0)
	{
		sc_set_error(err, errlen, "a raw_score model has no calibration");
		return SC_ERR_ARGUMENT;
	}
	return SC_OK;
}

sc_status
sc_reference_check(const double *ref, int32_t m, char *err, size_t errlen)
{
	int32_t		i;

	if (ref == NULL || m < 2 || m > SC_MAX_KNOTS)
	{
		sc_set_error(err, errlen, "a reference needs 2 to %d values, not %d",
					 SC_MAX_KNOTS, (int) m);
		return SC_ERR_ARGUMENT;
	}
	for (i = 0; i < m; i++)
	{
		if (!isfinite(ref[i]))
		{
			sc_set_error(err, errlen, "reference value %d is not finite", (int) i + 1);
			return SC_ERR_ARGUMENT;
		}
		if (i > 0 && ref[i] < ref[i - 1])
		{
			sc_set_error(err, errlen, "reference values must not decrease (value %d < value %d)",
						 (int) i + 1, (int) i);
			return SC_ERR_ARGUMENT;
		}
	}
	return SC_OK;
}

double
sc_percentile(double x, const double *ref, int32_t m)
{
	int32_t		lo;
	int32_t		hi;
	double		step = 100.0 / (double) (m - 1);
	double		slope;

	if (isnan(x))
		return x;
	if (x < ref[0])
		return 0.0;
	if (x >= ref[m - 1])
		return 100.0;
	/* Invariant: ref[lo] <= x < ref[hi]; lo ends as the last of equal values. */
	lo = 0;
	hi = m - 1;
	while (hi - lo > 1)
	{
		int32_t		mid = lo + (hi - lo) / 2;

		if (ref[mid] <= x)
			lo = mid;
		else
			hi = mid;
	}
	if (ref[lo] == x)
		return step * lo;
	slope = (step * hi - step * lo) / (ref[hi] - ref[lo]);
	return slope * (x - ref[lo]) + step * lo;
}

sc_status
sc_calibration_check(const sc_calibration *cal, int32_t n_classes, char *err, size_t errlen)
{
	int32_t		k;
	int32_t		i;

	if (n_classes < 1 || n_classes > SC_MAX_CLASSES)
	{
		sc_set_error(err, errlen, "invalid number of classes %d", (int) n_classes);
		return SC_ERR_ARGUMENT;
	}
	if (!(isfinite(cal->eps) && cal->eps > 0.0 && cal->eps * n_classes < 1.0))
	{
		sc_set_error(err, errlen, "eps must be in (0, 1/n_classes), not %g", cal->eps);
		return SC_ERR_ARGUMENT;
	}
	for (i = 0; i < cal->n_params; i++)
	{
		if (!isfinite(cal->params[i]))
		{
			sc_set_error(err, errlen, "calibration parameter %d is not finite", (int) i + 1);
			return SC_ERR_ARGUMENT;
		}
	}
	switch (cal->kind)
	{
		case SC_CALIBRATION_NONE:
			if (cal->n_params != 0 || cal->n_offsets != 0)
			{
				sc_set_error(err, errlen,
							 "calibration 'none' takes no parameters and no offsets");
				return SC_ERR_ARGUMENT;
			}
			return SC_OK;

		case SC_CALIBRATION_TEMPERATURE:
			if (cal->n_params != 1 || cal->n_offsets != 0)
			{
				sc_set_error(err, errlen,
							 "temperature calibration takes exactly one parameter {T} and no offsets, "
							 "not %d parameters and %d offsets",
							 (int) cal->n_params, (int) cal->n_offsets);
				return SC_ERR_ARGUMENT;
			}
			if (!(cal->params[0] > 0.0))
			{
				sc_set_error(err, errlen, "temperature must be positive, not %g", cal->params[0]);
				return SC_ERR_ARGUMENT;
			}
			return SC_OK;

		case SC_CALIBRATION_ISOTONIC:
			if (cal->n_offsets != n_classes + 1)
			{
				sc_set_error(err, errlen,
							 "isotonic calibration needs %d offsets (one per class plus the end), not %d",
							 (int) n_classes + 1, (int) cal->n_offsets);
				return SC_ERR_ARGUMENT;
			}
			if (cal->offsets[0] != 0 || cal->offsets[n_classes] != cal->n_params)
			{
				sc_set_error(err, errlen,
							 "isotonic offsets must start at 0 and end at the number of parameters (%d)",
							 (int) cal->n_params);
				return SC_ERR_ARGUMENT;
			}
			for (k = 0; k < n_classes; k++)
			{
				int32_t		start = cal->offsets[k];
				int32_t		width = cal->offsets[k + 1] - start;
				int32_t		m = width / 2;
				const double *xs;

				if (cal->offsets[k + 1] < start || width < 2 || width % 2 != 0 || m > SC_MAX_KNOTS)
				{
					sc_set_error(err, errlen,
								 "isotonic class %d spans %d parameters; it needs an even number >= 2 "
								 "(its x knots, then its y values)",
								 (int) k + 1, (int) width);
					return SC_ERR_ARGUMENT;
				}
				xs = cal->params + start;
				for (i = 1; i < m; i++)
				{
					if (!(xs[i] > xs[i - 1]))
					{
						sc_set_error(err, errlen,
									 "isotonic class %d: x knots must be strictly increasing",
									 (int) k + 1);
						return SC_ERR_ARGUMENT;
					}
				}
			}
			return SC_OK;
	}
	sc_set_error(err, errlen, "unknown calibration kind %d", (int) cal->kind);
	return SC_ERR_ARGUMENT;
}

void
sc_fill_entries(const float *features, int32_t n, sc_entry *entries)
{
	int32_t		i;

	for (i = 0; i < n; i++)
	{
		/*
		 * TL2cgen 1.0.0 reads `missing == -1` from the low 32 bits of the
		 * double, so a double whose low 32 bits are all ones would be taken
		 * as missing.  A float widened to double has its low 29 mantissa bits
		 * zero, so no float value can alias -1; NaN is mapped explicitly.
		 */
		entries[i].fvalue = 0.0;
		if (isnan(features[i]))
			entries[i].missing = -1;
		else
			entries[i].fvalue = (double) features[i];
	}
}

void
sc_predict_raw(const sc_library *lib, sc_entry *entries, double *raw)
{
	memset(raw, 0, sizeof(double) * (size_t) lib->n_outputs);
	lib->predict(entries, 0, raw);
}

double
sc_interp(double x, const double *xs, const double *ys, int32_t m)
{
	int32_t		lo;
	int32_t		hi;
	double		slope;

	if (isnan(x))
		return x;
	if (x <= xs[0])
		return ys[0];
	if (x >= xs[m - 1])
		return ys[m - 1];
	/* Invariant: xs[lo] <= x < xs[hi]. */
	lo = 0;
	hi = m - 1;
	while (hi - lo > 1)
	{
		int32_t		mid = lo + (hi - lo) / 2;

		if (xs[mid] <= x)
			lo = mid;
		else
			hi = mid;
	}
	if (xs[lo] == x)
		return ys[lo];
	/* numpy.interp's formula, so results agree to the last bit or two. */
	slope = (ys[lo + 1] - ys[lo]) / (xs[lo + 1] - xs[lo]);
	return slope * (x - xs[lo]) + ys[lo];
}

static inline double
sc_clip(double p, double eps)
{
	return p < eps ? eps : (p > 1.0 ? 1.0 : p);
}

static void
sc_renormalise(double *p, int32_t n, double eps)
{
	double		total = 0.0;
	int32_t		k;

	for (k = 0; k < n; k++)
	{
		p[k] = sc_clip(p[k], eps);
		total += p[k];
	}
	for (k = 0; k < n; k++)
		p[k] /= total;
}

static void
sc_temperature(double *p, int32_t n, double temperature, double eps)
{
	double		smax = -INFINITY;
	double		total = 0.0;
	int32_t		k;

	for (k = 0; k < n; k++)
	{
		p[k] = log(sc_clip(p[k], eps)) / temperature;
		if (p[k] > smax)
			smax = p[k];
	}
	for (k = 0; k < n; k++)
	{
		p[k] = exp(p[k] - smax);
		total += p[k];
	}
	for (k = 0; k < n; k++)
		p[k] /= total;
}

static void
sc_isotonic(double *p, int32_t n, const sc_calibration *cal)
{
	int32_t		k;

	for (k = 0; k < n; k++)
	{
		int32_t		start = cal->offsets[k];
		int32_t		m = (cal->offsets[k + 1] - start) / 2;
		const double *xs = cal->params + start;

		p[k] = sc_interp(p[k], xs, xs + m, m);
	}
	/* The eps floor also makes a row whose curves are all 0 come out uniform. */
	sc_renormalise(p, n, cal->eps);
}

void
sc_probabilities(sc_transform transform, const double *raw,
				 const sc_calibration *cal, double *proba, int32_t n_classes)
{
	int32_t		k;

	if (transform == SC_TRANSFORM_BINARY_EXPAND)
	{
		proba[0] = 1.0 - raw[0];
		proba[1] = raw[0];
	}
	else
	{
		for (k = 0; k < n_classes; k++)
			proba[k] = raw[k];
	}
	switch (cal->kind)
	{
		case SC_CALIBRATION_NONE:
			sc_renormalise(proba, n_classes, cal->eps);
			break;
		case SC_CALIBRATION_TEMPERATURE:
			sc_temperature(proba, n_classes, cal->params[0], cal->eps);
			break;
		case SC_CALIBRATION_ISOTONIC:
			sc_isotonic(proba, n_classes, cal);
			break;
	}
}

int32_t
sc_argmax(const double *proba, int32_t n)
{
	int32_t		best = 0;
	int32_t		k;

	for (k = 1; k < n; k++)
	{
		if (proba[k] > proba[best])
			best = k;
	}
	return best;
}
