/*
 * chunk_writer.c -- skyclass.score_chunk_into: score one chunk of a feature
 * table with a compiled model and write its compact rows in bulk.
 *
 * The scoring job's SQL path (skyclass.score_chunk, revision 0017) runs
 *   INSERT INTO chunk SELECT <encode> FROM (SELECT object_id, predict(v, x)
 *                                            ... ORDER BY object_id) AS s
 * and PostgreSQL 15 forms, inserts and WAL-logs every row of it one by one.
 * Here one scan of the chunk's features (through SPI, into a DestReceiver:
 * no tuple store) scores each row with the library of skyclass.predict,
 * encodes it exactly as skyclass.prediction_codec does for a classification
 * version (the 0-based top class, 16-bit probabilities), and keeps the
 * encoded rows in memory (about 20 bytes each for 3 classes, at most
 * maintenance_work_mem); they are sorted by object_id only when the scan did
 * not deliver them in that order, and written with table_multi_insert and a
 * BulkInsertState, as COPY does: one WAL record per page.  The target's CHECK
 * and NOT NULL constraints are checked per row and its indexes (if any) are
 * maintained; the scoring job gives it none, the chunk's index is built in
 * bulk when the chunk is attached.
 *
 * Native code runs only through ensure_library() (skyclass.c): the same trust
 * rules as skyclass.predict.  The function itself checks SELECT on the
 * feature table (the executor does) and INSERT on the target.
 */
#include "postgres.h"

#include <math.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "tcop/dest.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "skyclass_internal.h"

/* Rows per table_multi_insert call (COPY's MAX_BUFFERED_TUPLES). */
#define CW_BATCH 1000

/* The encoded rows of one chunk, in scan order. */
typedef struct ChunkRows
{
	int64	   *ids;
	int16	   *codes;			/* per row: top, then n_classes probabilities */
	float4	   *proba;			/* scratch: one row's probabilities as float4 */
	MemoryContext cxt;			/* owns ids and codes (not the executor's contexts) */
	int64		n;
	int64		capacity;
	int64		max_rows;		/* from maintenance_work_mem */
	int			width;			/* 1 + n_classes */
	bool		sorted;			/* ids strictly increasing so far */
} ChunkRows;

typedef struct ChunkReceiver
{
	DestReceiver pub;
	VersionEntry *v;
	ChunkRows  *rows;
	MemoryContext row_cxt;		/* detoasted arrays, reset every few rows */
	int64		current_id;		/* for the error context */
	bool		in_row;
	const char *features_name;
} ChunkReceiver;

static void
chunk_error_context(void *arg)
{
	ChunkReceiver *r = (ChunkReceiver *) arg;

	if (r->in_row)
		errcontext("scoring object_id " INT64_FORMAT " of %s", r->current_id, r->features_name);
}

/*
 * SQL's greatest() and array_position() over real: the first largest value,
 * NaN larger than everything (float4_gt).
 */
static int
top_class(const float4 *p, int n)
{
	int			best = 0;
	int			k;

	for (k = 1; k < n; k++)
	{
		if (float4_gt(p[k], p[best]))
			best = k;
	}
	return best;
}

/*
 * (least(greatest(p::float8, 0), 1) * 65535 - 32768)::smallint, as
 * skyclass.prediction_codec writes it: SQL's greatest and least put NaN
 * above everything, and the cast rounds half to even (rint).
 */
static int16
encode_probability(float4 p)
{
	double		v = (double) p;

	if (isnan(v))
		v = 1.0;
	else
		v = v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
	return (int16) rint(v * 65535.0 - 32768.0);
}

static void
rows_append(ChunkRows *rows, int64 id, const double *proba, int n_classes)
{
	float4	   *p = rows->proba;
	int16	   *out;
	int			k;

	if (rows->n == rows->capacity)
	{
		int64		grown = Min(Max(rows->capacity * 2, 4096), rows->max_rows);

		if (rows->n >= rows->max_rows)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("the chunk holds more than " INT64_FORMAT " rows, more than "
							"maintenance_work_mem (%d kB) allows", rows->max_rows,
							maintenance_work_mem),
					 errhint("Score smaller object_id ranges (skyclass score --chunk-size), or "
							 "raise maintenance_work_mem.")));
		rows->ids = rows->ids == NULL
			? MemoryContextAllocHuge(rows->cxt, sizeof(int64) * grown)
			: repalloc_huge(rows->ids, sizeof(int64) * grown);
		rows->codes = rows->codes == NULL
			? MemoryContextAllocHuge(rows->cxt, sizeof(int16) * rows->width * grown)
			: repalloc_huge(rows->codes, sizeof(int16) * rows->width * grown);
		rows->capacity = grown;
	}
	/* As skyclass.predict returns them: float4, then encoded. */
	for (k = 0; k < n_classes; k++)
		p[k] = (float4) proba[k];
	out = rows->codes + rows->n * rows->width;
	out[0] = (int16) top_class(p, n_classes);
	for (k = 0; k < n_classes; k++)
		out[1 + k] = encode_probability(p[k]);
	if (rows->n > 0 && id <= rows->ids[rows->n - 1])
		rows->sorted = false;
	rows->ids[rows->n++] = id;
}

static bool
chunk_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ChunkReceiver *r = (ChunkReceiver *) self;
	VersionEntry *v = r->v;
	MemoryContext old;
	bool		isnull;
	Datum		d;
	const float4 *x;

	d = slot_getattr(slot, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s has a row whose object_id is NULL", r->features_name)));
	r->current_id = DatumGetInt64(d);
	r->in_row = true;
	d = slot_getattr(slot, 2, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the features of object_id " INT64_FORMAT " are NULL", r->current_id),
				 errhint("Rebuild the feature set; a missing feature is NaN, not NULL.")));
	if ((r->rows->n & 1023) == 0)
		MemoryContextReset(r->row_cxt);
	old = MemoryContextSwitchTo(r->row_cxt);
	x = check_features(DatumGetArrayTypeP(d), v->n_features);
	MemoryContextSwitchTo(old);
	sc_fill_entries(x, v->n_features, v->entries);
	sc_predict_raw(&v->artifact->lib, v->entries, v->raw);
	sc_probabilities(v->transform, v->raw, &v->cal, v->proba, v->n_classes);
	rows_append(r->rows, r->current_id, v->proba, v->n_classes);
	r->in_row = false;
	return true;
}

static void
chunk_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
chunk_shutdown(DestReceiver *self)
{
}

static void
chunk_destroy(DestReceiver *self)
{
}

/* Sort the rows by object_id through a permutation (ids are unique keys). */
typedef struct IdIndex
{
	int64		id;
	int64		index;
} IdIndex;

static int
id_index_cmp(const void *a, const void *b)
{
	int64		x = ((const IdIndex *) a)->id;
	int64		y = ((const IdIndex *) b)->id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* The relation's name, schema-qualified and quoted. */
static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* 42P16 unless `relid` has a column `name` of type `type` (not dropped). */
static void
require_column(Oid relid, const char *name, Oid type, const char *what)
{
	AttrNumber	att = get_attnum(relid, name);

	if (att == InvalidAttrNumber || get_atttype(relid, att) != type)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("%s %s has no column %s of type %s", what, qualified_name(relid), name,
						format_type_be(type))));
}

/*
 * The target must have exactly the columns of skyclass.prediction_codec for a
 * classification version with n classes: object_id bigint, top smallint,
 * p1 .. pn smallint, none generated; a plain table without triggers or row
 * security, which the current role may insert into.
 */
static void
check_target(Relation rel, int n_classes)
{
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *name = qualified_name(RelationGetRelid(rel));
	int			live = 0;
	int			i;
	AclResult	acl;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("target %s is not a table", name),
				 errdetail("Chunks are written into a plain table (a partition of the run's "
						   "table is attached afterwards), not a partitioned table, view or "
						   "foreign table.")));
	acl = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(rel));
	if (rel->trigdesc != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("target %s has triggers; skyclass.score_chunk_into writes without them",
						name)));
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("target %s has row level security enabled", name)));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		char		expected[NAMEDATALEN];
		Oid			type = INT2OID;

		if (att->attisdropped)
			continue;
		if (live == 0)
		{
			strlcpy(expected, "object_id", sizeof(expected));
			type = INT8OID;
		}
		else if (live == 1)
			strlcpy(expected, "top", sizeof(expected));
		else
			snprintf(expected, sizeof(expected), "p%d", live - 1);
		if (live > n_classes + 1 || strcmp(NameStr(att->attname), expected) != 0 ||
			att->atttypid != type || att->attgenerated != '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("target %s does not have the columns of the model version's "
							"predictions: column %d is %s %s%s", name, live + 1,
							NameStr(att->attname), format_type_be(att->atttypid),
							att->attgenerated != '\0' ? " (generated)" : ""),
					 errdetail("Expected object_id bigint, top smallint, p1 .. p%d smallint "
							   "(skyclass.prediction_codec).", n_classes)));
		live++;
	}
	if (live != n_classes + 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("target %s has %d columns, the predictions of the model version %d",
						name, live, n_classes + 2),
				 errdetail("Expected object_id bigint, top smallint, p1 .. p%d smallint "
						   "(skyclass.prediction_codec).", n_classes)));
}

/* The task of a model version (SPI connected; 42704 when it does not exist). */
static char *
version_task(int64 id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(id)};
	bool		isnull;
	int			ret;

	ret = SPI_execute_with_args("SELECT v.task FROM skyclass.model_version AS v"
								" WHERE v.model_version_id OPERATOR(pg_catalog.=) $1",
								1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model version " INT64_FORMAT " does not exist", id)));
	return TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											 &isnull));
}

/* Write the rows (in object_id order) into rel with multi-inserts. */
static void
write_rows(Relation rel, ChunkRows *rows, const IdIndex *order)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rinfo = makeNode(ResultRelInfo);
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *slots[CW_BATCH];
	BulkInsertState bistate = GetBulkInsertState();
	CommandId	cid = GetCurrentCommandId(true);
	MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
													"skyclass chunk batch",
													ALLOCSET_DEFAULT_SIZES);
	bool		has_indexes;
	bool		has_constraints = desc->constr != NULL &&
		(desc->constr->has_not_null || desc->constr->num_check > 0);
	int64		i;
	int			b;
	int			options = 0;

	/*
	 * A table created (or truncated) in this very subtransaction, as the
	 * scoring job's chunk tables are: write the rows frozen and their pages
	 * all-visible, as COPY FREEZE does.  No other transaction can see the
	 * table before we commit, and if this subtransaction aborts the table
	 * goes with it; readers then need no commit-log lookups and set no hint
	 * bits, and vacuum has nothing to do on these pages.  (Unlike COPY FREEZE
	 * this does not refuse when the transaction holds older snapshots: this
	 * function never reads the target, so no snapshot of this transaction
	 * sees the rows before it returns.)
	 */
	if (rel->rd_createSubid == GetCurrentSubTransactionId() ||
		rel->rd_newRelfilenodeSubid == GetCurrentSubTransactionId())
		options |= TABLE_INSERT_FROZEN;

	InitResultRelInfo(rinfo, rel, 0, NULL, 0);
	ExecOpenIndices(rinfo, false);
	has_indexes = rinfo->ri_NumIndices > 0;
	for (b = 0; b < CW_BATCH; b++)
		slots[b] = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);

	for (i = 0; i < rows->n; i += CW_BATCH)
	{
		int			n = (int) Min(CW_BATCH, rows->n - i);
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		for (b = 0; b < n; b++)
		{
			int64		row = order != NULL ? order[i + b].index : i + b;
			const int16 *codes = rows->codes + row * rows->width;
			TupleTableSlot *slot = slots[b];
			int			a = 0;
			int			k;

			ExecClearTuple(slot);
			for (k = 0; k < desc->natts; k++)
			{
				slot->tts_isnull[k] = TupleDescAttr(desc, k)->attisdropped;
				if (slot->tts_isnull[k])
					continue;
				slot->tts_values[k] = a == 0 ? Int64GetDatum(rows->ids[row])
					: Int16GetDatum(codes[a - 1]);
				a++;
			}
			ExecStoreVirtualTuple(slot);
			if (has_constraints)
				ExecConstraints(rinfo, slot, estate);
		}
		old = MemoryContextSwitchTo(batch_cxt);
		table_multi_insert(rel, slots, n, cid, options, bistate);
		if (has_indexes)
		{
			for (b = 0; b < n; b++)
			{
				List	   *recheck = ExecInsertIndexTuples(rinfo, slots[b], estate, false, false,
															NULL, NIL);

				list_free(recheck);
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);
		ResetPerTupleExprContext(estate);
	}

	for (b = 0; b < CW_BATCH; b++)
		ExecDropSingleTupleTableSlot(slots[b]);
	FreeBulkInsertState(bistate);
	table_finish_bulk_insert(rel, options);
	ExecCloseIndices(rinfo);
	FreeExecutorState(estate);
	MemoryContextDelete(batch_cxt);
}

PG_FUNCTION_INFO_V1(skyclass_score_chunk_into);
Datum
skyclass_score_chunk_into(PG_FUNCTION_ARGS)
{
	static const char *const arg_names[] = {
		"model_version", "features", "first_object_id", "last_object_id", "target"
	};
	int64		version_id;
	Oid			features;
	int64		first;
	int64		last;
	Oid			target;
	VersionEntry *v;
	Relation	rel;
	char	   *task;
	char	   *features_name;
	char	   *query;
	SPIPlanPtr	plan;
	SPIExecuteOptions options;
	ParamListInfo params;
	ChunkReceiver receiver;
	ChunkRows	rows;
	ErrorContextCallback errcb;
	IdIndex    *order = NULL;
	int			ret;
	int			i;

	for (i = 0; i < 5; i++)
	{
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be NULL", arg_names[i])));
	}
	version_id = PG_GETARG_INT64(0);
	features = PG_GETARG_OID(1);
	first = PG_GETARG_INT64(2);
	last = PG_GETARG_INT64(3);
	target = PG_GETARG_OID(4);
	/*
	 * The version first, with the caller's privileges (a role that may not
	 * read the model learns nothing about the tables); raw-score versions
	 * give no classes.
	 */
	v = version_for_call(fcinfo, version_id);
	if (v->transform == SC_TRANSFORM_RAW_SCORE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model version " INT64_FORMAT " gives raw scores, not class "
						"probabilities", version_id)));
	if (first > last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("first_object_id " INT64_FORMAT " is greater than last_object_id "
						INT64_FORMAT, first, last)));
	if (get_rel_name(features) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("features: relation with OID %u does not exist", features)));
	if (get_rel_name(target) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("target: relation with OID %u does not exist", target)));
	if (features == target)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("features and target are the same relation")));
	features_name = qualified_name(features);
	require_column(features, "object_id", INT8OID, "feature table");
	require_column(features, "x", FLOAT4ARRAYOID, "feature table");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	task = version_task(version_id);
	if (strcmp(task, "classification") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("model version " INT64_FORMAT " is a %s model; skyclass.score_chunk_into "
						"writes classification predictions only", version_id, task),
				 errhint("skyclass.score_chunk writes its chunks with SQL "
						 "(skyclass.scoring_chunk_query).")));

	rel = table_open(target, RowExclusiveLock);
	check_target(rel, v->n_classes);
	ensure_library(v);

	memset(&rows, 0, sizeof(rows));
	rows.width = 1 + v->n_classes;
	rows.sorted = true;
	rows.proba = palloc(sizeof(float4) * v->n_classes);
	rows.cxt = CurrentMemoryContext;
	rows.max_rows = Max((int64) maintenance_work_mem * 1024 /
						(int64) (sizeof(int64) + sizeof(IdIndex) + sizeof(int16) * rows.width),
						1024);

	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = chunk_receive;
	receiver.pub.rStartup = chunk_startup;
	receiver.pub.rShutdown = chunk_shutdown;
	receiver.pub.rDestroy = chunk_destroy;
	receiver.pub.mydest = DestNone;
	receiver.v = v;
	receiver.rows = &rows;
	receiver.features_name = features_name;
	receiver.row_cxt = AllocSetContextCreate(CurrentMemoryContext, "skyclass chunk rows",
											 ALLOCSET_DEFAULT_SIZES);

	/*
	 * No ORDER BY: the planner reads a range of a table in sky order best
	 * with a bitmap scan (page order); the rows are put in object_id order
	 * below, a sort of 16-byte keys, and only when they are not in it.
	 */
	query = psprintf("SELECT f.object_id, f.x FROM %s AS f"
					 " WHERE f.object_id OPERATOR(pg_catalog.>=) $1"
					 "   AND f.object_id OPERATOR(pg_catalog.<=) $2", features_name);
	{
		Oid			argtypes[2] = {INT8OID, INT8OID};

		plan = SPI_prepare(query, 2, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	}
	params = makeParamList(2);
	params->params[0].value = Int64GetDatum(first);
	params->params[0].isnull = false;
	params->params[0].ptype = INT8OID;
	params->params[0].pflags = PARAM_FLAG_CONST;
	params->params[1].value = Int64GetDatum(last);
	params->params[1].isnull = false;
	params->params[1].ptype = INT8OID;
	params->params[1].pflags = PARAM_FLAG_CONST;
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = (DestReceiver *) &receiver;

	errcb.callback = chunk_error_context;
	errcb.arg = &receiver;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	ret = SPI_execute_plan_extended(plan, &options);
	error_context_stack = errcb.previous;
	/* SPI reports a SELECT into a DestReceiver of its own as SPI_OK_UTILITY. */
	if (ret != SPI_OK_SELECT && ret != SPI_OK_UTILITY)
		elog(ERROR, "reading the features failed: %s", SPI_result_code_string(ret));
	MemoryContextDelete(receiver.row_cxt);

	if (!rows.sorted)
	{
		int64		k;

		order = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(IdIndex) * Max(rows.n, 1));
		for (k = 0; k < rows.n; k++)
		{
			order[k].id = rows.ids[k];
			order[k].index = k;
		}
		qsort(order, rows.n, sizeof(IdIndex), id_index_cmp);
	}
	write_rows(rel, &rows, order);
	table_close(rel, NoLock);
	SPI_finish();
	PG_RETURN_INT64(rows.n);
}
