/*
 * core_driver.c -- exercise src/pg_skyclass/scoring_core.c without PostgreSQL.
 *
 * Built by tests/score/test_core.py with -fsanitize=address,undefined, so the
 * loader, the row scorer and the calibration maps run under AddressSanitizer
 * and UBSan (the generated model library itself is not instrumented).
 *
 *   core_driver selftest
 *       edge cases of loading, calibration checks and maps; prints "ok".
 *   core_driver score LIBRARY N_CLASSES TRANSFORM KIND EPS [PARAMS... -- OFFSETS...]
 *       reads rows of floats ("nan" for missing) from stdin, one row per line,
 *       prints the calibrated probabilities of each row (%.17g).
 */
#include "scoring_core.h"

#include <elf.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1); \
		} \
	} while (0)

static unsigned char *
read_file(const char *path, size_t *len)
{
	FILE	   *fh = fopen(path, "rb");
	unsigned char *buf;
	long		size;

	CHECK(fh != NULL);
	CHECK(fseek(fh, 0, SEEK_END) == 0);
	size = ftell(fh);
	CHECK(size > 0);
	rewind(fh);
	buf = malloc((size_t) size);
	CHECK(buf != NULL);
	CHECK(fread(buf, 1, (size_t) size, fh) == (size_t) size);
	fclose(fh);
	*len = (size_t) size;
	return buf;
}

static int
selftest(void)
{
	char		err[256];
	sc_library	lib;
	const unsigned char garbage[] = "\x7f" "ELF not really a library";
	double		xs[] = {0.1, 0.5, 0.9};
	double		ys[] = {0.0, 0.4, 1.0};
	double		p[3];
	double		iso_params[] = {0.5, 0.0, 0.5, 0.0, 0.5, 0.0};	/* every curve at 0 */
	int32_t		iso_offsets[] = {0, 2, 4, 6};
	double		temp_params[] = {2.0};
	double		bad_params[] = {0.5, 0.2, 0.0, 1.0};
	int32_t		bad_offsets[] = {0, 4};
	sc_calibration none = {SC_CALIBRATION_NONE, 1e-12, NULL, 0, NULL, 0};
	sc_calibration temp = {SC_CALIBRATION_TEMPERATURE, 1e-12, temp_params, 1, NULL, 0};
	sc_calibration iso = {SC_CALIBRATION_ISOTONIC, 1e-12, iso_params, 6, iso_offsets, 4};
	sc_calibration bad = {SC_CALIBRATION_ISOTONIC, 1e-12, bad_params, 4, bad_offsets, 2};
	sc_calibration bad_eps = {SC_CALIBRATION_NONE, 0.5, NULL, 0, NULL, 0};
	double		raw[3] = {0.2, 0.0, 0.8};

	/* Loading refuses empty and non-library bytes cleanly. */
	CHECK(sc_library_load(NULL, 0, "t", &lib, err, sizeof(err)) == SC_ERR_ARGUMENT);
	CHECK(sc_library_load(garbage, sizeof(garbage), "t", &lib, err, sizeof(err)) == SC_ERR_FORMAT);
	CHECK(strstr(err, "not an ELF file") != NULL);
	CHECK(lib.fd == -1 && lib.handle == NULL);

	/* The ELF header is checked before anything is written or mapped. */
	{
		unsigned char elf[4096];
		Elf64_Ehdr *eh = (Elf64_Ehdr *) elf;
		Elf64_Phdr *ph = (Elf64_Phdr *) (elf + sizeof(Elf64_Ehdr));

		memset(elf, 0, sizeof(elf));
		memcpy(eh->e_ident, ELFMAG, SELFMAG);
		eh->e_ident[EI_CLASS] = ELFCLASS64;
		eh->e_ident[EI_DATA] = ELFDATA2LSB;
		eh->e_ident[EI_VERSION] = EV_CURRENT;
		eh->e_type = ET_DYN;
#if defined(__x86_64__)
		const Elf64_Half host = EM_X86_64;
#else
		const Elf64_Half host = EM_AARCH64;
#endif

		eh->e_machine = host;
		eh->e_phoff = sizeof(Elf64_Ehdr);
		eh->e_phentsize = sizeof(Elf64_Phdr);
		eh->e_phnum = 2;
		ph[0].p_type = PT_LOAD;
		ph[0].p_filesz = sizeof(elf);
		ph[1].p_type = PT_DYNAMIC;
		ph[1].p_offset = 1024;
		ph[1].p_filesz = 64;
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_OK);
		CHECK(sc_elf_check(elf, 40, err, sizeof(err)) == SC_ERR_FORMAT);
		ph[1].p_filesz = sizeof(elf);	/* a segment past the end of the file */
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		CHECK(strstr(err, "outside the file") != NULL);
		ph[1].p_filesz = 64;
		ph[1].p_type = PT_INTERP;	/* an executable, and no PT_DYNAMIC */
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		CHECK(strstr(err, "interpreter") != NULL);
		ph[1].p_type = PT_DYNAMIC;
		eh->e_phnum = 200;			/* program headers past the end */
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		eh->e_phnum = 2;
		eh->e_machine = EM_386;
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		CHECK(strstr(err, "machine") != NULL);
		eh->e_machine = host;
		eh->e_type = ET_EXEC;
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		CHECK(strstr(err, "not an ELF shared object") != NULL);
		eh->e_ident[EI_CLASS] = ELFCLASS32;
		CHECK(sc_elf_check(elf, sizeof(elf), err, sizeof(err)) == SC_ERR_FORMAT);
		CHECK(strstr(err, "64-bit") != NULL);
	}

	/* numpy.interp semantics: clamped ends, exact knots, linear between. */
	CHECK(sc_interp(-1.0, xs, ys, 3) == 0.0);
	CHECK(sc_interp(2.0, xs, ys, 3) == 1.0);
	CHECK(sc_interp(0.5, xs, ys, 3) == 0.4);
	CHECK(fabs(sc_interp(0.7, xs, ys, 3) - 0.7) < 1e-15);
	CHECK(isnan(sc_interp(NAN, xs, ys, 3)));
	CHECK(sc_interp(0.3, xs, ys, 1) == 0.0);

	/* Transforms and argmax. */
	CHECK(sc_transform_from_name("identity") == SC_TRANSFORM_IDENTITY);
	CHECK(sc_transform_from_name("binary_expand") == SC_TRANSFORM_BINARY_EXPAND);
	CHECK(sc_transform_from_name("softmax") == -1);
	CHECK(sc_transform_outputs(SC_TRANSFORM_BINARY_EXPAND, 2) == 1);
	CHECK(sc_transform_outputs(SC_TRANSFORM_BINARY_EXPAND, 3) == -1);
	CHECK(sc_transform_outputs(SC_TRANSFORM_IDENTITY, 1) == -1);
	sc_probabilities(SC_TRANSFORM_BINARY_EXPAND, raw + 2, &none, p, 2);
	CHECK(fabs(p[0] - 0.2) < 1e-15 && fabs(p[1] - 0.8) < 1e-15);
	CHECK(sc_argmax((double[]) {0.3, 0.3, 0.1}, 3) == 0);

	/* Calibration checks. */
	CHECK(sc_calibration_check(&none, 3, err, sizeof(err)) == SC_OK);
	CHECK(sc_calibration_check(&temp, 3, err, sizeof(err)) == SC_OK);
	CHECK(sc_calibration_check(&iso, 3, err, sizeof(err)) == SC_OK);
	CHECK(sc_calibration_check(&bad, 1, err, sizeof(err)) == SC_ERR_ARGUMENT);
	CHECK(strstr(err, "strictly increasing") != NULL);
	CHECK(sc_calibration_check(&iso, 2, err, sizeof(err)) == SC_ERR_ARGUMENT);
	CHECK(sc_calibration_check(&bad_eps, 3, err, sizeof(err)) == SC_ERR_ARGUMENT);
	temp_params[0] = -1.0;
	CHECK(sc_calibration_check(&temp, 3, err, sizeof(err)) == SC_ERR_ARGUMENT);
	temp_params[0] = 2.0;

	/* Maps: zero probabilities stay finite; all-zero isotonic curves give uniform. */
	sc_probabilities(SC_TRANSFORM_IDENTITY, raw, &temp, p, 3);
	CHECK(isfinite(p[1]) && p[1] > 0.0 && fabs(p[0] + p[1] + p[2] - 1.0) < 1e-15);
	sc_probabilities(SC_TRANSFORM_IDENTITY, raw, &iso, p, 3);
	CHECK(fabs(p[0] - 1.0 / 3) < 1e-15 && fabs(p[2] - 1.0 / 3) < 1e-15);
	puts("ok");
	return 0;
}

static int
score(int argc, char **argv)
{
	size_t		len;
	unsigned char *bytes = read_file(argv[2], &len);
	int32_t		n_classes = atoi(argv[3]);
	int			transform = sc_transform_from_name(argv[4]);
	sc_calibration cal = {SC_CALIBRATION_NONE, atof(argv[6]), NULL, 0, NULL, 0};
	double	   *params = calloc((size_t) argc, sizeof(double));
	int32_t    *offsets = calloc((size_t) argc, sizeof(int32_t));
	char		err[512];
	sc_library	lib;
	sc_entry   *entries;
	float	   *row;
	double	   *raw;
	double	   *proba;
	int			i;
	int			in_offsets = 0;

	CHECK(transform >= 0 && params != NULL && offsets != NULL);
	if (strcmp(argv[5], "temperature") == 0)
		cal.kind = SC_CALIBRATION_TEMPERATURE;
	else if (strcmp(argv[5], "isotonic") == 0)
		cal.kind = SC_CALIBRATION_ISOTONIC;
	for (i = 7; i < argc; i++)
	{
		if (strcmp(argv[i], "--") == 0)
			in_offsets = 1;
		else if (in_offsets)
			offsets[cal.n_offsets++] = atoi(argv[i]);
		else
			params[cal.n_params++] = strtod(argv[i], NULL);
	}
	cal.params = params;
	cal.offsets = offsets;
	if (sc_calibration_check(&cal, n_classes, err, sizeof(err)) != SC_OK ||
		sc_library_load(bytes, len, "core-driver", &lib, err, sizeof(err)) != SC_OK)
	{
		fprintf(stderr, "error: %s\n", err);
		free(bytes);
		free(params);
		free(offsets);
		return 2;
	}
	free(bytes);				/* the sealed memfd holds its own copy */
	CHECK(sc_transform_outputs((sc_transform) transform, n_classes) == lib.n_outputs);

	/* Exact-size heap buffers, so ASan sees any overrun by the core. */
	entries = malloc(sizeof(sc_entry) * (size_t) lib.n_features);
	row = malloc(sizeof(float) * (size_t) lib.n_features);
	raw = malloc(sizeof(double) * (size_t) lib.n_outputs);
	proba = malloc(sizeof(double) * (size_t) n_classes);
	CHECK(entries && row && raw && proba);
	for (;;)
	{
		int			j;

		for (j = 0; j < lib.n_features; j++)
		{
			char		token[64];

			if (scanf("%63s", token) != 1)
				goto done;
			row[j] = strtof(token, NULL);
		}
		sc_fill_entries(row, lib.n_features, entries);
		sc_predict_raw(&lib, entries, raw);
		sc_probabilities((sc_transform) transform, raw, &cal, proba, n_classes);
		for (j = 0; j < n_classes; j++)
			printf(j ? " %.17g" : "%.17g", proba[j]);
		putchar('\n');
	}
done:
	sc_library_unload(&lib);
	free(entries);
	free(row);
	free(raw);
	free(proba);
	free(params);
	free(offsets);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "selftest") == 0)
		return selftest();
	if (argc >= 7 && strcmp(argv[1], "score") == 0)
		return score(argc, argv);
	fprintf(stderr, "usage: core_driver selftest | core_driver score LIB N_CLASSES TRANSFORM KIND EPS [PARAMS -- OFFSETS]\n");
	return 64;
}
