"""The XML documents of the TAP service: VOSI capabilities, availability, tables; UWS jobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from skyclass.serve.tap.jobs import Job

XSI = "http://www.w3.org/2001/XMLSchema-instance"
UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
GEOMETRY = ("POINT", "CIRCLE", "CONTAINS", "DISTANCE")
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _t(value: object) -> str:
    return escape(str(value))


def _a(value: object) -> str:
    return quoteattr(str(value))


def _features(kind: str, forms: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f"<feature><form>{_t(form)}</form><description>{_t(text)}</description></feature>"
        for form, text in forms
    )
    return (
        f'<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#{kind}">{items}</languageFeatures>'
    )


def capabilities(base_url: str, max_rows: int, timeout: float, retention: int) -> str:
    """VOSI capabilities: TAP 1.1 (``tr:TableAccess``) and the three VOSI endpoints."""
    geometry = _features(
        "features-adqlgeo",
        [
            ("POINT", "ICRS positions in degrees"),
            ("CIRCLE", "a cone; radius in degrees (at most 10)"),
            ("CONTAINS", "CONTAINS(POINT, CIRCLE) = 1, run as q3c_radial_query / q3c_join"),
            ("DISTANCE", "angular distance in degrees, run as q3c_dist"),
        ],
    )
    string = _features(
        "features-adql-string",
        [("LOWER(x)", "lower case"), ("UPPER(x)", "upper case"), ("ILIKE", "case-insensitive")],
    )
    offset = _features("features-adql-offset", [("OFFSET", "skip rows")])
    sets = _features(
        "features-adql-sets",
        [("UNION", "set union"), ("EXCEPT", "set difference"), ("INTERSECT", "intersection")],
    )
    types = _features("features-adql-type", [("CAST", "CAST to a numeric or string type")])
    vosi = "".join(
        f'<capability standardID="ivo://ivoa.net/std/VOSI#{what}">'
        f'<interface xsi:type="vs:ParamHTTP"><accessURL use="full">{_t(base_url)}/{what}'
        f"</accessURL></interface></capability>"
        for what in ("capabilities", "availability", "tables")
    )
    vosi += (
        '<capability standardID="ivo://ivoa.net/std/DALI#examples">'
        '<interface xsi:type="vr:WebBrowser">'
        f'<accessURL use="full">{_t(base_url)}/examples</accessURL></interface></capability>'
    )
    return (
        XML_HEAD + '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"'
        f' xmlns:xsi="{XSI}" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"'
        ' xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0"'
        ' xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0">'
        '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        '<interface xsi:type="vs:ParamHTTP" role="std" version="1.1">'
        f'<accessURL use="base">{_t(base_url)}</accessURL></interface>'
        "<language><name>ADQL</name>"
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>'
        "<description>ADQL translated to PostgreSQL; geometry through Q3C (no pg_sphere). "
        "Refused: BOX, POLYGON, REGION, INTERSECTS, AREA, CENTROID, COORD1/2, COORDSYS, "
        "WITH, IN_UNIT, UPLOAD.</description>"
        f"{geometry}{string}{offset}{sets}{types}</language>"
        '<outputFormat ivo-id="ivo://ivoa.net/std/TAPRegExt#output-votable-td">'
        "<mime>application/x-votable+xml</mime><alias>votable</alias></outputFormat>"
        "<outputFormat><mime>text/csv</mime><alias>csv</alias></outputFormat>"
        "<outputFormat><mime>application/json</mime><alias>json</alias></outputFormat>"
        f"<retentionPeriod><default>{retention}</default><hard>{retention}</hard>"
        "</retentionPeriod>"
        f"<executionDuration><default>{round(timeout)}</default><hard>{round(timeout)}</hard>"
        "</executionDuration>"
        f'<outputLimit><default unit="row">{max_rows}</default>'
        f'<hard unit="row">{max_rows}</hard></outputLimit>'
        f"</capability>{vosi}</vosi:capabilities>\n"
    )


EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "cone",
        "A cone search",
        "The objects of a catalog within 0.5 degrees of a position, nearest first "
        "(CONTAINS runs as q3c_radial_query on the catalog's Q3C index).",
        "SELECT TOP 100 object_id, ra, dec, "
        "DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', {ra}, {dec})) AS dist "
        "FROM {table} WHERE CONTAINS(POINT('ICRS', ra, dec), "
        "CIRCLE('ICRS', {ra}, {dec}, 0.5)) = 1 ORDER BY dist",
    ),
    (
        "classes",
        "Classes of a catalog",
        "How many objects of each class the deployed models give, with the mean probability.",
        'SELECT deployment, "catalog", top_label, COUNT(*) AS n, '
        "AVG(top_probability) AS mean_probability FROM skyclass.current_classification "
        'GROUP BY deployment, "catalog", top_label ORDER BY deployment, "catalog", top_label',
    ),
    (
        "columns",
        "Columns with units and UCDs",
        "The columns of the published tables with their units, UCDs and descriptions.",
        "SELECT table_name, column_name, datatype, unit, ucd, description "
        "FROM TAP_SCHEMA.columns ORDER BY table_name, column_index",
    ),
)


def examples(catalog: str | None, ra: float, dec: float) -> str:
    """DALI examples (XHTML with RDFa): a cone on ``catalog``, classes, columns."""
    items = []
    for key, name, text, query in EXAMPLES:
        if "{table}" in query:
            if catalog is None:
                continue
            query = query.format(table=catalog, ra=f"{ra:.4f}", dec=f"{dec:.4f}")
        items.append(
            f'<div typeof="example" id="{key}" resource="#{key}">'
            f'<h2 property="name">{_t(name)}</h2><p>{_t(text)}</p>'
            f'<pre class="dali-example" property="query">{_t(query)}</pre></div>'
        )
    return (
        XML_HEAD + '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>skyclass TAP examples</title></head>"
        '<body vocab="ivo://ivoa.net/std/DALI#examples">'
        "<h1>skyclass TAP examples</h1>" + "".join(items) + "</body></html>\n"
    )


def availability(available: bool, note: str) -> str:
    """VOSI availability."""
    return (
        XML_HEAD + '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        f"<vosi:available>{'true' if available else 'false'}</vosi:available>"
        f"<vosi:note>{_t(note)}</vosi:note></vosi:availability>\n"
    )


def tableset(
    tables: Sequence[Sequence[Any]],
    columns: Sequence[Sequence[Any]],
    keys: Sequence[Sequence[Any]],
) -> str:
    """VODataService tableset of the TAP_SCHEMA rows (schemas, tables, columns, keys)."""
    by_table: dict[str, list[Sequence[Any]]] = {}
    for column in columns:
        by_table.setdefault(str(column[0]), []).append(column)
    keys_from: dict[str, list[Sequence[Any]]] = {}
    for key in keys:
        keys_from.setdefault(str(key[1]), []).append(key)
    out = [
        XML_HEAD,
        '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0"',
        f' xmlns:xsi="{XSI}" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1">',
    ]
    schema = None
    for schema_name, table_name, table_type, description, schema_description in tables:
        if schema_name != schema:
            if schema is not None:
                out.append("</schema>")
            out.append(f"<schema><name>{_t(schema_name)}</name>")
            if schema_description:
                out.append(f"<description>{_t(schema_description)}</description>")
            schema = schema_name
        out.append(f"<table type={_a(table_type)}><name>{_t(table_name)}</name>")
        if description:
            out.append(f"<description>{_t(description)}</description>")
        for column in by_table.get(str(table_name), []):
            out.append(_column(column))
        for key in keys_from.get(str(table_name), []):
            pairs = "".join(
                f"<fkColumn><fromColumn>{_t(f)}</fromColumn>"
                f"<targetColumn>{_t(t)}</targetColumn></fkColumn>"
                for f, t in zip(key[4], key[5], strict=True)
            )
            text = f"<description>{_t(key[3])}</description>" if key[3] else ""
            out.append(
                f"<foreignKey><targetTable>{_t(key[2])}</targetTable>{pairs}{text}</foreignKey>"
            )
        out.append("</table>")
    if schema is not None:
        out.append("</schema>")
    out.append("</vosi:tableset>\n")
    return "".join(out)


def _column(row: Sequence[Any]) -> str:
    (
        _,
        name,
        description,
        unit,
        ucd,
        utype,
        xtype,
        datatype,
        arraysize,
        principal,
        indexed,
        std,
    ) = row
    parts = [f'<column std="{"true" if std else "false"}"><name>{_t(name)}</name>']
    if description:
        parts.append(f"<description>{_t(description)}</description>")
    if unit:
        parts.append(f"<unit>{_t(unit)}</unit>")
    if ucd:
        parts.append(f"<ucd>{_t(ucd)}</ucd>")
    if utype:
        parts.append(f"<utype>{_t(utype)}</utype>")
    size = f" arraysize={_a(arraysize)}" if arraysize else ""
    extended = f" extendedType={_a(xtype)}" if xtype else ""
    parts.append(f'<dataType xsi:type="vs:VOTableType"{size}{extended}>{_t(datatype)}</dataType>')
    if indexed:
        parts.append("<flag>indexed</flag>")
    if principal:
        parts.append("<flag>principal</flag>")
    parts.append("</column>")
    return "".join(parts)


def iso(value: dt.datetime | None) -> str:
    """UWS time text: ISO 8601 in UTC with a Z."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _timed(tag: str, value: dt.datetime | None) -> str:
    if value is None:
        return f'<uws:{tag} xsi:nil="true"/>'
    return f"<uws:{tag}>{iso(value)}</uws:{tag}>"


def parameters_xml(job: Job, *, root: bool) -> str:
    """``uws:parameters`` of a job (a whole document when ``root``)."""
    ns = f' xmlns:uws="{UWS}"' if root else ""
    items = "".join(
        f"<uws:parameter id={_a(k.lower())}>{_t(v)}</uws:parameter>"
        for k, v in sorted(job.parameters.items())
    )
    return (XML_HEAD if root else "") + f"<uws:parameters{ns}>{items}</uws:parameters>"


def results_xml(job: Job, job_url: str, *, root: bool) -> str:
    """``uws:results`` of a job: the one result when COMPLETED."""
    ns = f' xmlns:uws="{UWS}" xmlns:xlink="{XLINK}"' if root else ""
    item = ""
    if job.phase == "COMPLETED":
        mime = f" mime-type={_a(job.result_type)}" if job.result_type else ""
        item = (
            f'<uws:result id="result" xlink:type="simple" '
            f"xlink:href={_a(job_url + '/results/result')}{mime}/>"
        )
    return (XML_HEAD if root else "") + f"<uws:results{ns}>{item}</uws:results>"


def job_xml(job: Job, job_url: str) -> str:
    """A UWS 1.1 ``uws:job`` document."""
    run_id = f"<uws:runId>{_t(job.run_id)}</uws:runId>" if job.run_id else ""
    error = ""
    if job.phase == "ERROR":
        error = (
            '<uws:errorSummary type="fatal" hasDetail="true">'
            f"<uws:message>{_t(job.error_message or '')}</uws:message></uws:errorSummary>"
        )
    return (
        XML_HEAD + f'<uws:job xmlns:uws="{UWS}" xmlns:xlink="{XLINK}" xmlns:xsi="{XSI}"'
        ' version="1.1">'
        f"<uws:jobId>{_t(job.job_id)}</uws:jobId>{run_id}"
        '<uws:ownerId xsi:nil="true"/>'
        f"<uws:phase>{job.phase}</uws:phase>"
        '<uws:quote xsi:nil="true"/>'
        f"<uws:creationTime>{iso(job.created_at)}</uws:creationTime>"
        f"{_timed('startTime', job.started_at)}{_timed('endTime', job.finished_at)}"
        f"<uws:executionDuration>{job.execution_duration}</uws:executionDuration>"
        f"<uws:destruction>{iso(job.destruction)}</uws:destruction>"
        f"{parameters_xml(job, root=False)}{results_xml(job, job_url, root=False)}{error}"
        "</uws:job>\n"
    )


def jobs_xml(jobs: Sequence[Job], async_url: str) -> str:
    """A UWS 1.1 job list."""
    refs = "".join(
        f"<uws:jobref id={_a(job.job_id)} xlink:href={_a(async_url + '/' + job.job_id)}>"
        f"<uws:phase>{job.phase}</uws:phase>"
        + (f"<uws:runId>{_t(job.run_id)}</uws:runId>" if job.run_id else "")
        + f"<uws:creationTime>{iso(job.created_at)}</uws:creationTime></uws:jobref>"
        for job in jobs
    )
    return (
        XML_HEAD + f'<uws:jobs xmlns:uws="{UWS}" xmlns:xlink="{XLINK}" xmlns:xsi="{XSI}"'
        f' version="1.1">{refs}</uws:jobs>\n'
    )
