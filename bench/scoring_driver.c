/*
 * scoring_driver.c -- the physical limit of a compiled model: TL2cgen's predict() in a
 * tight C loop over float32 rows, on T threads (benchmark (a) of bench/bench_scoring.py).
 *
 *   scoring_driver LIBRARY FEATURES N_ROWS N_FEATURES THREADS
 *
 * FEATURES is a file of N_ROWS x N_FEATURES float32 values (row-major, native order),
 * NaN for missing. Each thread scores a contiguous slice of the rows exactly as the
 * extension does (float32 widened to double, NaN as missing = -1, a zeroed result
 * buffer per row) and sums the first output so the work cannot be optimised away.
 * Prints "seconds rows checksum" (wall time of the scoring loop only).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

union Entry
{
	int			missing;
	double		fvalue;
	int			qvalue;
};

typedef void (*predict_fn) (union Entry *data, int pred_margin, double *result);
typedef int32_t (*count_fn) (void);
typedef void (*classes_fn) (int32_t *out);

static predict_fn predict;
static const float *rows;
static long n_features;
static long n_outputs;

typedef struct
{
	long		first;
	long		last;
	double		checksum;
} Slice;

static void *
score_slice(void *arg)
{
	Slice	   *slice = arg;
	union Entry *entries = calloc((size_t) n_features, sizeof(union Entry));
	double	   *result = calloc((size_t) n_outputs, sizeof(double));
	double		sum = 0.0;

	if (entries == NULL || result == NULL)
	{
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	for (long r = slice->first; r < slice->last; r++)
	{
		const float *row = rows + r * n_features;

		for (long j = 0; j < n_features; j++)
		{
			if (isnan(row[j]))
				entries[j].missing = -1;
			else
				entries[j].fvalue = (double) row[j];
		}
		memset(result, 0, sizeof(double) * (size_t) n_outputs);
		predict(entries, 0, result);
		sum += result[0];
	}
	slice->checksum = sum;
	free(entries);
	free(result);
	return NULL;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	void	   *lib;
	FILE	   *fh;
	long		n_rows;
	int			threads;
	count_fn	get_num_feature;
	count_fn	get_num_target;
	classes_fn	get_num_class;
	int32_t		classes[64];
	int32_t		targets;
	float	   *data;
	pthread_t  *tids;
	Slice	   *slices;
	double		start,
				seconds,
				checksum = 0.0;

	if (argc != 6)
	{
		fprintf(stderr, "usage: %s LIBRARY FEATURES N_ROWS N_FEATURES THREADS\n", argv[0]);
		return 2;
	}
	n_rows = atol(argv[3]);
	n_features = atol(argv[4]);
	threads = atoi(argv[5]);
	if (n_rows <= 0 || n_features <= 0 || threads <= 0 || threads > 256)
	{
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL)
	{
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	predict = (predict_fn) dlsym(lib, "predict");
	get_num_feature = (count_fn) dlsym(lib, "get_num_feature");
	get_num_target = (count_fn) dlsym(lib, "get_num_target");
	get_num_class = (classes_fn) dlsym(lib, "get_num_class");
	if (!predict || !get_num_feature || !get_num_target || !get_num_class)
	{
		fprintf(stderr, "not a TL2cgen library\n");
		return 1;
	}
	if (get_num_feature() != n_features)
	{
		fprintf(stderr, "the library takes %d features, not %ld\n", get_num_feature(), n_features);
		return 1;
	}
	targets = get_num_target();
	if (targets < 1 || targets > 64)
	{
		fprintf(stderr, "unexpected number of targets %d\n", targets);
		return 1;
	}
	get_num_class(classes);
	n_outputs = 0;
	for (int t = 0; t < targets; t++)
		if (classes[t] > n_outputs)
			n_outputs = classes[t];
	n_outputs *= targets;

	data = malloc(sizeof(float) * (size_t) (n_rows * n_features));
	fh = fopen(argv[2], "rb");
	if (data == NULL || fh == NULL
		|| fread(data, sizeof(float), (size_t) (n_rows * n_features), fh) != (size_t) (n_rows * n_features))
	{
		fprintf(stderr, "cannot read %ld x %ld floats from %s\n", n_rows, n_features, argv[2]);
		return 1;
	}
	fclose(fh);
	rows = data;

	tids = calloc((size_t) threads, sizeof(pthread_t));
	slices = calloc((size_t) threads, sizeof(Slice));
	start = now();
	for (int t = 0; t < threads; t++)
	{
		slices[t].first = n_rows * t / threads;
		slices[t].last = n_rows * (t + 1) / threads;
		pthread_create(&tids[t], NULL, score_slice, &slices[t]);
	}
	for (int t = 0; t < threads; t++)
	{
		pthread_join(tids[t], NULL);
		checksum += slices[t].checksum;
	}
	seconds = now() - start;
	printf("%.6f %ld %.6f\n", seconds, n_rows, checksum);
	free(tids);
	free(slices);
	free(data);
	return 0;
}
