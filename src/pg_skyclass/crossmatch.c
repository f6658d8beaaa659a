/*
 * crossmatch.c -- skyclass.crossmatch_sweep: a zone sweep cross-match in memory.
 *
 * skyclass.crossmatch_sweep(table_a, table_b, radius_arcsec, best_only) reads
 * (object_id, ra, dec) of both tables through SPI (with the caller's
 * privileges, so row-level security, views and partitions behave as in any
 * query) and matches them in memory:
 *
 *   1. The sky is cut into zones of height h >= radius in Dec.  Both
 *      catalogs are sorted by (zone, ra).
 *   2. For each zone of a, the RA half-width w of the search window comes
 *      from the radius and the largest |Dec| of a's objects in the zone
 *      (sin w = sin r / cos dec, widened by a safety margin); near a pole
 *      the window is the whole ring.  A match of an object of zone z lies in
 *      zone z-1, z or z+1 of b.
 *   3. a's objects of one zone are swept against each of those three zones
 *      of b, in RA order: two pointers bound the window, the parts of a
 *      window that cross RA 0/360 are found by binary search.  Candidates
 *      within the Dec tolerance get the exact distance.
 *   4. Matches are sorted by (object_id_a, distance, object_id_b) and
 *      returned in that order with their rank (or the first one per
 *      object_id_a when best_only).
 *
 * The distance is skyclass.angular_distance (migration 0002, Vincenty's
 * formula) times 3600, evaluated with the same libm calls in the same order as
 * the SQL expression does (radians(x) is x * RADIANS_PER_DEGREE, degrees(x)
 * is x / RADIANS_PER_DEGREE, `^ 2` is pow(x, 2)), so the distances, the
 * radius cut and the order of ties are bit for bit those of the SQL methods
 * of skyclass.crossmatch.  The Makefile builds with -ffp-contract=off, so no
 * multiply-add is fused.
 *
 * Memory: 32 bytes per row of each table and 24 bytes per match, in one
 * memory context freed before the function returns; the result goes into a
 * tuplestore, which spills to disk beyond work_mem.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

/* The radius bounds of skyclass.crossmatch. */
#define SWEEP_MAX_RADIUS_ARCSEC 3600.0

/*
 * Smallest zone height in degrees.  Zones are at least the radius high; this
 * floor only keeps zone numbers within int32 (180 / 1e-6 = 1.8e8) for tiny
 * radii.
 */
#define SWEEP_MIN_ZONE_DEG 1e-6

/*
 * Safety margins of the candidate search (relative, and absolute in degrees).
 * Rounding moves a computed distance by about 1e-13 degrees at most; the
 * margins only make windows slightly wider, never change which pairs match:
 * the exact distance decides.
 */
#define SWEEP_REL_MARGIN 1e-5
#define SWEEP_ABS_MARGIN_DEG 1e-8

/* Windows at least this wide (half-width, degrees) become the whole ring. */
#define SWEEP_WHOLE_RING_DEG 90.0

/* One object as the sweep sees it. */
typedef struct SweepObject
{
	double		ra;
	double		dec;
	int64		id;
	int32		zone;
	int32		spare;
} SweepObject;

/* One match. */
typedef struct SweepPair
{
	int64		id_a;
	int64		id_b;
	double		distance_arcsec;
} SweepPair;

/* A growing array of objects or pairs, in the sweep's memory context. */
typedef struct SweepObjects
{
	SweepObject *items;
	Size		count;
	Size		capacity;
} SweepObjects;

typedef struct SweepPairs
{
	SweepPair  *items;
	Size		count;
	Size		capacity;
} SweepPairs;

/* The DestReceiver that collects rows straight from the executor's slots. */
typedef struct SweepReceiver
{
	DestReceiver pub;
	SweepObjects *objects;
	MemoryContext cxt;
	const char *table;
	uint64		skipped;		/* NULL or out-of-range rows left out */
} SweepReceiver;

/* What one sweep needs to know besides the objects. */
typedef struct SweepParams
{
	double		radius_arcsec;	/* the cut, exactly as given */
	double		radius_deg;
	double		zone_height;	/* degrees */
	double		dec_tolerance;	/* degrees: candidates with larger |dDec| are skipped */
	bool		self_match;		/* skip pairs of equal object_id */
	bool		best_only;
} SweepParams;

/* Sorts with inlined comparisons (lib/sort_template.h). */
static inline int
compare_zone_ra(const SweepObject *x, const SweepObject *y)
{
	if (x->zone != y->zone)
		return x->zone < y->zone ? -1 : 1;
	if (x->ra != y->ra)
		return x->ra < y->ra ? -1 : 1;
	return 0;
}

#define ST_SORT sort_by_zone_ra
#define ST_ELEMENT_TYPE SweepObject
#define ST_COMPARE(a, b) compare_zone_ra(a, b)
#define ST_CHECK_FOR_INTERRUPTS
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* RA only: the order within one zone. */
#define ST_SORT sort_by_ra
#define ST_ELEMENT_TYPE SweepObject
#define ST_COMPARE(a, b) ((a)->ra < (b)->ra ? -1 : (a)->ra > (b)->ra ? 1 : 0)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* (id_a, distance, id_b): the order of the result. */
static inline int
compare_pairs(const SweepPair *x, const SweepPair *y)
{
	if (x->id_a != y->id_a)
		return x->id_a < y->id_a ? -1 : 1;
	if (x->distance_arcsec != y->distance_arcsec)
		return x->distance_arcsec < y->distance_arcsec ? -1 : 1;
	if (x->id_b != y->id_b)
		return x->id_b < y->id_b ? -1 : 1;
	return 0;
}

#define ST_SORT sort_pairs
#define ST_ELEMENT_TYPE SweepPair
#define ST_COMPARE(a, b) compare_pairs(a, b)
#define ST_CHECK_FOR_INTERRUPTS
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/*
 * pow() through a variable exponent: the compiler turns pow(x, 2.0) with a
 * constant 2.0 into x * x, and PostgreSQL's `^` calls pow() itself.  The two
 * agree whenever pow is correctly rounded, which glibc does not promise.
 */
static volatile double sweep_two = 2.0;

/*
 * skyclass.angular_distance(ra1, dec1, ra2, dec2) * 3600, operation for
 * operation; sin1/cos1 are sin(radians(dec1)) and cos(radians(dec1)).
 */
static inline double
vincenty_arcsec(double ra1, double sin1, double cos1, double ra2, double dec2)
{
	double		two = sweep_two;
	double		dec2r = dec2 * RADIANS_PER_DEGREE;
	double		dra = (ra2 - ra1) * RADIANS_PER_DEGREE;
	double		sin2 = sin(dec2r);
	double		cos2 = cos(dec2r);
	double		cos_dra = cos(dra);
	double		y;
	double		x;

	y = sqrt(pow(cos2 * sin(dra), two)
			 + pow(cos1 * sin2 - sin1 * cos2 * cos_dra, two));
	x = sin1 * sin2 + cos1 * cos2 * cos_dra;
	return atan2(y, x) / RADIANS_PER_DEGREE * 3600;
}

/* -- growing arrays ---------------------------------------------------------------- */

static void *
grow(MemoryContext cxt, void *items, Size *capacity, Size item_size, Size needed)
{
	Size		wanted = Max(*capacity, (Size) 1024);

	while (wanted < needed)
		wanted *= 2;
	if (wanted == *capacity)
		return items;
	if (wanted > MaxAllocHugeSize / item_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cross-match needs more than %zu entries in memory", wanted / 2)));
	*capacity = wanted;
	if (items == NULL)
		return MemoryContextAllocHuge(cxt, wanted * item_size);
	return repalloc_huge(items, wanted * item_size);
}

static inline void
add_pair(SweepPairs *pairs, MemoryContext cxt, int64 id_a, int64 id_b, double d)
{
	if (pairs->count == pairs->capacity)
		pairs->items = grow(cxt, pairs->items, &pairs->capacity, sizeof(SweepPair),
							pairs->count + 1);
	pairs->items[pairs->count].id_a = id_a;
	pairs->items[pairs->count].id_b = id_b;
	pairs->items[pairs->count].distance_arcsec = d;
	pairs->count++;
}

/* -- reading a table ----------------------------------------------------------------- */

static bool
sweep_receive(TupleTableSlot *slot, DestReceiver *self)
{
	SweepReceiver *r = (SweepReceiver *) self;
	SweepObjects *objects = r->objects;
	SweepObject *o;
	double		ra;
	double		dec;

	slot_getsomeattrs(slot, 3);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2])
	{
		r->skipped++;
		return true;
	}
	ra = DatumGetFloat8(slot->tts_values[1]);
	dec = DatumGetFloat8(slot->tts_values[2]);
	/* The rows the cells method keeps (NaN fails every comparison). */
	if (!(ra >= 0 && ra < 360 && dec >= -90 && dec <= 90))
	{
		r->skipped++;
		return true;
	}
	if (objects->count == objects->capacity)
	{
		CHECK_FOR_INTERRUPTS();
		objects->items = grow(r->cxt, objects->items, &objects->capacity,
							  sizeof(SweepObject), objects->count + 1);
	}
	o = &objects->items[objects->count++];
	o->id = DatumGetInt64(slot->tts_values[0]);
	o->ra = ra;
	o->dec = dec;
	o->zone = 0;
	o->spare = 0;
	return true;
}

static void
sweep_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	SweepReceiver *r = (SweepReceiver *) self;

	/* The query casts, so this only guards against a changed query text. */
	if (typeinfo->natts != 3 ||
		TupleDescAttr(typeinfo, 0)->atttypid != INT8OID ||
		TupleDescAttr(typeinfo, 1)->atttypid != FLOAT8OID ||
		TupleDescAttr(typeinfo, 2)->atttypid != FLOAT8OID)
		elog(ERROR, "unexpected row type reading %s", r->table);
}

static void
sweep_shutdown(DestReceiver *self)
{
}

static void
sweep_destroy(DestReceiver *self)
{
}

/*
 * The column `name` of relation `relid` must exist and have one of the types
 * the cross-match accepts; the query then casts it losslessly.
 */
static void
check_column(Oid relid, const char *table, const char *name, bool is_id)
{
	AttrNumber	attnum = get_attnum(relid, name);
	Oid			type;

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table %s has no column \"%s\"", table, name),
				 errhint("crossmatch_sweep reads the columns object_id, ra and \"dec\" "
						 "(ids and positions in degrees), as catalogs loaded by skyclass have.")));
	type = get_atttype(relid, attnum);
	if (is_id ? !(type == INT8OID || type == INT4OID || type == INT2OID)
		: !(type == FLOAT8OID || type == FLOAT4OID))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table %s must be %s, not %s", name, table,
						is_id ? "bigint, integer or smallint" : "double precision or real",
						format_type_be(type))));
}

/* The quoted schema.table of relid; 42P01 when there is no such relation. */
static char *
relation_name(Oid relid)
{
	char	   *rel = get_rel_name(relid);
	char	   *nsp;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	nsp = get_namespace_name(get_rel_namespace(relid));
	return quote_qualified_identifier(nsp, rel);
}

/* Read (object_id, ra, dec) of one table into objects; SPI must be connected. */
static void
read_table(Oid relid, const char *table, SweepObjects *objects, MemoryContext cxt)
{
	SweepReceiver receiver;
	SPIExecuteOptions options;
	StringInfoData query;
	int			rc;

	check_column(relid, table, "object_id", true);
	check_column(relid, table, "ra", false);
	check_column(relid, table, "dec", false);

	initStringInfo(&query);
	appendStringInfo(&query,
					 "SELECT object_id::pg_catalog.int8, ra::pg_catalog.float8, "
					 "%s::pg_catalog.float8 FROM %s",
					 quote_identifier("dec"), table);

	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = sweep_receive;
	receiver.pub.rStartup = sweep_startup;
	receiver.pub.rShutdown = sweep_shutdown;
	receiver.pub.rDestroy = sweep_destroy;
	/* Not DestSPI (that one owns SPI_tuptable) nor DestNone (rows discarded). */
	receiver.pub.mydest = DestTuplestore;
	receiver.objects = objects;
	receiver.cxt = cxt;
	receiver.table = table;

	memset(&options, 0, sizeof(options));
	options.read_only = true;
	options.dest = (DestReceiver *) &receiver;
	rc = SPI_execute_extended(query.data, &options);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading %s failed: %s", table, SPI_result_code_string(rc));
	if (receiver.skipped > 0)
		ereport(DEBUG1,
				(errmsg_internal("crossmatch_sweep: %llu rows of %s without a valid position "
								 "left out", (unsigned long long) receiver.skipped, table)));
}

/* -- the sweep ----------------------------------------------------------------------- */

/*
 * Number the zones and sort by (zone, ra).  Zones are few compared with the
 * rows when the radius is not tiny, so a counting sort by zone into a new
 * array and small sorts by RA within each zone beat one comparison sort
 * (measured: 0.23 s against about 0.1 s for 2 x 1M rows); otherwise one
 * comparison sort.
 */
static void
sort_objects(SweepObjects *objects, double zone_height, MemoryContext cxt)
{
	SweepObject *items = objects->items;
	Size		n = objects->count;
	SweepObject *sorted;
	Size	   *next;
	int32		zmin = PG_INT32_MAX;
	int32		zmax = PG_INT32_MIN;
	Size		span;
	Size		i;
	Size		z;

	for (i = 0; i < n; i++)
	{
		int32		zone = (int32) floor((items[i].dec + 90.0) / zone_height);

		items[i].zone = zone;
		zmin = Min(zmin, zone);
		zmax = Max(zmax, zone);
	}
	if (n < 2)
		return;
	span = (Size) ((int64) zmax - zmin + 1);
	if (span > 2 * n + 1024)
	{
		sort_by_zone_ra(items, n);
		return;
	}
	/* next[z]: where the next object of zone zmin + z goes. */
	next = MemoryContextAllocHuge(cxt, (span + 1) * sizeof(Size));
	memset(next, 0, (span + 1) * sizeof(Size));
	for (i = 0; i < n; i++)
		next[items[i].zone - zmin + 1]++;
	for (z = 1; z <= span; z++)
		next[z] += next[z - 1];
	sorted = MemoryContextAllocHuge(cxt, n * sizeof(SweepObject));
	for (i = 0; i < n; i++)
		sorted[next[items[i].zone - zmin]++] = items[i];
	pfree(items);
	/* Now next[z] is where zone zmin + z ends. */
	for (z = 0; z < span; z++)
	{
		Size		begin = z == 0 ? 0 : next[z - 1];

		if (next[z] - begin > 1)
			sort_by_ra(sorted + begin, next[z] - begin);
		if ((z & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(next);
	objects->items = sorted;
	objects->capacity = n;
}

/* First index in [lo, hi) whose ra is >= value (hi when none). */
static inline Size
first_ra_at_least(const SweepObject *b, Size lo, Size hi, double value)
{
	while (lo < hi)
	{
		Size		mid = lo + (hi - lo) / 2;

		if (b[mid].ra < value)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Test the candidates b[from..to) against object a; keep each match, or with
 * best_only the best one so far in *best (id_b, distance).
 */
static inline void
test_candidates(const SweepParams *p, const SweepObject *a, double sin_a, double cos_a,
				const SweepObject *b, Size from, Size to,
				SweepPairs *pairs, MemoryContext cxt, bool *found, int64 *best_id,
				double *best_d)
{
	Size		m;

	for (m = from; m < to; m++)
	{
		const SweepObject *c = &b[m];
		double		d;

		if (fabs(c->dec - a->dec) > p->dec_tolerance)
			continue;
		if (p->self_match && c->id == a->id)
			continue;
		d = vincenty_arcsec(a->ra, sin_a, cos_a, c->ra, c->dec);
		if (!(d <= p->radius_arcsec))
			continue;
		if (!p->best_only)
			add_pair(pairs, cxt, a->id, c->id, d);
		else if (!*found || d < *best_d || (d == *best_d && c->id < *best_id))
		{
			*found = true;
			*best_id = c->id;
			*best_d = d;
		}
	}
}

/*
 * RA half-width (degrees) of the window of objects whose |Dec| is at most
 * max_abs_dec, or a negative value for the whole ring.
 */
static double
window_half_width(const SweepParams *p, double max_abs_dec)
{
	double		margin_r = p->radius_deg * (1 + SWEEP_REL_MARGIN) + SWEEP_ABS_MARGIN_DEG;
	double		ratio;
	double		w;

	if (max_abs_dec + margin_r >= 90.0)
		return -1;
	ratio = sin(margin_r * RADIANS_PER_DEGREE) / cos(max_abs_dec * RADIANS_PER_DEGREE);
	if (!(ratio < 1.0))
		return -1;
	w = asin(ratio) / RADIANS_PER_DEGREE;
	w = w * (1 + SWEEP_REL_MARGIN) + SWEEP_ABS_MARGIN_DEG;
	return w >= SWEEP_WHOLE_RING_DEG ? -1 : w;
}

/*
 * Match a (sorted by zone, ra) against b (sorted by zone, ra).  With
 * best_only, one pair per object of a that has a match; otherwise every pair.
 */
static void
sweep(const SweepParams *p, SweepObjects *objects_a, SweepObjects *objects_b,
	  SweepPairs *pairs, MemoryContext cxt)
{
	const SweepObject *a = objects_a->items;
	const SweepObject *b = objects_b->items;
	Size		na = objects_a->count;
	Size		nb = objects_b->count;
	double	   *sin_a;
	double	   *cos_a;
	Size		zone_b = 0;		/* first object of b in a zone >= (zone of a) - 1 */
	Size		i = 0;

	if (na == 0 || nb == 0)
		return;
	sin_a = MemoryContextAllocHuge(cxt, na * sizeof(double));
	cos_a = MemoryContextAllocHuge(cxt, na * sizeof(double));
	for (i = 0; i < na; i++)
	{
		double		dec_r = a[i].dec * RADIANS_PER_DEGREE;

		sin_a[i] = sin(dec_r);
		cos_a[i] = cos(dec_r);
	}

	i = 0;
	while (i < na)
	{
		int32		z = a[i].zone;
		Size		end = i;
		double		max_abs_dec = 0;
		double		w;
		Size		s;
		bool	   *found;
		int64	   *best_id;
		double	   *best_d;
		Size		k;

		CHECK_FOR_INTERRUPTS();
		while (end < na && a[end].zone == z)
		{
			max_abs_dec = Max(max_abs_dec, fabs(a[end].dec));
			end++;
		}
		w = window_half_width(p, max_abs_dec);

		found = palloc0((end - i) * sizeof(bool));
		best_id = palloc((end - i) * sizeof(int64));
		best_d = palloc((end - i) * sizeof(double));

		while (zone_b < nb && b[zone_b].zone < z - 1)
			zone_b++;
		s = zone_b;
		/* The zones z-1, z, z+1 of b, one contiguous slice each. */
		while (s < nb && b[s].zone <= z + 1)
		{
			Size		e = s;
			Size		lo = s;
			Size		hi = s;

			while (e < nb && b[e].zone == b[s].zone)
				e++;
			for (k = i; k < end; k++)
			{
				const SweepObject *o = &a[k];
				Size		slot = k - i;

				/* A zone may hold every object, and each may have many candidates. */
				CHECK_FOR_INTERRUPTS();
				if (w < 0)
				{
					test_candidates(p, o, sin_a[k], cos_a[k], b, s, e, pairs, cxt,
									&found[slot], &best_id[slot], &best_d[slot]);
					continue;
				}
				/* a is in RA order: the window only moves forward. */
				while (lo < e && b[lo].ra < o->ra - w)
					lo++;
				if (hi < lo)
					hi = lo;
				while (hi < e && b[hi].ra <= o->ra + w)
					hi++;
				test_candidates(p, o, sin_a[k], cos_a[k], b, lo, hi, pairs, cxt,
								&found[slot], &best_id[slot], &best_d[slot]);
				/* The parts of the window across RA 0/360 (w < 90: no overlap). */
				if (o->ra - w < 0)
					test_candidates(p, o, sin_a[k], cos_a[k], b,
									first_ra_at_least(b, s, e, o->ra - w + 360.0), e,
									pairs, cxt, &found[slot], &best_id[slot], &best_d[slot]);
				if (o->ra + w >= 360.0)
				{
					Size		stop = s;
					double		limit = o->ra + w - 360.0;

					while (stop < e && b[stop].ra <= limit)
						stop++;
					test_candidates(p, o, sin_a[k], cos_a[k], b, s, stop, pairs, cxt,
									&found[slot], &best_id[slot], &best_d[slot]);
				}
			}
			s = e;
		}
		if (p->best_only)
		{
			for (k = i; k < end; k++)
				if (found[k - i])
					add_pair(pairs, cxt, a[k].id, best_id[k - i], best_d[k - i]);
		}
		pfree(found);
		pfree(best_id);
		pfree(best_d);
		i = end;
	}
}

/* -- the SQL function ---------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(skyclass_crossmatch_sweep);
Datum
skyclass_crossmatch_sweep(PG_FUNCTION_ARGS)
{
	Oid			relid_a = PG_GETARG_OID(0);
	Oid			relid_b = PG_GETARG_OID(1);
	double		radius_arcsec = PG_GETARG_FLOAT8(2);
	bool		best_only = PG_GETARG_BOOL(3);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *table_a;
	char	   *table_b;
	MemoryContext sweep_cxt;
	MemoryContext old_cxt;
	SweepObjects objects_a = {0};
	SweepObjects objects_b = {0};
	SweepPairs	pairs = {0};
	SweepParams params;
	Size		i;
	int64		previous_id = 0;
	int32		rank = 0;

	if (!(radius_arcsec > 0 && radius_arcsec <= SWEEP_MAX_RADIUS_ARCSEC))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("radius_arcsec must be in (0, 3600] arcsec, not %s",
						float8out_internal(radius_arcsec))));
	table_a = relation_name(relid_a);
	table_b = relation_name(relid_b);

	InitMaterializedSRF(fcinfo, 0);
	if (rsinfo->setDesc->natts != 4)
		elog(ERROR, "crossmatch_sweep: expected 4 output columns, not %d",
			 rsinfo->setDesc->natts);

	sweep_cxt = AllocSetContextCreate(CurrentMemoryContext, "skyclass crossmatch_sweep",
									  ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	read_table(relid_a, table_a, &objects_a, sweep_cxt);
	if (relid_b != relid_a)
		read_table(relid_b, table_b, &objects_b, sweep_cxt);
	SPI_finish();

	params.radius_arcsec = radius_arcsec;
	params.radius_deg = radius_arcsec / 3600.0;
	params.zone_height = Max(params.radius_deg * (1 + SWEEP_REL_MARGIN), SWEEP_MIN_ZONE_DEG);
	params.dec_tolerance = params.radius_deg * (1 + SWEEP_REL_MARGIN) + SWEEP_ABS_MARGIN_DEG;
	params.self_match = relid_a == relid_b;
	params.best_only = best_only;

	old_cxt = MemoryContextSwitchTo(sweep_cxt);
	sort_objects(&objects_a, params.zone_height, sweep_cxt);
	if (params.self_match)
		objects_b = objects_a;	/* a self-match reads and sorts the table once */
	else
		sort_objects(&objects_b, params.zone_height, sweep_cxt);
	sweep(&params, &objects_a, &objects_b, &pairs, sweep_cxt);
	sort_pairs(pairs.items, pairs.count);
	MemoryContextSwitchTo(old_cxt);

	for (i = 0; i < pairs.count; i++)
	{
		const SweepPair *pair = &pairs.items[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (i == 0 || pair->id_a != previous_id)
			rank = 0;
		else if (best_only)
			continue;			/* object_id_a repeated in a: its best is first */
		previous_id = pair->id_a;
		rank++;
		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		values[0] = Int64GetDatum(pair->id_a);
		values[1] = Int64GetDatum(pair->id_b);
		values[2] = Float8GetDatum(pair->distance_arcsec);
		values[3] = Int32GetDatum(rank);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextDelete(sweep_cxt);
	return (Datum) 0;
}
