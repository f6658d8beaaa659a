"""IVOA TAP 1.1 over the published set, with ADQL translated to PostgreSQL + Q3C.

:func:`create_tap_app` builds a Starlette application (``/sync``, ``/async``
through UWS 1.1 with the job list in ``skyclass.tap_job``, ``/capabilities``,
``/availability``, ``/tables``) to run alone or mount at ``/tap``;
:mod:`skyclass.serve.tap.adql` is the translation, :mod:`.results` the
VOTable/CSV/JSON writers. docs/tap.md describes the service.
"""

from skyclass.serve.tap.app import create_tap_app

__all__ = ["create_tap_app"]
