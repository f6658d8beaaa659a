/*
 * skyclass_internal.h -- what the fmgr glue files of the extension share:
 * the per-backend cache entries of skyclass.c and the calls that fill them.
 * skyclass.c owns the caches and the trust checks (see its header comment);
 * chunk_writer.c scores whole chunks through the same entries, so a model
 * reaches native code only through ensure_library().
 */
#ifndef SKYCLASS_INTERNAL_H
#define SKYCLASS_INTERNAL_H

#include "postgres.h"

#include "common/sha2.h"
#include "fmgr.h"
#include "utils/array.h"

#include "scoring_core.h"

/*
 * One library loaded into this backend; never unloaded.  Keyed by the sha256
 * of its bytes: two model versions that compiled to identical bytes (each has
 * its own artifact row) share one loaded library.
 */
typedef struct ArtifactEntry
{
	uint8		sha256[PG_SHA256_DIGEST_LENGTH];	/* hash key */
	int64		artifact_id;	/* the row it was first loaded from */
	sc_library	lib;
} ArtifactEntry;

/* One model version as read from the tables, plus scratch buffers. */
typedef struct VersionEntry
{
	int64		model_version_id;	/* hash key */
	Oid			checked_user;	/* the role whose read of the version was last checked */
	int64		artifact_id;
	int32		version_features;	/* model_version.n_features */
	int32		n_features;
	int32		n_outputs;
	int32		n_classes;
	sc_transform transform;
	sc_calibration cal;
	char	   *output_transform;
	char	   *calibration_kind;
	char	  **classes;
	uint8		sha256[PG_SHA256_DIGEST_LENGTH];
	ArtifactEntry *artifact;	/* NULL until the library is loaded */
	sc_entry   *entries;		/* n_features */
	double	   *raw;			/* n_outputs */
	double	   *proba;			/* n_classes */
	MemoryContext cxt;			/* owns everything above */
} VersionEntry;

/*
 * The cached model version `id`, read with the current role's privileges
 * (42704 unknown, 55000 not compiled, 42501 not readable); remembered in
 * fcinfo->flinfo->fn_extra for the next call of the same call site.
 */
extern VersionEntry *version_for_call(FunctionCallInfo fcinfo, int64 id);

/*
 * Load v's library into this backend unless it is loaded: only an artifact
 * registered by a superuser in a superuser-owned table, whose bytes hash to
 * the registered sha256 and look like an ELF shared object for this machine.
 */
extern void ensure_library(VersionEntry *v);

/*
 * The float4 values of a features argument: real[], one-dimensional, without
 * NULL, with `expected` elements (42804 / 22023 / 22004 otherwise).
 */
extern const float4 *check_features(ArrayType *arr, int32 expected);

#endif							/* SKYCLASS_INTERNAL_H */
