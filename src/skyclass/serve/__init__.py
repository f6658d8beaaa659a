"""The portal service: ``skyclass serve``.

A read-only ASGI application (Starlette, run by uvicorn) over the published views:
IVOA Simple Cone Search (:mod:`.scs`), a JSON API with an OpenAPI description
(:mod:`.api`), HTML object pages and model cards (:mod:`.page`), and IVOA TAP
1.1 (:mod:`.tap`, mounted at /tap). Every
request runs fixed SQL with bound parameters on a pool of connections that log
in as ``skyclass_portal``, a member of ``skyclass_reader`` that can read the
published views and catalogs and nothing else (:mod:`.pool` refuses to start
with a role that can write). Nothing here imports the training or scoring code.
"""
