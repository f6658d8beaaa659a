/*
 * skyclass.c -- fmgr glue of the skyclass extension.
 *
 * skyclass.predict(model_version, features) looks the model version up with
 * SPI (skyclass.model_version LEFT JOIN its compiled skyclass.model_artifact,
 * tables of the skyclass migrations, revision 0003), keeps it in a per-backend
 * cache in TopMemoryContext and scores one row.  Before a library is
 * dlopen'ed (scoring_core.c) its row must have been registered by a role that
 * is a superuser, in a table a superuser owns (check_artifact_trust), its
 * bytes must hash to the registered sha256 (pg_cryptohash) and look like an
 * ELF shared object for this machine (sc_elf_check).  Model versions and artifacts are immutable (a trigger refuses
 * UPDATE), which is what makes a cache without invalidation correct; a
 * version that is not compiled yet is never cached, so compiling it later
 * takes effect in running sessions.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "funcapi.h"
#include "storage/fd.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "skyclass_internal.h"

PG_MODULE_MAGIC;


static MemoryContext cache_cxt = NULL;
static HTAB *version_cache = NULL;
static HTAB *artifact_cache = NULL;

/*
 * Everything but the library bytes.  LEFT JOIN: a version exists before it is
 * compiled, and "not compiled" is a different error from "does not exist".
 * Column numbers are the VQ_* constants below.
 */
static const char *const VERSION_QUERY =
"SELECT a.artifact_id, v.classes, v.calibration_kind, v.calibration_params,"
"       v.calibration_offsets, a.sha256, a.n_features, a.n_outputs, a.output_transform,"
"       v.calibration_eps, v.n_features, v.model_id, v.version"
"  FROM skyclass.model_version AS v"
"  LEFT JOIN skyclass.model_artifact AS a"
"    ON a.model_version_id OPERATOR(pg_catalog.=) v.model_version_id"
" WHERE v.model_version_id OPERATOR(pg_catalog.=) $1";

enum
{
	VQ_ARTIFACT_ID = 1,
	VQ_CLASSES,
	VQ_CALIBRATION_KIND,
	VQ_CALIBRATION_PARAMS,
	VQ_CALIBRATION_OFFSETS,
	VQ_SHA256,
	VQ_ARTIFACT_FEATURES,
	VQ_N_OUTPUTS,
	VQ_OUTPUT_TRANSFORM,
	VQ_CALIBRATION_EPS,
	VQ_VERSION_FEATURES,
	VQ_MODEL_ID,
	VQ_VERSION
};

/*
 * Only for the "not compiled" message: the model's name makes the hint a
 * command to copy.  Reading skyclass.model is a privilege of its own, so the
 * name is looked up only when the caller has it (see model_reference).
 */
static const char *const CAN_READ_MODEL_QUERY =
"SELECT pg_catalog.has_table_privilege(pg_catalog.to_regclass('skyclass.model'), 'SELECT')";
static const char *const MODEL_NAME_QUERY =
"SELECT m.name FROM skyclass.model AS m WHERE m.model_id OPERATOR(pg_catalog.=) $1";

/*
 * Who may make this backend load native code (docs/extension.md): the bytes
 * of an artifact are dlopen'ed only when the role that registered the row is
 * a superuser now, and skyclass.model_artifact is owned by a superuser (an
 * owner can disable the trigger that stamps registered_by; nobody else can,
 * and session_replication_role is superuser-only).  Schemas before revision
 * 0008 have no registered_by: created_by stands in for it there.
 */
static const char *const HAS_REGISTRAR_QUERY =
"SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute"
" WHERE attrelid OPERATOR(pg_catalog.=) 'skyclass.model_artifact'::pg_catalog.regclass"
"   AND attname OPERATOR(pg_catalog.=) 'registered_by' AND NOT attisdropped";
static const char *const TRUST_QUERY_FMT =
"SELECT a.%s::pg_catalog.text, coalesce(r.rolsuper, false), o.rolname::pg_catalog.text,"
"       o.rolsuper"
"  FROM skyclass.model_artifact AS a"
"  LEFT JOIN pg_catalog.pg_roles AS r"
"    ON r.rolname OPERATOR(pg_catalog.=) a.%s::pg_catalog.name"
" CROSS JOIN (SELECT ow.rolname, ow.rolsuper FROM pg_catalog.pg_class AS c"
"               JOIN pg_catalog.pg_roles AS ow ON ow.oid OPERATOR(pg_catalog.=) c.relowner"
"              WHERE c.oid OPERATOR(pg_catalog.=)"
"                    'skyclass.model_artifact'::pg_catalog.regclass) AS o"
" WHERE a.artifact_id OPERATOR(pg_catalog.=) $1";

static const char *const LIBRARY_QUERY =
"SELECT a.sha256, a.library, a.n_features, a.n_outputs"
"  FROM skyclass.model_artifact AS a"
" WHERE a.artifact_id OPERATOR(pg_catalog.=) $1";

static void
init_caches(void)
{
	HASHCTL		ctl;

	if (version_cache != NULL)
		return;
	cache_cxt = AllocSetContextCreate(TopMemoryContext, "skyclass model cache",
									  ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = PG_SHA256_DIGEST_LENGTH;
	ctl.entrysize = sizeof(ArtifactEntry);
	ctl.hcxt = cache_cxt;
	artifact_cache = hash_create("skyclass artifacts", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(VersionEntry);
	ctl.hcxt = cache_cxt;
	version_cache = hash_create("skyclass model versions", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static void
sha256_of(const uint8 *data, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, data, len) < 0 ||
		pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
	{
		const char *msg = pstrdup(pg_cryptohash_error(ctx));

		pg_cryptohash_free(ctx);
		elog(ERROR, "could not compute SHA-256: %s", msg);
	}
	pg_cryptohash_free(ctx);
}

static char *
hex_of(const uint8 *bytes, size_t len)
{
	char	   *out = palloc(len * 2 + 1);

	hex_encode((const char *) bytes, len, out);
	out[len * 2] = '\0';
	return out;
}

/*
 * A column the contract declares NOT NULL; checked anyway, because detoasting
 * a NULL datum would crash the backend if a table definition drifted.
 */
static Datum
column_required(HeapTuple tuple, TupleDesc desc, int col, const char *what, int64 version)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " has a NULL %s", version, what)));
	return d;
}

/*
 * A one-dimensional array of `elemtype` without NULLs from column `col`, or
 * an error naming it; the element type is checked because the data is
 * copied as raw float8/int4 values.
 */
static ArrayType *
column_array(HeapTuple tuple, TupleDesc desc, int col, Oid elemtype, const char *what,
			 int64 version)
{
	ArrayType  *arr = DatumGetArrayTypeP(column_required(tuple, desc, col, what, version));

	if (ARR_ELEMTYPE(arr) != elemtype || ARR_NDIM(arr) > 1 || array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT ": %s must be a one-dimensional %s array "
						"without NULLs",
						version, what, format_type_be(elemtype))));
	return arr;
}

static int
array_length_1d(ArrayType *arr)
{
	return ARR_NDIM(arr) == 0 ? 0 : ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
}

static int32
column_int32(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	return isnull ? -1 : DatumGetInt32(d);
}

/*
 * The hint of the "not compiled" error: `skyclass compile NAME:VERSION` when
 * the caller may read the model's name, else `skyclass compile ID` (the CLI
 * takes a bare model_version_id too).  Runs inside the caller's SPI
 * connection, just before the error is raised.
 */
static char *
model_reference(int64 id, int32 model_id, int32 version)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1];
	bool		isnull;
	Datum		d;
	int			ret;

	ret = SPI_execute(CAN_READ_MODEL_QUERY, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull && DatumGetBool(d))
		{
			args[0] = Int32GetDatum(model_id);
			ret = SPI_execute_with_args(MODEL_NAME_QUERY, 1, argtypes, args, NULL, true, 1);
			if (ret == SPI_OK_SELECT && SPI_processed == 1)
			{
				d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				if (!isnull)
					return psprintf("%s:%d", TextDatumGetCString(d), version);
			}
		}
	}
	return psprintf(INT64_FORMAT, id);
}

/*
 * Connect to SPI and read the row of model version `id` with the current
 * role's privileges (42501 from the executor when it may not read it; 42704
 * when there is none).  The row is left in SPI_tuptable; the caller must
 * SPI_finish().
 */
static void
read_version_row(int64 id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = Int64GetDatum(id);
	ret = SPI_execute_with_args(VERSION_QUERY, 1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model version " INT64_FORMAT " does not exist", id),
				 errhint("Registered model versions are listed in skyclass.model_version.")));
}

/*
 * Read model version `id` into a new VersionEntry.  Everything is allocated
 * in a context that hangs off the caller's context until the entry is
 * complete, so an error half way leaks nothing; a version without an
 * artifact raises 55000 and is not cached.
 */
static VersionEntry *
load_version(int64 id)
{
	VersionEntry tmp;
	VersionEntry *entry;
	MemoryContext vcxt;
	MemoryContext old;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		artifact_datum;
	int			transform;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	bytea	   *sha;
	char	   *kind;
	char		err[256];
	bool		found;

	memset(&tmp, 0, sizeof(tmp));
	tmp.model_version_id = id;
	vcxt = AllocSetContextCreate(CurrentMemoryContext, "skyclass model version",
								 ALLOCSET_SMALL_SIZES);
	tmp.cxt = vcxt;

	read_version_row(id);
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	artifact_datum = SPI_getbinval(tuple, desc, VQ_ARTIFACT_ID, &isnull);
	if (isnull)
	{
		int32		model_id = DatumGetInt32(column_required(tuple, desc, VQ_MODEL_ID,
															 "model_id", id));
		int32		version = DatumGetInt32(column_required(tuple, desc, VQ_VERSION,
															"version", id));
		char	   *ref = model_reference(id, model_id, version);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model version " INT64_FORMAT " is not compiled: run `skyclass compile %s`",
						id, ref),
				 errdetail("Version %d of model %d has no row in skyclass.model_artifact.",
						   version, model_id),
				 errhint("Compiling registers the model's native library; only a superuser "
						 "may do it.")));
	}
	tmp.artifact_id = DatumGetInt64(artifact_datum);
	tmp.n_features = column_int32(tuple, desc, VQ_ARTIFACT_FEATURES);
	tmp.version_features = column_int32(tuple, desc, VQ_VERSION_FEATURES);
	tmp.n_outputs = column_int32(tuple, desc, VQ_N_OUTPUTS);

	old = MemoryContextSwitchTo(vcxt);

	/* classes */
	arr = column_array(tuple, desc, VQ_CLASSES, TEXTOID, "classes", id);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	tmp.n_classes = n;
	tmp.classes = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
		tmp.classes[i] = TextDatumGetCString(elems[i]);

	/* calibration */
	kind = TextDatumGetCString(column_required(tuple, desc, VQ_CALIBRATION_KIND,
											   "calibration_kind", id));
	tmp.calibration_kind = kind;
	if (strcmp(kind, "none") == 0)
		tmp.cal.kind = SC_CALIBRATION_NONE;
	else if (strcmp(kind, "temperature") == 0)
		tmp.cal.kind = SC_CALIBRATION_TEMPERATURE;
	else if (strcmp(kind, "isotonic") == 0)
		tmp.cal.kind = SC_CALIBRATION_ISOTONIC;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " has unknown calibration kind \"%s\"",
						id, kind)));
	arr = column_array(tuple, desc, VQ_CALIBRATION_PARAMS, FLOAT8OID, "calibration_params", id);
	tmp.cal.n_params = array_length_1d(arr);
	tmp.cal.params = palloc(sizeof(double) * Max(tmp.cal.n_params, 1));
	if (tmp.cal.n_params > 0)
		memcpy((double *) tmp.cal.params, ARR_DATA_PTR(arr), sizeof(double) * tmp.cal.n_params);
	arr = column_array(tuple, desc, VQ_CALIBRATION_OFFSETS, INT4OID, "calibration_offsets", id);
	tmp.cal.n_offsets = array_length_1d(arr);
	tmp.cal.offsets = palloc(sizeof(int32) * Max(tmp.cal.n_offsets, 1));
	if (tmp.cal.n_offsets > 0)
		memcpy((int32 *) tmp.cal.offsets, ARR_DATA_PTR(arr), sizeof(int32) * tmp.cal.n_offsets);

	/* artifact columns */
	sha = DatumGetByteaPP(column_required(tuple, desc, VQ_SHA256, "artifact sha256", id));
	if (VARSIZE_ANY_EXHDR(sha) != PG_SHA256_DIGEST_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " has no valid sha256", tmp.artifact_id)));
	memcpy(tmp.sha256, VARDATA_ANY(sha), PG_SHA256_DIGEST_LENGTH);
	tmp.output_transform = TextDatumGetCString(column_required(tuple, desc, VQ_OUTPUT_TRANSFORM,
																"artifact output_transform", id));
	tmp.cal.eps = DatumGetFloat8(SPI_getbinval(tuple, desc, VQ_CALIBRATION_EPS, &isnull));
	if (isnull)
		tmp.cal.eps = SC_DEFAULT_EPS;

	MemoryContextSwitchTo(old);
	SPI_finish();

	/* Consistency of the version with its artifact. */
	transform = sc_transform_from_name(tmp.output_transform);
	if (transform < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model artifact " INT64_FORMAT " has unknown output_transform \"%s\"",
						tmp.artifact_id, tmp.output_transform),
				 errhint("Known transforms: identity, binary_expand, raw_score.")));
	tmp.transform = (sc_transform) transform;
	if (tmp.transform == SC_TRANSFORM_RAW_SCORE &&
		sc_raw_score_check(tmp.n_classes, tmp.n_outputs, &tmp.cal, err, sizeof(err)) != SC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " has an invalid raw_score layout: %s",
						id, err)));
	if (tmp.n_features < 1 || tmp.n_features > SC_MAX_FEATURES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model artifact " INT64_FORMAT " declares %d features",
						tmp.artifact_id, tmp.n_features)));
	if (tmp.version_features != tmp.n_features)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " declares %d features but its artifact "
						INT64_FORMAT " has %d",
						id, tmp.version_features, tmp.artifact_id, tmp.n_features)));
	if (tmp.transform != SC_TRANSFORM_RAW_SCORE &&
		sc_transform_outputs(tmp.transform, tmp.n_classes) != tmp.n_outputs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " names %d classes but its artifact has "
						"%d outputs with transform %s",
						id, tmp.n_classes, tmp.n_outputs, tmp.output_transform)));
	if (tmp.transform != SC_TRANSFORM_RAW_SCORE &&
		sc_calibration_check(&tmp.cal, tmp.n_classes, err, sizeof(err)) != SC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("model version " INT64_FORMAT " has an invalid %s calibration: %s",
						id, tmp.calibration_kind, err)));

	tmp.entries = MemoryContextAllocZero(vcxt, sizeof(sc_entry) * tmp.n_features);
	tmp.raw = MemoryContextAllocZero(vcxt, sizeof(double) * tmp.n_outputs);
	tmp.proba = MemoryContextAllocZero(vcxt, sizeof(double) * Max(tmp.n_classes, 1));

	/* Complete: move it into the cache. */
	tmp.checked_user = GetUserId();
	init_caches();
	entry = hash_search(version_cache, &id, HASH_ENTER, &found);
	Assert(!found);
	memcpy(entry, &tmp, sizeof(tmp));
	MemoryContextSetParent(vcxt, cache_cxt);
	return entry;
}

/*
 * Refuse (before any byte of it is fetched) an artifact whose registrar is not
 * a superuser, or that sits in a table a non-superuser owns.  Runs inside the
 * caller's SPI connection.
 */
static void
check_artifact_trust(int64 artifact_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	const char *column;
	char	   *query;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	char	   *registrar;
	bool		registrar_super;
	char	   *owner;
	bool		owner_super;
	int			ret;

	ret = SPI_execute(HAS_REGISTRAR_QUERY, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not inspect skyclass.model_artifact: %s", SPI_result_code_string(ret));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	column = (!isnull && DatumGetInt64(d) > 0) ? "registered_by" : "created_by";
	query = psprintf(TRUST_QUERY_FMT, column, column);
	args[0] = Int64GetDatum(artifact_id);
	ret = SPI_execute_with_args(query, 1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model artifact " INT64_FORMAT " does not exist", artifact_id)));
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	d = SPI_getbinval(tuple, desc, 1, &isnull);
	registrar = isnull ? NULL : TextDatumGetCString(d);
	registrar_super = DatumGetBool(SPI_getbinval(tuple, desc, 2, &isnull));
	owner = TextDatumGetCString(SPI_getbinval(tuple, desc, 3, &isnull));
	owner_super = DatumGetBool(SPI_getbinval(tuple, desc, 4, &isnull));

	if (!owner_super)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("model artifact " INT64_FORMAT " was not loaded: skyclass.model_artifact "
						"is owned by role \"%s\", which is not a superuser",
						artifact_id, owner),
				 errdetail("Loading a library runs its code in this server process; the owner of "
						   "the table could have forged who registered it."),
				 errhint("A superuser runs: ALTER TABLE skyclass.model_artifact OWNER TO "
						 "a superuser (docs/operations.md).")));
	if (registrar == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("model artifact " INT64_FORMAT " was not loaded: nothing records who "
						"registered it", artifact_id),
				 errdetail("It was registered before revision 0008, when non-superusers could "
						   "register native code."),
				 errhint("A superuser deletes the row and runs `skyclass compile` for the version "
						 "again (docs/operations.md).")));
	if (!registrar_super)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("model artifact " INT64_FORMAT " was not loaded: it was registered by "
						"role \"%s\", which is not a superuser", artifact_id, registrar),
				 errdetail("Loading a library runs its code in this server process; only "
						   "artifacts registered by superusers are loaded."),
				 errhint("A superuser deletes the row and runs `skyclass compile` for the version "
						 "again (docs/operations.md).")));
}

/*
 * Fetch, hash-check and dlopen the library of `v`'s artifact unless this
 * backend already has a library with the same sha256 (verified when it was
 * loaded, so the bytes of this row need not be fetched at all).
 */
void
ensure_library(VersionEntry *v)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	ArtifactEntry *a;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		sha_datum;
	Datum		library_datum;
	bytea	   *sha;
	bytea	   *library;
	uint8		computed[PG_SHA256_DIGEST_LENGTH];
	sc_library	lib;
	sc_status	status;
	char		err[512];
	char		name[64];
	int			ret;
	int32		row_features;
	int32		row_outputs;
	bool		found;

	if (v->artifact != NULL)
		return;
	init_caches();
	a = hash_search(artifact_cache, v->sha256, HASH_FIND, NULL);
	if (a != NULL)
	{
		/*
		 * Same bytes, but this version's row may declare another layout: the
		 * scratch buffers are sized from the row, so it must match exactly.
		 */
		if (a->lib.n_features != v->n_features || a->lib.n_outputs != v->n_outputs)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("model artifact " INT64_FORMAT " declares %d features and %d "
							"outputs, but its library has %d features and %d outputs",
							v->artifact_id, v->n_features, v->n_outputs,
							a->lib.n_features, a->lib.n_outputs)));
		v->artifact = a;
		return;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	check_artifact_trust(v->artifact_id);
	args[0] = Int64GetDatum(v->artifact_id);
	ret = SPI_execute_with_args(LIBRARY_QUERY, 1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model artifact " INT64_FORMAT " does not exist", v->artifact_id)));
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	sha_datum = SPI_getbinval(tuple, desc, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " has no sha256", v->artifact_id)));
	sha = DatumGetByteaPP(sha_datum);
	if (VARSIZE_ANY_EXHDR(sha) != PG_SHA256_DIGEST_LENGTH ||
		memcmp(VARDATA_ANY(sha), v->sha256, PG_SHA256_DIGEST_LENGTH) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " changed its sha256 while in use",
						v->artifact_id)));
	library_datum = SPI_getbinval(tuple, desc, 2, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " has no library", v->artifact_id)));
	library = DatumGetByteaPP(library_datum);
	row_features = column_int32(tuple, desc, 3);
	row_outputs = column_int32(tuple, desc, 4);

	/*
	 * Loading a library runs its constructors, so the bytes must be the ones
	 * the privileged role registered: hash them before anything maps them.
	 */
	sha256_of((const uint8 *) VARDATA_ANY(library), VARSIZE_ANY_EXHDR(library), computed);
	if (memcmp(computed, v->sha256, PG_SHA256_DIGEST_LENGTH) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " failed its sha256 check; it was not loaded",
						v->artifact_id),
				 errdetail("Registered sha256 %s, library bytes hash to %s.",
						   hex_of(v->sha256, PG_SHA256_DIGEST_LENGTH),
						   hex_of(computed, PG_SHA256_DIGEST_LENGTH)),
				 errhint("Register the artifact again from its Treelite checkpoint.")));

	/* The memfd is a file descriptor PostgreSQL's fd.c does not manage. */
	if (!AcquireExternalFD())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("too many model libraries are loaded in this session"),
				 errhint("Use fewer model versions per session, or raise max_files_per_process.")));
	snprintf(name, sizeof(name), "skyclass-artifact-" INT64_FORMAT, v->artifact_id);
	status = sc_library_load(VARDATA_ANY(library), VARSIZE_ANY_EXHDR(library), name,
							 &lib, err, sizeof(err));
	if (status != SC_OK)
	{
		ReleaseExternalFD();
		ereport(ERROR,
				(errcode(status == SC_ERR_IO ? ERRCODE_INSUFFICIENT_RESOURCES :
						 status == SC_ERR_FORMAT ? ERRCODE_DATA_CORRUPTED :
						 ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not load model artifact " INT64_FORMAT ": %s",
						v->artifact_id, err)));
	}
	if (lib.n_features != row_features || lib.n_outputs != row_outputs ||
		lib.n_features != v->n_features || lib.n_outputs != v->n_outputs)
	{
		int32		lib_features = lib.n_features;
		int32		lib_outputs = lib.n_outputs;

		sc_library_unload(&lib);
		ReleaseExternalFD();
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model artifact " INT64_FORMAT " declares %d features and %d outputs, "
						"but its library has %d features and %d outputs",
						v->artifact_id, row_features, row_outputs, lib_features, lib_outputs)));
	}
	SPI_finish();

	a = hash_search(artifact_cache, v->sha256, HASH_ENTER, &found);
	Assert(!found);
	a->artifact_id = v->artifact_id;
	a->lib = lib;
	v->artifact = a;
}

/*
 * A model loaded by one role stays in the session's cache; when another role
 * (SET ROLE, SECURITY DEFINER) asks for it, run the version's read again with
 * that role's privileges, so the cache never lends a model to a role that may
 * not read it (42501 from the executor, as on a first load).
 */
static void
check_version_access(int64 id)
{
	read_version_row(id);
	SPI_finish();
}

/*
 * The cached model version for this call site; flinfo->fn_extra remembers
 * the last one so a scan with a constant model version skips the hash.
 */
VersionEntry *
version_for_call(FunctionCallInfo fcinfo, int64 id)
{
	VersionEntry *v = (VersionEntry *) fcinfo->flinfo->fn_extra;
	Oid			user = GetUserId();

	if (v != NULL && v->model_version_id == id && v->checked_user == user)
		return v;
	init_caches();
	v = hash_search(version_cache, &id, HASH_FIND, NULL);
	if (v == NULL)
		v = load_version(id);
	else if (v->checked_user != user)
	{
		check_version_access(id);
		v->checked_user = user;
	}
	fcinfo->flinfo->fn_extra = v;
	return v;
}

/* Validate the features argument against the model's feature count. */
const float4 *
check_features(ArrayType *arr, int32 expected)
{
	int			n;

	if (ARR_ELEMTYPE(arr) != FLOAT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("features must be real[]")));
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("features must be a one-dimensional array, not %d-dimensional",
						ARR_NDIM(arr))));
	n = array_length_1d(arr);
	if (n != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected %d features, not %d", expected, n)));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("features must not contain NULL"),
				 errhint("Use 'NaN' for a missing value.")));
	return (const float4 *) ARR_DATA_PTR(arr);
}

/* Score one row: the raw outputs of the library end up in v->raw. */
static VersionEntry *
score_row_raw(FunctionCallInfo fcinfo)
{
	int64		id = PG_GETARG_INT64(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	VersionEntry *v = version_for_call(fcinfo, id);
	const float4 *x = check_features(arr, v->n_features);

	ensure_library(v);
	sc_fill_entries(x, v->n_features, v->entries);
	sc_predict_raw(&v->artifact->lib, v->entries, v->raw);
	return v;
}

/* Score one row: the calibrated probabilities end up in v->proba. */
static VersionEntry *
score_row(FunctionCallInfo fcinfo)
{
	VersionEntry *v = version_for_call(fcinfo, PG_GETARG_INT64(0));
	VersionEntry *scored;

	/* Checked before any library is loaded: a score is no probability. */
	if (v->transform == SC_TRANSFORM_RAW_SCORE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model version " INT64_FORMAT " gives raw scores, not class "
						"probabilities", v->model_version_id),
				 errhint("Use skyclass.predict_raw(model_version, features).")));
	scored = score_row_raw(fcinfo);
	sc_probabilities(scored->transform, scored->raw, &scored->cal, scored->proba,
					 scored->n_classes);
	return scored;
}

PG_FUNCTION_INFO_V1(skyclass_predict_raw);
Datum
skyclass_predict_raw(PG_FUNCTION_ARGS)
{
	VersionEntry *v = score_row_raw(fcinfo);
	Datum	   *elems = palloc(sizeof(Datum) * v->n_outputs);
	int			k;

	for (k = 0; k < v->n_outputs; k++)
		elems[k] = Float8GetDatum(v->raw[k]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, v->n_outputs, FLOAT8OID,
										  sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * A one-dimensional array argument of `elemtype` without NULLs, or 22023
 * naming the argument; *n gets its length.
 */
static const void *
vector_argument(ArrayType *arr, Oid elemtype, const char *what, int *n)
{
	if (ARR_ELEMTYPE(arr) != elemtype)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s must be %s", what, format_type_be(get_array_type(elemtype)))));
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array, not %d-dimensional",
						what, ARR_NDIM(arr))));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain NULL", what),
				 errhint("Use 'NaN' for a missing value.")));
	*n = array_length_1d(arr);
	return ARR_DATA_PTR(arr);
}

static void
same_length(int n, int expected, const char *what)
{
	if (n != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d values but features have %d", what, n, expected)));
}

PG_FUNCTION_INFO_V1(skyclass_score_percentile);
Datum
skyclass_score_percentile(PG_FUNCTION_ARGS)
{
	float8		x = PG_GETARG_FLOAT8(0);
	int			m;
	const double *ref = vector_argument(PG_GETARG_ARRAYTYPE_P(1), FLOAT8OID, "reference", &m);
	char		err[256];

	if (sc_reference_check(ref, m, err, sizeof(err)) != SC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid reference: %s", err)));
	PG_RETURN_FLOAT4((float4) sc_percentile(x, ref, m));
}

PG_FUNCTION_INFO_V1(skyclass_out_of_range);
Datum
skyclass_out_of_range(PG_FUNCTION_ARGS)
{
	int			n;
	int			n_low;
	int			n_high;
	const float4 *x = vector_argument(PG_GETARG_ARRAYTYPE_P(0), FLOAT4OID, "features", &n);
	const float4 *low = vector_argument(PG_GETARG_ARRAYTYPE_P(1), FLOAT4OID, "low", &n_low);
	const float4 *high = vector_argument(PG_GETARG_ARRAYTYPE_P(2), FLOAT4OID, "high", &n_high);
	Datum	   *elems;
	int			i;

	same_length(n_low, n, "low");
	same_length(n_high, n, "high");
	elems = palloc(sizeof(Datum) * Max(n, 1));
	/* NaN compares false either way: a missing value is never out of range. */
	for (i = 0; i < n; i++)
		elems[i] = BoolGetDatum(x[i] < low[i] || x[i] > high[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, BOOLOID, 1, true, TYPALIGN_CHAR));
}

PG_FUNCTION_INFO_V1(skyclass_fill_missing);
Datum
skyclass_fill_missing(PG_FUNCTION_ARGS)
{
	int			n;
	int			n_fill;
	const float4 *x = vector_argument(PG_GETARG_ARRAYTYPE_P(0), FLOAT4OID, "features", &n);
	const float4 *fill = vector_argument(PG_GETARG_ARRAYTYPE_P(1), FLOAT4OID, "fill", &n_fill);
	Datum	   *elems;
	int			i;

	same_length(n_fill, n, "fill");
	elems = palloc(sizeof(Datum) * Max(n, 1));
	for (i = 0; i < n; i++)
		elems[i] = Float4GetDatum(isnan(x[i]) ? fill[i] : x[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, n, FLOAT4OID, sizeof(float4), true,
										  TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(skyclass_predict);
Datum
skyclass_predict(PG_FUNCTION_ARGS)
{
	VersionEntry *v = score_row(fcinfo);
	Datum	   *elems = palloc(sizeof(Datum) * v->n_classes);
	int			k;

	for (k = 0; k < v->n_classes; k++)
		elems[k] = Float4GetDatum((float4) v->proba[k]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, v->n_classes, FLOAT4OID,
										  sizeof(float4), true, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(skyclass_predict_top_label);
Datum
skyclass_predict_top_label(PG_FUNCTION_ARGS)
{
	VersionEntry *v = score_row(fcinfo);

	PG_RETURN_TEXT_P(cstring_to_text(v->classes[sc_argmax(v->proba, v->n_classes)]));
}

PG_FUNCTION_INFO_V1(skyclass_predict_top_probability);
Datum
skyclass_predict_top_probability(PG_FUNCTION_ARGS)
{
	VersionEntry *v = score_row(fcinfo);

	PG_RETURN_FLOAT4((float4) v->proba[sc_argmax(v->proba, v->n_classes)]);
}

PG_FUNCTION_INFO_V1(skyclass_model_info);
Datum
skyclass_model_info(PG_FUNCTION_ARGS)
{
	VersionEntry *v = version_for_call(fcinfo, PG_GETARG_INT64(0));
	TupleDesc	desc;
	Datum		values[8];
	bool		nulls[8] = {false};
	Datum	   *class_datums;
	int			k;
	bool		loaded;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("skyclass.model_info must be called in a context that accepts a record")));
	desc = BlessTupleDesc(desc);
	if (desc->natts != 8)
		elog(ERROR, "skyclass.model_info: expected 8 output columns, not %d", desc->natts);

	class_datums = palloc(sizeof(Datum) * Max(v->n_classes, 1));
	for (k = 0; k < v->n_classes; k++)
		class_datums[k] = CStringGetTextDatum(v->classes[k]);
	loaded = v->artifact != NULL ||
		(artifact_cache != NULL &&
		 hash_search(artifact_cache, v->sha256, HASH_FIND, NULL) != NULL);

	values[0] = Int32GetDatum(v->n_features);
	values[1] = Int32GetDatum(v->n_classes);
	values[2] = PointerGetDatum(construct_array(class_datums, v->n_classes, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[3] = Int32GetDatum(v->n_outputs);
	values[4] = CStringGetTextDatum(v->output_transform);
	values[5] = CStringGetTextDatum(v->calibration_kind);
	values[6] = CStringGetTextDatum(hex_of(v->sha256, PG_SHA256_DIGEST_LENGTH));
	values[7] = BoolGetDatum(loaded);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
